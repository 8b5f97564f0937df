"""`TrainAugment(per_frame=True)` (config `data.augment_order='official'`): the official augmentation's order and
draws, checked by their statistics against ours (one draw per clip, RandAugment after the crop)."""
import numpy as np

from data_pipelines.augment import TrainAugment
from data_pipelines.randaugment import RandAugment

SEEDS = range(30)


def still_clip(num_frames=4, height=48, width=64):
  """One random frame repeated (as separate arrays): any difference between output frames is the augmentation's."""
  frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
  return np.stack([frame] * num_frames)


def frames_differ(augment, seed):
  out = augment(still_clip(), np.random.default_rng(seed))
  return not all(np.array_equal(out[0], frame) for frame in out[1:])


def test_colour_jitter_factors_are_drawn_per_frame_in_official_mode_only():
  kwargs = dict(input_size=32, jitter_p=1.0, grayscale_p=0.0)
  assert not any(frames_differ(TrainAugment(**kwargs), s) for s in SEEDS)
  assert all(frames_differ(TrainAugment(**kwargs, per_frame=True), s) for s in SEEDS)


def test_whether_to_jitter_is_still_one_draw_per_clip():
  """GroupRandomColorJitter draws p once per clip: with p .5, a clip is either untouched or jittered throughout."""
  augment = TrainAugment(input_size=32, flip=False, jitter_p=0.5, grayscale_p=0.0, per_frame=True)
  plain = TrainAugment(input_size=32, flip=False, jitter_p=0.0, grayscale_p=0.0, per_frame=True)
  untouched = []
  for s in SEEDS:
    out, ref = augment(still_clip(), np.random.default_rng(s)), plain(still_clip(), np.random.default_rng(s))
    same = [np.array_equal(o, r) for o, r in zip(out, ref)]
    assert all(same) or not any(same)
    untouched.append(all(same))
  assert 0.2 < np.mean(untouched) < 0.8


def test_randaugment_ops_are_drawn_per_frame_in_official_mode_only():
  kwargs = dict(input_size=32, jitter_p=0.0, grayscale_p=0.0, randaugment=RandAugment(2, 9))
  assert not any(frames_differ(TrainAugment(**kwargs), s) for s in SEEDS)
  # Some op pairs leave a frame as it is (e.g. autocontrast of a full-range frame), so most clips, not all, differ.
  assert np.mean([frames_differ(TrainAugment(**kwargs, per_frame=True), s) for s in SEEDS]) > 0.8


class _Recorder:
  """A RandAugment that records the frame size each draw and op sees."""

  def __init__(self):
    self.draw_sizes, self.op_sizes = [], []

  def draw(self, rng, frame_size):
    self.draw_sizes.append(frame_size)
    return [lambda image: self.op_sizes.append(image.size) or image]


def test_randaugment_runs_on_the_full_frame_before_the_crop_in_official_mode():
  ours, official = _Recorder(), _Recorder()
  TrainAugment(input_size=32, randaugment=ours)(still_clip(), np.random.default_rng(0))
  TrainAugment(input_size=32, randaugment=official, per_frame=True)(still_clip(), np.random.default_rng(0))
  assert ours.draw_sizes == [(32, 32)] and set(ours.op_sizes) == {(32, 32)}
  assert official.draw_sizes == [(64, 48)] * 4 and official.op_sizes == [(64, 48)] * 4


def test_official_mode_is_a_function_of_the_generator():
  augment = TrainAugment(input_size=32, randaugment=RandAugment(2, 9), per_frame=True)
  frames = still_clip()
  a, b = (augment(frames, np.random.default_rng(3)) for _ in range(2))
  np.testing.assert_array_equal(a, b)
  assert a.shape == (4, 32, 32, 3) and a.dtype == np.uint8
