import os

import av
import numpy as np
import pytest

from data_pipelines.bad_videos import BadVideoError
from data_pipelines.video_decode import decode_frames


def test_seeking_reads_exactly_the_frames_a_full_decode_gives(video, video_tools):
  reference = video_tools.decode_all(video.path)
  assert len(reference) == video.num_frames
  rng = np.random.default_rng(video.video_id)
  for _ in range(10):
    indices = rng.integers(video.num_frames, size=(2, 4))
    np.testing.assert_array_equal(decode_frames(video.path, lambda n: indices), reference[indices])


def test_unlisted_frame_count_is_read_from_the_container(video):
  counts = []
  decode_frames(video.path, lambda n: counts.append(n) or [n - 1])
  assert counts == [video.num_frames]


def test_decoder_scales_the_short_side(videos):
  frames = decode_frames(videos[0].path, lambda n: [0, n - 1], short_side=24)
  assert frames.shape == (2, 24, 32, 3)
  assert frames.dtype == np.uint8


def test_long_gop_video_is_read_correctly(tmp_path, video_tools):
  path = video_tools.write_video(str(tmp_path / 'long_gop.mp4'), 'libx264', 60, gop=250)
  indices = np.array([3, 17, 30, 44, 58])
  np.testing.assert_array_equal(decode_frames(path, lambda n: indices),
                                video_tools.decode_all(path)[indices])


def write_frameless_video(path: str) -> str:
  """A valid container whose video stream has no frames (a recording that stopped before its first frame)."""
  with av.open(path, 'w') as container:
    stream = container.add_stream('mpeg4', rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 48, 'yuv420p'
    container.start_encoding()  # writes the header, which PyAV otherwise leaves to the first packet
  return path


def bad_files(tmp_path, write_video) -> dict:
  """Broken inputs by name: (path, listed frame count or None)."""
  good = write_video(str(tmp_path / 'good.mp4'), 'libx264', 30)
  data = open(good, 'rb').read()
  (tmp_path / 'empty.mp4').write_bytes(b'')
  (tmp_path / 'garbage.avi').write_bytes(os.urandom(5000))
  (tmp_path / 'truncated.mp4').write_bytes(data[:len(data) // 2])  # PyAV writes the index last
  mkv = open(write_video(str(tmp_path / 'full.mkv'), 'libx264', 50), 'rb').read()
  (tmp_path / 'truncated.mkv').write_bytes(mkv[:len(mkv) // 2])
  frameless = write_frameless_video(str(tmp_path / 'frameless.avi'))
  return {
      'missing': (str(tmp_path / 'missing.mp4'), None),
      'empty': (str(tmp_path / 'empty.mp4'), None),
      'undecodable': (str(tmp_path / 'garbage.avi'), None),
      'truncated mp4': (str(tmp_path / 'truncated.mp4'), None),
      'truncated mkv': (str(tmp_path / 'truncated.mkv'), None),
      'shorter than listed': (good, 45),
      'no frames, listed': (frameless, 16),
      'no frames, unlisted': (frameless, None),
  }


@pytest.mark.parametrize('kind, reason', [
    ('missing', 'file not found'),
    ('empty', 'file is empty'),
    ('undecodable', 'InvalidDataError'),
    ('truncated mp4', 'InvalidDataError'),
    ('truncated mkv', 'ends after'),
    ('shorter than listed', 'has 30 frames, the list says 45'),
    ('no frames, listed', 'the video stream holds no frames'),
    ('no frames, unlisted', 'container reports no frames'),
])
def test_bad_videos_raise_errors_naming_the_file(tmp_path, video_tools, kind, reason):
  path, num_frames = bad_files(tmp_path, video_tools.write_video)[kind]
  with pytest.raises(BadVideoError, match=reason) as error:
    decode_frames(path, lambda n: np.arange(0, n, 3), num_frames=num_frames)
  assert error.value.path == path


def test_slow_decode_times_out(videos):
  with pytest.raises(BadVideoError, match='timed out'):
    decode_frames(videos[0].path, lambda n: [n - 1], timeout_s=0)


def test_frames_are_the_written_ones(video, video_tools):
  """The decoded frames are the right frames: each is nearest the image written at its index."""
  frames = decode_frames(video.path, lambda n: np.arange(n)).astype(np.int32)
  written = np.stack([video_tools.frame_pixels(i) for i in range(len(frames))]).astype(np.int32)
  errors = np.abs(frames[:, None] - written[None]).mean(axis=(2, 3, 4))
  np.testing.assert_array_equal(errors.argmin(axis=1), np.arange(len(frames)))
  assert frames.shape[1:] == (video_tools.height, video_tools.width, 3)
