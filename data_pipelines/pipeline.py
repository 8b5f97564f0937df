"""The grain input pipeline: a source, a sampler and an augmentation in, batches of clips out.

Training, in grain's tutorial order:

    MapDataset.range(len(source)).seed(seed).shuffle()   # a new order every epoch
      .repeat(num_epochs)                                # one global stream of clips
      .random_map(TrainClip)                             # sample, read, augment with the position's rng
      .batch(batch_size, drop_remainder=True)            # per-process batches ...
      [process_index::P]                                 # ... dealt round-robin to the JAX processes
      .to_iter_dataset().mp_prefetch(workers)

Everything is lazy, so a process only reads its own clips. Batching happens before the workers split the
work, so a worker builds whole batches, and the batches, their order and their augmentation depend on the
seed only: not on the number of workers, nor on the number of processes (the global batch is the same
clips in the same order with 1 or P processes).

Evaluation covers every video exactly once: indices are padded up to a multiple of P * batch_size, and
padding (and any bad video) comes with `mask=False`, so every process runs the same number of equal
batches and metrics count only real videos.

Batches are dicts of numpy arrays:

- training: `frames` uint8 `[B, T, S, S, 3]`, `label` int32 `[B]`, `video_id` int32 `[B]` (the record's
  line in the annotation file);
- evaluation: `frames` uint8 `[B, V, T, S, S, 3]` with `V = num_clips * num_crops` views of each
  video (clip-major), `label`, `video_id` (-1 for padding) and `mask` bool `[B]`. Average the V views'
  scores per video, then over masked-in videos.
- multi-label sets (`multilabel_classes=C`): both also have `labels` bool `[B, C]`, multi-hot: a training clip's
  classes (those active in it with `sampling.IntervalSampler`, else all of its record's), an evaluation video's
  every class, none for padding. `label` stays the record's first class, or -1.

Frames stay uint8 RGB, a quarter of the bytes of float32 to build, batch and copy to the devices; the
model step normalizes them on the device with `augment.normalize(frames, dtype)` inside its jitted
function.

The iterator (`iter(dataset)`) is checkpointable: `get_state()` / `set_state()`, or
`grain.checkpoint.CheckpointHandler` with Orbax. Bad videos are handled as `bad_videos` says.
"""
import dataclasses

import grain
import jax
import numpy as np

from data_pipelines.augment import EvalAugment, TrainAugment
from data_pipelines.bad_videos import BadVideoError, BadVideoLog


def _multi_hot(classes, num_classes: int) -> np.ndarray:
  hot = np.zeros(num_classes, np.bool_)
  if classes and not 0 <= max(classes) < num_classes:
    raise ValueError(f'class {max(classes)} is not among the {num_classes} classes the pipeline was built for')
  hot[list(classes)] = True
  return hot


@dataclasses.dataclass(frozen=True)
class TrainClip(grain.transforms.RandomMap):
  """Index to a training example; a bad video is reported and replaced by a random other one. `num_classes` > 0
  adds the multi-hot `labels` of a multi-label set."""
  source: object
  sampler: object
  augment: TrainAugment
  bad_videos: BadVideoLog
  max_tries: int = 10
  num_classes: int = 0

  def _pick(self, record, rng: np.random.Generator):
    """The frame choice for a clip of `record`, and a list that receives the clip's classes when the sampler picks
    inside one of the record's intervals (the frame count, hence the frames, is known only inside `read`)."""
    active = []
    if not (record.intervals and hasattr(self.sampler, 'train_interval')):
      return lambda num_frames: self.sampler.train(num_frames, rng), active

    def pick(num_frames):
      indices, classes = self.sampler.train_interval(num_frames, record.intervals, rng)
      active.append(classes)
      return indices
    return pick, active

  def random_map(self, index: int, rng: np.random.Generator) -> dict:
    seed = rng.integers(2**63)
    for attempt in range(self.max_tries):
      # Each attempt has its own generator, so a replacement does not depend on how far the failed
      # read got before failing.
      clip_rng = np.random.default_rng((seed, attempt))
      if attempt:
        index = int(clip_rng.integers(len(self.source)))
      record = self.source[index]
      pick, active = self._pick(record, clip_rng)
      try:
        # JPEG sources hand the augmentation PIL images directly, skipping a numpy round trip.
        read = getattr(self.source, 'read_images', self.source.read)
        frames = read(index, pick)
      except BadVideoError as e:
        self.bad_videos.report(e)
        continue
      example = {'frames': self.augment(frames, clip_rng), 'label': np.int32(record.label),
                 'video_id': np.int32(record.video_id)}
      if self.num_classes:
        example['labels'] = _multi_hot(active[0] if active else record.labels, self.num_classes)
      return example
    raise RuntimeError(f'{self.max_tries} bad videos in a row; is the data there? See the log and '
                       f'{self.bad_videos.workdir or "the warnings"} for which.')


@dataclasses.dataclass(frozen=True)
class EvalClip(grain.transforms.Map):
  """Index to an evaluation example with all views; padding and bad videos get `mask=False`. `num_classes` > 0
  adds the multi-hot `labels` of a multi-label set (all False for padding)."""
  source: object
  sampler: object
  augment: EvalAugment
  bad_videos: BadVideoLog
  num_classes: int = 0

  def map(self, index: int) -> dict:
    if index < len(self.source):
      record = self.source[index]
      try:
        frames = self.augment(self.source.read(index, self.sampler.eval))
        example = {'frames': frames, 'label': np.int32(record.label), 'video_id': np.int32(record.video_id),
                   'mask': np.True_}
        if self.num_classes:
          example['labels'] = _multi_hot(record.labels, self.num_classes)
        return example
      except BadVideoError as e:
        self.bad_videos.report(e)
    size = self.augment.input_size
    views = self.sampler.num_clips * self.augment.num_crops
    padding = {'frames': np.zeros((views, self.sampler.clip_frames, size, size, 3), np.uint8),
               'label': np.int32(-1), 'video_id': np.int32(-1), 'mask': np.False_}
    if self.num_classes:
      padding['labels'] = np.zeros(self.num_classes, np.bool_)
    return padding


def _processes(process_index, process_count):
  if process_index is None:
    process_index, process_count = jax.process_index(), jax.process_count()
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} is not in [0, {process_count})')
  return process_index, process_count


def _prefetch(ds: grain.MapDataset, workers: int) -> grain.IterDataset:
  # Elements are whole batches: one reading thread and a short buffer per process bound the memory.
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2))
  if workers:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=2))
  return ds


def train_dataset(source, sampler, augment: TrainAugment, *, batch_size: int, seed: int,
                  num_epochs: int | None = None, workers: int = 0,
                  bad_videos: BadVideoLog = BadVideoLog(), process_index: int | None = None,
                  process_count: int | None = None, multilabel_classes: int = 0) -> grain.IterDataset:
  """Shuffled, augmented training batches of `batch_size` (per process); forever by default.

  `process_index`/`process_count` default to JAX's; `workers=0` loads in the calling process.
  `multilabel_classes` > 0 (a multi-label set's class count) adds the multi-hot `labels`.
  """
  process_index, process_count = _processes(process_index, process_count)
  ds = grain.MapDataset.range(len(source)).seed(seed).shuffle().repeat(num_epochs)
  ds = ds.random_map(TrainClip(source, sampler, augment, bad_videos, num_classes=multilabel_classes))
  # Blocks of `batch_size` consecutive clips of one global stream; process p takes blocks p, p + P, ... So global
  # batch j is clips [j * P * batch_size, (j + 1) * P * batch_size) in stream order, each clip with the randomness
  # of its stream position, whatever P is: P processes train exactly as one.
  ds = ds.batch(batch_size, drop_remainder=True)
  ds = ds[:len(ds) // process_count * process_count][process_index::process_count]
  return _prefetch(ds, workers)


def eval_dataset(source, sampler, augment: EvalAugment, *, batch_size: int, workers: int = 0,
                 bad_videos: BadVideoLog = BadVideoLog(), process_index: int | None = None,
                 process_count: int | None = None, multilabel_classes: int = 0) -> grain.IterDataset:
  """Every video once, in list order, in `ceil(n / (P * batch_size))` batches on each process; with
  `multilabel_classes` > 0, each video's multi-hot `labels` too."""
  process_index, process_count = _processes(process_index, process_count)
  per_step = process_count * batch_size
  padded = -(-len(source) // per_step) * per_step
  ds = grain.MapDataset.range(padded)[process_index::process_count]
  ds = ds.map(EvalClip(source, sampler, augment, bad_videos, num_classes=multilabel_classes))
  return _prefetch(ds.batch(batch_size), workers)


def global_batch(batch: dict, mesh: jax.sharding.Mesh, axis: str = 'data') -> dict:
  """The per-process batch as global `jax.Array`s, split along `axis` of `mesh` on the batch dim."""
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
