"""Which frames of a video make a clip.

Indices are 0-based frame numbers; the frame-folder source adds its `index_bias` when it names files.
A sampler only sees the frame count, so one sampler serves every source, and the raw-video source can
call it after it has opened a container whose frame count it did not know before.

`SegmentSampler` is TSN segment sampling exactly as ActionCLIP's `Action_DATASETS` does it
(`_sample_indices` for training, `_get_val_indices` for evaluation), including the rules for videos
that have no more frames than the clip needs. `DenseSampler` takes `clip_len` frames `stride` apart.

Both draw randomness only from the generator they are given (grain's per-record rng), so an epoch is a
function of the seed. Evaluation returns `[num_clips, clip_frames]`: `num_clips` temporal views spread
evenly over the video, the first of which, for one view, is the official evaluation clip.

`IntervalSampler` (`data.multilabel_sampling='interval'`) is the one sampler that needs more than the frame count:
for a training clip it also takes the record's annotated intervals (the pipeline passes them when a sampler has
`train_interval`), samples inside one of them with the sampler it wraps, and says which classes the clip shows.
"""
import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class SegmentSampler:
  """`num_segments` equal segments, `seg_length` consecutive frames from each."""
  num_segments: int = 8
  seg_length: int = 1
  num_clips: int = 1

  def __post_init__(self):
    if min(self.num_segments, self.seg_length, self.num_clips) < 1:
      raise ValueError(f'num_segments, seg_length and num_clips must be positive: {self}')

  @property
  def clip_frames(self) -> int:
    return self.num_segments * self.seg_length

  def train(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """A random frame run inside each segment (`random_shift`)."""
    total = self.clip_frames
    if num_frames <= total:
      # Too short for one run per segment: every frame once, the rest drawn at random, in order.
      extra = rng.integers(num_frames, size=total - num_frames)
      return np.sort(np.concatenate([np.arange(num_frames), extra]))
    ticks = np.arange(self.num_segments + 1) * num_frames // self.num_segments
    starts = ticks[:-1].copy()
    room = ticks[1:] - ticks[:-1] - self.seg_length + 1
    shifted = room > 0
    starts[shifted] += rng.integers(room[shifted])
    return (starts[:, None] + np.arange(self.seg_length)).reshape(-1)

  def eval(self, num_frames: int) -> np.ndarray:
    """`[num_clips, clip_frames]`; clip v starts each run at fraction (v + .5) / num_clips of the slack."""
    total = self.clip_frames
    fractions = (np.arange(self.num_clips) + 0.5) / self.num_clips
    if self.num_segments == 1:
      # The official rule takes the middle frame; runs longer than one frame are clamped to the video.
      starts = (num_frames * fractions).astype(np.int64)
      return np.minimum(starts[:, None] + np.arange(self.seg_length), num_frames - 1)
    if num_frames <= total:
      # Short videos have no slack to spread views over: every view is the official clip.
      clip = np.arange(total) * num_frames // total
      return np.broadcast_to(clip, (self.num_clips, total)).copy()
    # Same operation order as the official `i * n / T + offset + j`, so float rounding agrees too.
    offsets = fractions * (num_frames / self.num_segments - self.seg_length)
    starts = np.arange(self.num_segments) * num_frames / self.num_segments
    runs = (starts[None, :, None] + offsets[:, None, None]) + np.arange(self.seg_length)
    return runs.reshape(self.num_clips, total).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class DenseSampler:
  """`clip_len` frames `stride` apart; clips longer than the video wrap around (mmaction's 'loop')."""
  clip_len: int = 8
  stride: int = 8
  num_clips: int = 1

  def __post_init__(self):
    if min(self.clip_len, self.stride, self.num_clips) < 1:
      raise ValueError(f'clip_len, stride and num_clips must be positive: {self}')

  @property
  def clip_frames(self) -> int:
    return self.clip_len

  def _clip(self, start, num_frames: int) -> np.ndarray:
    return (np.asarray(start)[..., None] + np.arange(self.clip_len) * self.stride) % num_frames

  def train(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    slack = max(num_frames - (self.clip_len - 1) * self.stride - 1, 0)
    return self._clip(rng.integers(slack + 1), num_frames)

  def eval(self, num_frames: int) -> np.ndarray:
    """`[num_clips, clip_len]`, the clips' starts centred in equal parts of the slack."""
    slack = max(num_frames - (self.clip_len - 1) * self.stride - 1, 0)
    interval = (slack + 1) / self.num_clips
    starts = (np.arange(self.num_clips) * interval + interval / 2).astype(np.int64)
    return self._clip(starts, num_frames)


def interval_frames(start: float, end: float, num_frames: int) -> tuple[int, int]:
  """Frames [first, stop) of an interval given as fractions of the video, clamped to it and at least one frame."""
  first = min(max(math.floor(start * num_frames), 0), num_frames - 1)
  return first, max(min(math.ceil(end * num_frames), num_frames), first + 1)


@dataclasses.dataclass(frozen=True)
class IntervalSampler:
  """Training clips inside one annotated interval, labelled with the classes active in them.

  `sampler` (a `SegmentSampler`, say) picks the frames inside the interval, and all of a video for evaluation and for
  records without intervals: Charades is evaluated on whole videos with all their labels (video-level mAP).
  """
  sampler: SegmentSampler | DenseSampler

  @property
  def clip_frames(self) -> int:
    return self.sampler.clip_frames

  @property
  def num_clips(self) -> int:
    return self.sampler.num_clips

  def train(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    return self.sampler.train(num_frames, rng)

  def eval(self, num_frames: int) -> np.ndarray:
    return self.sampler.eval(num_frames)

  def train_interval(self, num_frames: int, intervals, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, ...]]:
    """A clip inside one of `intervals` ((class, start, end), fractions of the video), drawn uniformly, and the
    classes, in increasing order, of every interval overlapping the span [first, last] of the clip's frames."""
    _, start, end = intervals[rng.integers(len(intervals))]
    first, stop = interval_frames(start, end, num_frames)
    indices = first + self.sampler.train(stop - first, rng)
    low, high = int(indices.min()), int(indices.max())
    active = set()
    for label, start, end in intervals:
      begin, finish = interval_frames(start, end, num_frames)
      if begin <= high and finish > low:
        active.add(label)
    return indices, tuple(sorted(active))
