"""Tiny test videos in every supported container, and the same videos as frame folders and shards.

Frame i has a background level and a bar position that change fast with i, so any off-by-one in
frame indexing shows as a large pixel difference, far above JPEG or codec loss.
"""
import os
import types

import av
import numpy as np
import pytest
from PIL import Image

from data_pipelines.annotations import VideoRecord
from data_pipelines.pack import pack

WIDTH, HEIGHT = 64, 48
# (extension, codec, frame count): different lengths catch counts mixed up between videos.
CONTAINERS = [('mp4', 'libx264', 40), ('avi', 'mpeg4', 24), ('webm', 'libvpx-vp9', 33),
              ('mkv', 'libx264', 50), ('mov', 'libx264', 28)]


def frame_pixels(i: int) -> np.ndarray:
  image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
  image[..., 0] = (i * 23) % 256
  image[..., 1] = 128
  image[..., 2] = 255 - (i * 11) % 256
  image[:, (i * 5) % (WIDTH - 8):(i * 5) % (WIDTH - 8) + 8] = 255
  return image


def write_video(path: str, codec: str, num_frames: int, gop: int = 10) -> str:
  with av.open(path, 'w') as container:
    stream = container.add_stream(codec, rate=25)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, 'yuv420p'
    stream.codec_context.gop_size = gop
    for i in range(num_frames):
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame_pixels(i), format='rgb24')))
    container.mux(stream.encode())
  return path


def decode_all(path: str) -> np.ndarray:
  """Every frame, decoded front to back without seeking: the reference for seeking reads."""
  with av.open(path) as container:
    return np.stack([f.to_ndarray(format='rgb24') for f in container.decode(video=0)])


@pytest.fixture(scope='session')
def videos(tmp_path_factory) -> list[VideoRecord]:
  """One video per container, listed with its true frame count, label = position."""
  root = tmp_path_factory.mktemp('videos')
  return [
      VideoRecord(write_video(str(root / f'v{i}.{ext}'), codec, n), n, i, i)
      for i, (ext, codec, n) in enumerate(CONTAINERS)
  ]


@pytest.fixture(scope='session')
def frame_folders(videos, tmp_path_factory) -> list[VideoRecord]:
  """The videos extracted as the official repo expects: `img_00001.jpg`, ... (index_bias 1)."""
  root = tmp_path_factory.mktemp('frames')
  records = []
  for record in videos:
    folder = root / os.path.basename(record.path).replace('.', '_')
    folder.mkdir()
    for i, frame in enumerate(decode_all(record.path)):
      Image.fromarray(frame).save(folder / f'img_{i + 1:05d}.jpg', quality=95)
    records.append(VideoRecord(str(folder), record.num_frames, record.label, record.video_id))
  return records


@pytest.fixture(scope='session')
def packed_dir(videos, tmp_path_factory) -> str:
  out = str(tmp_path_factory.mktemp('packed'))
  pack(videos, out, short_side=HEIGHT, quality=95, workers=1)
  return out


@pytest.fixture(params=range(len(CONTAINERS)), ids=[ext for ext, _, _ in CONTAINERS])
def video(request, videos) -> VideoRecord:
  """Each container's video in turn."""
  return videos[request.param]


@pytest.fixture(scope='session')
def video_tools():
  """The helpers above, for test modules (importlib mode cannot import conftest by name)."""
  return types.SimpleNamespace(write_video=write_video, decode_all=decode_all, frame_pixels=frame_pixels,
                               width=WIDTH, height=HEIGHT)
