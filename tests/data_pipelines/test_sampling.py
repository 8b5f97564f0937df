"""The samplers against ActionCLIP's `Action_DATASETS` rules, restated here loop by loop (0-based)."""
import itertools

import numpy as np
import pytest

from data_pipelines.sampling import DenseSampler, IntervalSampler, SegmentSampler, interval_frames

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


def test_interval_frames_cover_the_interval_and_at_least_one_frame():
  assert interval_frames(0.25, 0.5, 40) == (10, 20)
  assert interval_frames(0.26, 0.49, 40) == (10, 20)  # every frame the interval touches
  assert interval_frames(0.5, 0.5, 10) == (5, 6)  # an instant is its frame
  assert interval_frames(1.0, 1.0, 10) == (9, 10)  # an instant at the very end is the last frame
  assert interval_frames(0.0, 1.0, 7) == (0, 7)


INTERVALS = ((0, 0.0, 1.0), (1, 0.25, 0.5), (2, 0.75, 0.9))  # frames [0, 100), [25, 50), [75, 90) of 100


def test_interval_clips_stay_inside_one_interval_and_carry_the_classes_active_in_them():
  sampler = IntervalSampler(SegmentSampler(4))
  rng = np.random.default_rng(0)
  chosen = {0: 0, 1: 0, 2: 0}
  for _ in range(600):
    indices, labels = sampler.train_interval(100, INTERVALS, rng)
    assert indices.shape == (4,) and (np.diff(indices) >= 0).all()
    first, last = int(indices.min()), int(indices.max())
    # A whole-video clip has one frame in each quarter, so it never fits inside interval 1 or 2.
    inside = [k for k, (lo, hi) in ((1, (25, 50)), (2, (75, 90))) if lo <= first and last < hi]
    interval = inside[0] if inside else 0
    chosen[interval] += 1
    lo, hi = {0: (0, 100), 1: (25, 50), 2: (75, 90)}[interval]
    # The segment rule inside the interval: one frame from each of its 4 equal parts.
    for segment, allowed in enumerate(official_train_starts(hi - lo, 4, 1)):
      assert indices[segment] - lo in allowed
    expected = tuple(c for c, a, b in ((0, 0, 100), (1, 25, 50), (2, 75, 90)) if a <= last and b > first)
    assert labels == expected
    assert interval in labels
  # Uniform over the intervals: 600 draws, within 5 binomial standard deviations of 200 each.
  assert all(abs(count - 200) < 5 * np.sqrt(600 * 1 / 3 * 2 / 3) for count in chosen.values()), chosen


def test_interval_sampler_samples_whole_videos_otherwise():
  """Evaluation, and training on a record without intervals (the pipeline calls `train` then), see the video."""
  segment = SegmentSampler(8, num_clips=2)
  sampler = IntervalSampler(segment)
  assert (sampler.clip_frames, sampler.num_clips) == (8, 2)
  np.testing.assert_array_equal(sampler.eval(77), segment.eval(77))
  np.testing.assert_array_equal(sampler.train(77, np.random.default_rng(3)),
                                segment.train(77, np.random.default_rng(3)))
