import dataclasses
import os

import numpy as np
import pytest

from data_pipelines import pack, sampling, sources
from data_pipelines.annotations import VideoRecord
from data_pipelines.bad_videos import BadVideoError
from data_pipelines.sources import FrameFolderSource, PackedSource, VideoFileSource

# Mean absolute difference (0..255 scale) allowed between a raw frame and its JPEG copy at quality 95.
# Neighbouring test frames differ by far more (> 20), so a shifted index cannot pass.
JPEG_TOLERANCE = 2.0


def all_frames(source, index):
  return source.read(index, lambda n: np.arange(n)).astype(np.int32)


def assert_same_frames(got, reference):
  assert got.shape == reference.shape
  errors = np.abs(got[:, None] - reference[None]).mean(axis=(2, 3, 4))  # every pair of frames
  np.testing.assert_array_equal(errors.argmin(axis=1), np.arange(len(got)))
  assert errors.diagonal().max() < JPEG_TOLERANCE


def test_packed_frames_match_raw_video_up_to_jpeg_loss(videos, packed_dir):
  raw, packed = VideoFileSource(videos), PackedSource(packed_dir)
  assert packed.records == videos
  for i in range(len(videos)):
    assert_same_frames(all_frames(packed, i), all_frames(raw, i))


def test_frame_folders_match_raw_video_with_index_bias(videos, frame_folders):
  raw = VideoFileSource(videos)
  folders = FrameFolderSource(frame_folders, image_tmpl='img_{:05d}.jpg', index_bias=1)
  for i in range(len(videos)):
    assert_same_frames(all_frames(folders, i), all_frames(raw, i))


def test_frame_folder_counts_files_when_the_list_has_no_count(frame_folders):
  record = dataclasses.replace(frame_folders[1], num_frames=None)
  counts = []
  FrameFolderSource([record]).read(0, lambda n: counts.append(n) or [0])
  assert counts == [frame_folders[1].num_frames]


def test_sources_scale_the_short_side(videos, frame_folders, packed_dir):
  for source in (VideoFileSource(videos, short_side=24), FrameFolderSource(frame_folders, short_side=24),
                 PackedSource(packed_dir, short_side=24)):
    assert source.read(0, lambda n: [[0, 1], [2, 3]]).shape == (2, 2, 24, 32, 3)


def test_broken_frame_folders_raise_bad_video_errors(frame_folders, tmp_path):
  folder = tmp_path / 'broken'
  folder.mkdir()
  (folder / 'img_00001.jpg').write_bytes(open(os.path.join(frame_folders[0].path, 'img_00001.jpg'), 'rb').read()[:200])
  source = FrameFolderSource([dataclasses.replace(frame_folders[0], path=str(folder), num_frames=3)])
  with pytest.raises(BadVideoError, match='undecodable frame') as error:
    source.read(0, lambda n: [0])
  assert error.value.path == str(folder)
  with pytest.raises(BadVideoError, match='frame file not found'):
    source.read(0, lambda n: [2])


def test_jpeg_sources_read_images_as_read_does(frame_folders, packed_dir):
  # Training takes `read_images` (PIL, no numpy round trip); it must be the frames `read` gives, and a
  # frame a short video repeats is decoded once and handed out as the same image.
  pick = lambda n: np.array([0, 2, 2, 5])
  for source in (FrameFolderSource(frame_folders), PackedSource(packed_dir)):
    images = source.read_images(1, pick)
    assert [image.mode for image in images] == ['RGB'] * 4 and images[1] is images[2]
    np.testing.assert_array_equal(np.stack([np.asarray(image) for image in images]), source.read(1, pick))


def test_pack_rejects_a_bad_list_line_with_file_and_line_before_writing_anything(tmp_path):
  labels, video_list = tmp_path / 'labels.csv', tmp_path / 'train.txt'
  labels.write_text('id,name\n0,run\n1,walk\n')
  video_list.write_text('a.mp4 10 0\nb.mp4 10 2\n')
  with pytest.raises(SystemExit, match=rf'^{video_list}:2: label 2 is not in the label CSV'):
    pack.main(['--list', str(video_list), '--labels', str(labels), '--out', str(tmp_path / 'out')])
  assert not (tmp_path / 'out').exists()


def test_a_cached_source_reads_the_pixels_decoding_does_and_decodes_each_video_once(videos, tmp_path, monkeypatch):
  plain = VideoFileSource(videos, short_side=24)
  cached = VideoFileSource(videos, short_side=24, cache=True)
  sampler = sampling.SegmentSampler(4, 2, num_clips=2)
  rng = np.random.default_rng(0)
  for index in [*range(len(videos))] * 2:
    picks = [sampler.train(videos[index].num_frames, rng), sampler.eval(videos[index].num_frames)]
    for pick in picks:
      want = plain.read(index, lambda n, p=pick: p)
      got = cached.read(index, lambda n, p=pick: p)
      np.testing.assert_array_equal(got, want)  # every container and codec of the fixture, seeks included
      got[:] = 0  # what a reader does to its frames does not reach the cache
  decodes = []
  monkeypatch.setattr(sources, 'decode_frames', lambda *a, **k: decodes.append(a) or pytest.fail('decoded again'))
  assert cached.read(0, lambda n: np.arange(n)).any()  # from memory
  assert not decodes
  # A video that cannot be read is not cached: it fails at every read.
  broken = tmp_path / 'broken.mp4'
  broken.write_bytes(b'not a video')
  bad = VideoFileSource([VideoRecord(str(broken), None, 0, 0)], cache=True)
  monkeypatch.undo()
  for _ in range(2):
    with pytest.raises(BadVideoError):
      bad.read(0, np.arange)


def test_cached_captioned_images_are_the_decoded_images(tmp_path):
  from PIL import Image
  rng = np.random.default_rng(0)
  records = []
  for i in range(2):
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / f'{i}.png')
    records.append(VideoRecord(str(tmp_path / f'{i}.png'), 1, i, i))
  plain, cached = sources.CaptionedImages(records, 16), sources.CaptionedImages(records, 16, cache=True)
  for index in (0, 1, 0, 1):
    got = cached.read(index, None)
    np.testing.assert_array_equal(got, plain.read(index, None))
    got[:] = 0  # the caller's copy
