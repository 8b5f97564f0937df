"""The config's data section -> data_pipelines objects: label names, records, sources, datasets."""
from __future__ import annotations

import jax
from absl import logging

from actionclip_jax import labels as label_lists
from data_pipelines import annotations, augment, pipeline, sampling, sources
from data_pipelines.bad_videos import BadVideoLog
from data_pipelines.randaugment import RandAugment


def label_names(data) -> list[str]:
  """data.label_list's class names: a label CSV, or a shipped list's name (`k400`, see actionclip_jax.labels)."""
  return label_lists.read(data.label_list)


def records(data, list_path: str, names: list[str], training: bool = False) -> list[annotations.VideoRecord]:
  """A TSN list file (`path num_frames label`), or a `path,label_name` CSV for a plain folder of videos.

  With data.multilabel: a Charades CSV or a multi-label list (annotations.read_video_list), whose bad rows are
  logged one by one with their file:line and left out; training also leaves out the videos without a label, which
  have no text to be matched with (evaluation keeps them: they are negatives of every class)."""
  if not multilabel(data):
    return annotations.read_video_list(list_path, names, root=data.root or None)
  recs, problems = annotations.read_video_list(list_path, names, root=data.root or None, multilabel=True)
  for problem in problems:
    logging.warning('%s', problem)
  if training:
    unlabelled = sum(not r.labels for r in recs)
    if unlabelled:
      logging.info('%s: %d of its %d videos have no label; training leaves them out', list_path, unlabelled,
                   len(recs))
    recs = [r for r in recs if r.labels]
  return recs


def multilabel(data) -> bool:
  return bool(data.get('multilabel', False))


def source(data, list_path: str, names: list[str], *, prescale: bool = True, training: bool = False):
  """For `source=packed`, list_path is the directory `python -m data_pipelines.pack` wrote. prescale=False reads
  frames at their stored size instead of scaled to data.short_side."""
  short_side = data.short_side if prescale else None
  if data.source == 'packed':
    return sources.PackedSource(list_path, short_side=short_side)
  recs = records(data, list_path, names, training)
  if data.source == 'frames':
    return sources.FrameFolderSource(recs, image_tmpl=data.image_tmpl, index_bias=data.index_bias,
                                     short_side=short_side)
  return sources.VideoFileSource(recs, short_side=short_side, cache=training and data.get('cache_decoded', False))


class _CentreSampler:
  """`random_shift=False`: training takes the evaluation (segment centre) indices, as the official loader."""

  def __init__(self, sampler: sampling.SegmentSampler):
    self.sampler = sampler

  def train(self, num_frames, rng):
    del rng
    return self.sampler.eval(num_frames)[0]


def per_process(batch_size: int) -> int:
  if batch_size % jax.process_count():
    raise ValueError(f'batch size {batch_size} is not divisible by {jax.process_count()} processes')
  return batch_size // jax.process_count()


def train_dataset(config, workdir: str, names: list[str]):
  data = config.data
  src = source(data, data.train_list, names, training=True)
  sampler = sampling.SegmentSampler(data.num_segments, data.seg_length)
  randaug = RandAugment(data.randaug.N, data.randaug.M) if data.randaug.N > 0 else None
  # A config saved before crop_scales/color_jitter/grayscale existed gets TrainAugment's own defaults (official).
  train_augment = augment.TrainAugment(
      data.input_size, scales=tuple(data.get('crop_scales', augment.TrainAugment.scales)), flip=data.flip,
      jitter_p=data.get('color_jitter', augment.TrainAugment.jitter_p),
      grayscale_p=data.get('grayscale', augment.TrainAugment.grayscale_p), randaugment=randaug,
      per_frame=data.get('augment_order', 'clip') == 'official')
  sampler = sampler if data.random_shift else _CentreSampler(sampler)
  if data.get('multilabel_sampling', 'video') == 'interval':
    sampler = sampling.IntervalSampler(sampler)
  return src, pipeline.train_dataset(
      src, sampler, train_augment, batch_size=per_process(data.batch_size), seed=config.seed, workers=data.workers,
      bad_videos=BadVideoLog(workdir, fail_fast=data.fail_fast),
      multilabel_classes=len(names) if multilabel(data) else 0)


def eval_dataset(config, workdir: str, list_path: str, names: list[str], src=None):
  """(source, batches) of `list_path`, or of `src` (any source) when given. eval.prescale, eval.max_videos and
  eval.drop_last apply."""
  data = config.data
  if src is None:
    src = source(data, list_path, names, prescale=config.eval.get('prescale', True))
  if config.eval.max_videos:
    src = _Prefix(src, config.eval.max_videos)
  if config.eval.get('drop_last', False) and len(src) > config.eval.batch_size:
    src = _Prefix(src, len(src) - len(src) % config.eval.batch_size)  # the official test's last partial batch
  sampler = sampling.SegmentSampler(data.num_segments, data.seg_length, num_clips=config.eval.num_clips)
  return src, pipeline.eval_dataset(
      src, sampler, augment.EvalAugment(data.input_size, num_crops=config.eval.num_crops),
      batch_size=per_process(config.eval.batch_size), workers=data.workers,
      bad_videos=BadVideoLog(workdir, fail_fast=data.fail_fast),
      multilabel_classes=len(names) if multilabel(data) else 0)


class _Prefix:
  """The first n videos of a source (eval.max_videos, for quick checks)."""

  def __init__(self, src, n: int):
    self.src, self.n = src, min(n, len(src))

  def __len__(self):
    return self.n

  def __getitem__(self, index):
    if not 0 <= index < self.n:
      raise IndexError(index)
    return self.src[index]

  def read(self, index, pick):
    return self.src.read(index, pick)
