import dataclasses

import jax
import numpy as np
import pytest

from data_pipelines import pipeline
from data_pipelines.augment import EvalAugment, TrainAugment
from data_pipelines.bad_videos import BadVideoError, BadVideoLog, read_bad_videos
from data_pipelines.randaugment import RandAugment
from data_pipelines.pack import pack
from data_pipelines.sampling import IntervalSampler, SegmentSampler
from data_pipelines.sources import FrameFolderSource, PackedSource, VideoFileSource

SIZE = 16
TRAIN = TrainAugment(input_size=SIZE, randaugment=RandAugment(2, 9))
ONE_PROCESS = dict(process_index=0, process_count=1)


def collect(dataset):
  iterator = iter(dataset)
  try:
    return list(iterator)
  finally:
    iterator.close()  # shuts mp_prefetch workers down now, not at garbage collection


def test_all_sources_give_identical_batch_shapes(videos, frame_folders, packed_dir):
  sources = [VideoFileSource(videos), FrameFolderSource(frame_folders), PackedSource(packed_dir)]
  for source in sources:
    train = collect(pipeline.train_dataset(source, SegmentSampler(4), TRAIN, batch_size=2, seed=0,
                                           num_epochs=1, **ONE_PROCESS))
    assert len(train) == 2  # 5 videos, drop_remainder
    assert {k: (v.shape, v.dtype) for k, v in train[0].items()} == {
        'frames': ((2, 4, SIZE, SIZE, 3), np.uint8), 'label': ((2,), np.int32),
        'video_id': ((2,), np.int32)}
    evaluation = collect(pipeline.eval_dataset(source, SegmentSampler(4, num_clips=2),
                                               EvalAugment(SIZE, num_crops=3), batch_size=2, **ONE_PROCESS))
    assert {k: (v.shape, v.dtype) for k, v in evaluation[0].items()} == {
        'frames': ((2, 6, 4, SIZE, SIZE, 3), np.uint8), 'label': ((2,), np.int32),
        'video_id': ((2,), np.int32), 'mask': ((2,), np.bool_)}


def test_same_seed_same_epoch_with_one_and_two_workers(videos):
  def epoch(seed, workers):
    return collect(pipeline.train_dataset(VideoFileSource(videos), SegmentSampler(4), TRAIN, batch_size=2,
                                          seed=seed, num_epochs=2, workers=workers, **ONE_PROCESS))
  one, two = epoch(7, 1), epoch(7, 2)
  assert len(one) == len(two) == 5
  for a, b in zip(one, two):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  other = epoch(8, 0)
  assert not all(np.array_equal(a['frames'], b['frames']) for a, b in zip(one, other))
  # Each epoch is a permutation, and the second is shuffled differently from the first.
  ids = np.concatenate([b['video_id'] for b in one])
  assert sorted(ids[:5]) == sorted(ids[5:]) == list(range(5)) and list(ids[:5]) != list(ids[5:])


def test_process_shards_are_disjoint_and_complete(videos):
  source = VideoFileSource(videos[:4])
  shards = [
      np.concatenate([b['video_id'] for b in collect(pipeline.train_dataset(
          source, SegmentSampler(2), TRAIN, batch_size=1, seed=3, num_epochs=1, process_index=p,
          process_count=2))]) for p in range(2)
  ]
  assert len(shards[0]) == len(shards[1]) == 2
  assert sorted(np.concatenate(shards).tolist()) == [0, 1, 2, 3]


def test_processes_together_yield_the_single_process_batches(videos):
  """Global batch j from P processes = batch j of one process: same clips, same order, same augmentation."""
  source = VideoFileSource(videos[:4])

  def batches(process_index, process_count):
    ds = pipeline.train_dataset(source, SegmentSampler(2), TRAIN, batch_size=2 // process_count, seed=5,
                                num_epochs=2, process_index=process_index, process_count=process_count)
    return collect(ds)

  single, parts = batches(0, 1), [batches(p, 2) for p in range(2)]
  assert len(single) == len(parts[0]) == len(parts[1]) == 4
  for j, whole in enumerate(single):
    for key in ('frames', 'label', 'video_id'):
      np.testing.assert_array_equal(whole[key], np.concatenate([parts[0][j][key], parts[1][j][key]]))


def test_eval_covers_every_video_once_with_a_mask(videos):
  source = VideoFileSource(videos)  # 5 videos over 2 processes in batches of 2: 2 batches each
  seen = []
  for p in range(2):
    batches = collect(pipeline.eval_dataset(source, SegmentSampler(4), EvalAugment(SIZE), batch_size=2,
                                            process_index=p, process_count=2))
    assert len(batches) == 2
    for batch in batches:
      assert (batch['video_id'][~batch['mask']] == -1).all()
      seen += batch['video_id'][batch['mask']].tolist()
  assert sorted(seen) == list(range(5))


@pytest.fixture
def half_bad(videos, tmp_path):
  """The good videos interleaved with a missing, an empty and a too-short one."""
  (tmp_path / 'empty.mp4').write_bytes(b'')
  bad = [dataclasses.replace(videos[0], path=str(tmp_path / 'missing.mp4')),
         dataclasses.replace(videos[0], path=str(tmp_path / 'empty.mp4')),
         dataclasses.replace(videos[0], num_frames=videos[0].num_frames + 10)]
  records = [r for pair in zip(videos, bad) for r in pair] + videos[3:]
  return [dataclasses.replace(r, video_id=i) for i, r in enumerate(records)], {1, 3, 5}


def test_bad_videos_are_replaced_counted_and_written(half_bad, tmp_path):
  records, bad_ids = half_bad
  log = BadVideoLog(str(tmp_path / 'work'))
  batches = collect(pipeline.train_dataset(VideoFileSource(records), SegmentSampler(4), TRAIN,
                                           batch_size=2, seed=0, num_epochs=2, bad_videos=log, **ONE_PROCESS))
  ids = np.concatenate([b['video_id'] for b in batches])
  assert len(ids) == 16 and not bad_ids & set(ids.tolist())
  reported = read_bad_videos(log.workdir)
  assert set(reported) == {records[i].path for i in bad_ids}
  assert sum(map(len, reported.values())) >= 6  # every bad video twice: once an epoch at least
  assert reported[records[5].path][0] == 'has 40 frames, the list says 50'

  evaluation = collect(pipeline.eval_dataset(VideoFileSource(records), SegmentSampler(4), EvalAugment(SIZE),
                                             batch_size=4, bad_videos=log, **ONE_PROCESS))
  mask = np.concatenate([b['mask'] for b in evaluation])
  assert np.flatnonzero(mask).tolist() == [i for i in range(len(records)) if i not in bad_ids]


def test_fail_fast_raises(half_bad):
  records, _ = half_bad
  dataset = pipeline.train_dataset(VideoFileSource(records), SegmentSampler(4), TRAIN, batch_size=8,
                                   seed=0, bad_videos=BadVideoLog(fail_fast=True), **ONE_PROCESS)
  with pytest.raises(BadVideoError):
    collect(dataset)


def test_iterator_state_resumes_exactly(videos):
  dataset = pipeline.train_dataset(VideoFileSource(videos), SegmentSampler(4), TRAIN, batch_size=2, seed=1,
                                   **ONE_PROCESS)
  iterator = iter(dataset)
  next(iterator)
  state = iterator.get_state()
  expected = [next(iterator) for _ in range(3)]
  resumed = iter(dataset)
  resumed.set_state(state)
  for a, b in zip(expected, [next(resumed) for _ in range(3)]):
    np.testing.assert_array_equal(a['frames'], b['frames'])


def test_global_batch_shards_over_the_data_axis():
  mesh = jax.make_mesh((jax.device_count(),), ('data',))
  batch = {'frames': np.ones((jax.device_count() * 2, 4, SIZE, SIZE, 3), np.float32),
           'label': np.arange(jax.device_count() * 2, dtype=np.int32)}
  arrays = pipeline.global_batch(batch, mesh)
  assert arrays['frames'].shape == batch['frames'].shape
  assert arrays['label'].sharding.spec == jax.sharding.PartitionSpec('data')
  np.testing.assert_array_equal(np.asarray(arrays['label']), batch['label'])


# --- Multi-label sets ---------------------------------------------------------------------------------------------

CLASSES = 4
# Per video: its labels and intervals. Video 0's two intervals do not overlap, so an interval clip shows one class;
# videos 2 and 4 have no intervals (interval sampling falls back to the whole video); video 3 has no label.
MULTI = [((1, 2), ((1, 0.0, 0.25), (2, 0.5, 1.0))), ((0, 3), ((0, 0.0, 1.0), (3, 0.2, 0.4))), ((1, 3), ()),
         ((), ()), ((0, 1, 2, 3), ())]


def multilabel(records):
  return [dataclasses.replace(r, label=labels[0] if labels else -1, labels=labels, intervals=intervals)
          for r, (labels, intervals) in zip(records, MULTI)]


def hot(labels):
  return np.isin(np.arange(CLASSES), labels)


@pytest.mark.parametrize('mode', ['video', 'interval'])
def test_multilabel_train_batches_are_multi_hot(videos, mode):
  records = multilabel(videos)
  sampler = SegmentSampler(4) if mode == 'video' else IntervalSampler(SegmentSampler(4))
  batches = collect(pipeline.train_dataset(VideoFileSource(records), sampler, TRAIN, batch_size=5, seed=0,
                                           num_epochs=6, multilabel_classes=CLASSES, **ONE_PROCESS))
  assert {k: (v.shape, v.dtype) for k, v in batches[0].items()} == {
      'frames': ((5, 4, SIZE, SIZE, 3), np.uint8), 'label': ((5,), np.int32), 'video_id': ((5,), np.int32),
      'labels': ((5, CLASSES), np.bool_)}
  drawn = set()  # video 0's clips' classes
  for batch in batches:
    for video_id, label, labels in zip(batch['video_id'], batch['label'], batch['labels']):
      record = records[video_id]
      assert label == record.label
      if mode == 'interval' and video_id == 0:
        drawn.add(tuple(np.flatnonzero(labels).tolist()))
      else:  # video 1's interval 0 spans the video, so any of its clips overlaps its other interval too
        np.testing.assert_array_equal(labels, hot(record.labels))
  if mode == 'interval':
    assert drawn == {(1,), (2,)}  # a clip inside one of its two disjoint intervals, each drawn in 6 epochs


def test_multilabel_eval_batches_have_every_label_and_none_for_padding(videos):
  records = multilabel(videos)
  batches = collect(pipeline.eval_dataset(VideoFileSource(records), IntervalSampler(SegmentSampler(4)),
                                          EvalAugment(SIZE), batch_size=2, multilabel_classes=CLASSES,
                                          **ONE_PROCESS))
  assert len(batches) == 3 and batches[0]['labels'].shape == (2, CLASSES) and batches[0]['labels'].dtype == np.bool_
  labels, mask = (np.concatenate([b[key] for b in batches]) for key in ('labels', 'mask'))
  np.testing.assert_array_equal(labels, [hot(r.labels) for r in records] + [hot(())])
  assert mask.tolist() == [True] * 5 + [False]


def test_packed_sources_keep_multilabel_records(videos, tmp_path):
  records = multilabel(videos[:2])
  out = str(tmp_path / 'packed')
  assert pack(records, out, short_side=SIZE, workers=1) == records
  source = PackedSource(out)
  assert source.records == records
  batch, = collect(pipeline.eval_dataset(source, SegmentSampler(2), EvalAugment(SIZE), batch_size=2,
                                         multilabel_classes=CLASSES, **ONE_PROCESS))
  np.testing.assert_array_equal(batch['labels'], [hot(r.labels) for r in records])
