"""The samplers against ActionCLIP's `Action_DATASETS` rules, restated here loop by loop (0-based)."""
import itertools

import numpy as np
import pytest

from data_pipelines.sampling import DenseSampler, SegmentSampler

CASES = [(n, t, l) for n, t, l in itertools.product(range(1, 90), (1, 2, 3, 8), (1, 2, 3))
         if not (t == 1 and l > 1)]  # the official single-segment rule returns one frame only


def official_val_indices(num_frames, num_segments, seg_length):
  total = num_segments * seg_length
  if num_segments == 1:
    return [num_frames // 2]
  if num_frames <= total:
    return [i * num_frames // total for i in range(total)]
  offset = (num_frames / num_segments - seg_length) / 2.0
  return [int(i * num_frames / num_segments + offset + j)
          for i in range(num_segments) for j in range(seg_length)]


def official_train_starts(num_frames, num_segments, seg_length):
  """Per segment, the run starts `_sample_indices` can pick (for videos longer than the clip)."""
  ticks = [i * num_frames // num_segments for i in range(num_segments + 1)]
  return [range(ticks[i], ticks[i + 1] - seg_length + 1) if ticks[i + 1] - ticks[i] >= seg_length
          else range(ticks[i], ticks[i] + 1) for i in range(num_segments)]


def test_eval_is_the_official_val_indices():
  for num_frames, num_segments, seg_length in CASES:
    got = SegmentSampler(num_segments, seg_length).eval(num_frames)
    assert got.tolist() == [official_val_indices(num_frames, num_segments, seg_length)], (
        num_frames, num_segments, seg_length)


@pytest.mark.parametrize('num_frames, num_segments, seg_length', CASES[::9])
def test_train_draws_only_and_all_official_choices(num_frames, num_segments, seg_length):
  sampler = SegmentSampler(num_segments, seg_length)
  rng = np.random.default_rng(0)
  draws = np.stack([sampler.train(num_frames, rng) for _ in range(300)])
  total = num_segments * seg_length
  assert draws.shape == (300, total)
  if num_frames <= total:
    # Every frame once plus random repeats, in order.
    assert (np.diff(draws, axis=1) >= 0).all()
    assert all(set(row) == set(range(num_frames)) for row in draws.tolist())
    return
  runs = draws.reshape(300, num_segments, seg_length)
  np.testing.assert_array_equal(runs - runs[..., :1], np.broadcast_to(np.arange(seg_length), runs.shape))
  for segment, allowed in enumerate(official_train_starts(num_frames, num_segments, seg_length)):
    seen = set(runs[:, segment, 0].tolist())
    assert seen <= set(allowed)
    if len(allowed) <= 10:  # 300 draws see every choice of a small segment
      assert seen == set(allowed)


def test_train_is_a_function_of_the_generator():
  sampler = SegmentSampler(8)
  a = [sampler.train(300, np.random.default_rng(5)) for _ in range(2)]
  np.testing.assert_array_equal(a[0], a[1])
  assert not np.array_equal(a[0], sampler.train(300, np.random.default_rng(6)))


def test_multi_clip_views_spread_over_each_segment():
  views = SegmentSampler(4, num_clips=3).eval(120)  # 30-frame segments: 29 frames of slack
  assert views.tolist() == [[4, 34, 64, 94], [14, 44, 74, 104], [24, 54, 84, 114]]
  # One view is the official clip, and short videos repeat it for every view.
  assert SegmentSampler(4, num_clips=1).eval(120).tolist() == [official_val_indices(120, 4, 1)]
  assert SegmentSampler(8, num_clips=2).eval(5).tolist() == [official_val_indices(5, 8, 1)] * 2


def test_dense_sampler():
  sampler = DenseSampler(clip_len=4, stride=3, num_clips=2)
  rng = np.random.default_rng(0)
  clips = np.stack([sampler.train(20, rng) for _ in range(200)])
  np.testing.assert_array_equal(clips - clips[:, :1], np.broadcast_to([0, 3, 6, 9], clips.shape))
  assert set(clips[:, 0].tolist()) == set(range(11))  # every start whose clip fits in 20 frames
  assert sampler.eval(20).tolist() == [[2, 5, 8, 11], [8, 11, 14, 17]]
  # A video shorter than the clip's span wraps around.
  assert sampler.train(5, rng).tolist() == [0, 3, 1, 4]
