"""Three random-access video sources with one interface.

Each source is a sequence of `VideoRecord`s (`len(src)`, `src[i]`) plus `src.read(i, pick)`, which
returns the uint8 frames `pick(num_frames)` of video `i` as `[*indices.shape, H, W, 3]`. Reading is
separate from indexing because the frame choice is random, and grain hands out the per-record rng only
inside `random_map`: the pipeline samples there and passes the sampler as `pick`. The JPEG sources also
have `read_images`, the same frames as a flat list of RGB PIL images, which the training augmentation
takes without a round trip through numpy.

- `VideoFileSource`: raw mp4/avi/webm/mkv/mov files, decoded by `video_decode` with keyframe seeking
  and scaled in the decoder to `short_side`.
- `FrameFolderSource`: folders of JPEG frames named `image_tmpl.format(index + index_bias)`, as the
  official repo reads them.
- `PackedSource`: a dataset written by `python -m data_pipelines.pack`: one array_record example per
  JPEG frame, read with `tfds` (no TensorFlow).

Every failure to deliver the frames is a `BadVideoError` naming the file; the pipeline decides whether
to replace the video or stop.
"""
import io
import json
import os

import numpy as np
from PIL import Image

from data_pipelines.annotations import VideoRecord
from data_pipelines.bad_videos import BadVideoError
from data_pipelines.video_decode import decode_frames, scaled_size


class _RecordList:
  """Sequence access to the records; subclasses add `read`."""

  def __init__(self, records: list[VideoRecord]):
    if not records:
      raise ValueError(f'{type(self).__name__} needs at least one video')
    self.records = records

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, index: int) -> VideoRecord:
    return self.records[index]


def _cached(cache: dict, index: int, load) -> np.ndarray:
  """`load()` the first time an index is read, its kept result after (a failed load is not kept: a bad video is
  reported at every read, as without a cache)."""
  if index not in cache:
    cache[index] = load()
  return cache[index]


class VideoFileSource(_RecordList):
  """Raw video files decoded with PyAV; `short_side=None` keeps the stored size.

  `cache=True` keeps every video's decoded frames in memory after its first read (each process its own copy): for
  datasets whose frames fit in memory and are read many times (the demo's 32-pixel world: 350 MB for 4,800 videos,
  6-7 reads each). A first read decodes the whole video, later reads only index it: the same pixels as decoding the
  picked frames (tested), at about a third of a clip's reading time there."""

  def __init__(self, records: list[VideoRecord], *, short_side: int | None = None,
               timeout_s: float = 60.0, threads: int = 1, cache: bool = False):
    super().__init__(records)
    self.short_side = short_side
    self.timeout_s = timeout_s
    self.threads = threads
    self.cache = {} if cache else None

  def read(self, index: int, pick) -> np.ndarray:
    if self.cache is None:
      return self._decode(index, pick)
    frames = _cached(self.cache, index, lambda: self._decode(index, np.arange))
    return frames[np.asarray(pick(len(frames)))]  # a copy: the cached frames stay as decoded

  def _decode(self, index: int, pick) -> np.ndarray:
    record = self.records[index]
    return decode_frames(record.path, pick, num_frames=record.num_frames, short_side=self.short_side,
                         timeout_s=self.timeout_s, threads=self.threads)


def decode_jpeg(data, short_side: int | None, name: str) -> Image.Image:
  """A JPEG (bytes or path) as an RGB PIL image, its short side scaled to `short_side` if given.

  `draft` lets libjpeg decode at 1/2, 1/4 or 1/8 scale when that is still at least the target size,
  which is most of the cost saved when frames are stored larger than they are used.
  """
  try:
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
      size = scaled_size(*image.size, short_side)
      image.draft('RGB', size)
      image.load()
      if image.mode != 'RGB':  # `convert` to the same mode would copy
        image = image.convert('RGB')
      return image if image.size == size else image.resize(size, Image.BILINEAR)
  except FileNotFoundError:
    raise BadVideoError(name, 'frame file not found') from None
  except (OSError, SyntaxError, ValueError) as e:  # what PIL raises for unreadable and truncated files
    raise BadVideoError(name, f'undecodable frame: {e}') from e


def _each_frame_once(indices: np.ndarray, load) -> list:
  """`load(i)` for every index, in order; a repeated index (short videos repeat frames) loads once."""
  loaded = {}
  for i in indices.reshape(-1).tolist():
    if i not in loaded:
      loaded[i] = load(i)
  return [loaded[i] for i in indices.reshape(-1).tolist()]


class _JpegFrames(_RecordList):
  """A source of JPEG frames: `read` as the sources' uint8 array, or `read_images` as PIL images.

  The augmentation works on PIL images, so the training pipeline takes `read_images` and skips the
  round trip through one numpy array per clip (an allocation and two copies of every frame).
  """

  def read_images(self, index: int, pick) -> list[Image.Image]:
    """The frames `pick(num_frames)` as RGB images, flattened in index order."""
    return _each_frame_once(*self._load(index, pick))

  def read(self, index: int, pick) -> np.ndarray:
    indices, load = self._load(index, pick)
    images = _each_frame_once(indices, load)
    out = np.empty((len(images), images[0].height, images[0].width, 3), np.uint8)
    for frame, image in zip(out, images):
      frame[...] = image
    return out.reshape(*indices.shape, *out.shape[1:])

  def _load(self, index: int, pick):
    """The indices `pick` chooses and a function loading frame i of video `index`."""
    raise NotImplementedError


class FrameFolderSource(_JpegFrames):
  """Folders of frame images; `num_frames=None` in a record counts the folder's files."""

  def __init__(self, records: list[VideoRecord], *, image_tmpl: str = 'img_{:05d}.jpg',
               index_bias: int = 1, short_side: int | None = None):
    super().__init__(records)
    self.image_tmpl = image_tmpl
    self.index_bias = index_bias
    self.short_side = short_side

  def _load(self, index: int, pick):
    record = self.records[index]
    num_frames = record.num_frames
    if num_frames is None:
      if not os.path.isdir(record.path):
        raise BadVideoError(record.path, 'frame folder not found')
      num_frames = len(os.listdir(record.path))
      if num_frames == 0:
        raise BadVideoError(record.path, 'frame folder is empty')
    return np.asarray(pick(num_frames)), lambda i: decode_jpeg(
        os.path.join(record.path, self.image_tmpl.format(i + self.index_bias)), self.short_side,
        record.path)


PACKED_SPLIT = 'videos'
PACKED_RECORDS = 'records.jsonl'


class PackedSource(_JpegFrames):
  """A packed dataset: `records.jsonl` lists its videos in example order, `tfds` reads the frames."""

  def __init__(self, data_dir: str, *, short_side: int | None = None):
    import tensorflow_datasets as tfds  # only this source needs it, and it is slow to import

    with open(os.path.join(data_dir, PACKED_RECORDS)) as f:
      records = [VideoRecord(**json.loads(line)) for line in f]
    super().__init__(records)
    self.short_side = short_side
    # Frames of video i are examples first[i] .. first[i] + num_frames - 1.
    self._first = np.cumsum([0] + [r.num_frames for r in records])
    self._examples = tfds.builder_from_directory(_builder_dir(data_dir)).as_data_source(PACKED_SPLIT)
    if len(self._examples) != self._first[-1]:
      raise ValueError(f'{data_dir}: {len(self._examples)} packed frames but records.jsonl lists '
                       f'{self._first[-1]}')

  def _load(self, index: int, pick):
    record, first = self.records[index], int(self._first[index])
    # One read per frame: on local disk that costs less CPU than `__getitems__`'s parallel reader.
    return np.asarray(pick(record.num_frames)), lambda i: decode_jpeg(
        self._examples[first + i]['jpeg'], self.short_side, record.path)


def _builder_dir(data_dir: str) -> str:
  """The `<name>/<version>` folder tfds wrote under `data_dir`; there must be exactly one."""
  found = [root for root, _, files in os.walk(data_dir) if 'dataset_info.json' in files]
  if len(found) != 1:
    raise ValueError(f'{data_dir}: expected one packed tfds dataset, found {found or "none"}')
  return found[0]


class CaptionedImages(_RecordList):
  """Captioned images as a video source of one-frame videos (the label is the caption id); `cache=True` keeps each
  decoded image in memory after its first read (as `VideoFileSource`)."""

  def __init__(self, records: list[VideoRecord], short_side: int | None, cache: bool = False):
    super().__init__(records)
    self.short_side = short_side
    self.cache = {} if cache else None

  def read(self, index: int, pick) -> np.ndarray:
    del pick  # an image is its only frame
    if self.cache is None:
      return self._decode(index)
    return _cached(self.cache, index, lambda: self._decode(index)).copy()  # the cached image stays as decoded

  def _decode(self, index: int) -> np.ndarray:
    path = self.records[index].path
    # decode_jpeg reads any format PIL does (the world's pictures are PNG); a bad file is a BadVideoError.
    return np.asarray(decode_jpeg(path, self.short_side, path))[None]
