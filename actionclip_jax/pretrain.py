"""CLIP pre-training on image-caption pairs: `train.py` forked for CLIP's contrastive objective, `--mode=pretrain`.

    python launch.py --config=configs/demo.py:pretrain --mode=pretrain --workdir=/tmp/clip \
        --config.data.train_list=DATA/pretrain/captions.csv --config.data.root=DATA/pretrain

`data.train_list` is a `path,caption` CSV with a header; paths are relative to `data.root`. Images are read as
one-frame clips by the video pipeline (grain, bad images reported and replaced, checkpointable order), with the
evaluation geometry (short-side resize, centre crop) and no flips, crops or colour jitter: the captions name
colours and positions, which those would make false. The model is the CLIP of the video model the same config
describes, so `--config.init_from=<this work dir>` fine-tunes from it: its checkpoints hold `{'clip': params}`.

The loss is CLIP's symmetric cross-entropy over the batch (`contrastive_loss`). Everything else (mesh, born-sharded
params, AOT-compiled donated step, Orbax checkpoints with the data iterator, resume, SIGTERM, metrics) is the
video trainer's, section for section.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import json
import os
import signal
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils

from actionclip_jax import checkpoints, clip, inputs, metrics, optim, prompts, sharding, tokenizer
from actionclip_jax import train as video_trainer
from data_pipelines import augment, pipeline, sampling, sources
from data_pipelines.annotations import AnnotationError, VideoRecord
from data_pipelines.bad_videos import BadVideoLog
from data_pipelines.pipeline import global_batch

CAPTIONS_HEADER = ('path', 'caption')


def read_captions(path: str, root: str | None = None) -> tuple[list[VideoRecord], list[str]]:
  """`path,caption` rows (header first) -> records whose label indexes the distinct captions, and those captions."""
  records, caption_ids = [], {}
  with open(path, newline='') as f:
    rows = csv.reader(f)
    header = tuple(field.strip().lower() for field in next(rows, ()))
    if header != CAPTIONS_HEADER:
      raise AnnotationError(f'{path}:1: expected the header "path,caption", got {",".join(header)!r}')
    for row in rows:
      if not row:
        continue
      if len(row) != 2 or not row[0].strip() or not row[1].strip():
        raise AnnotationError(f'{path}:{rows.line_num}: expected "path,caption" (quote a caption holding commas), '
                              f'got {row!r}')
      image, caption = row[0].strip(), row[1].strip()
      label = caption_ids.setdefault(caption, len(caption_ids))
      records.append(VideoRecord(os.path.join(root, image) if root else image, 1, label, len(records)))
  if not records:
    raise AnnotationError(f'{path}: no image-caption pairs')
  return records, list(caption_ids)


class CaptionedImages(sources._RecordList):  # pylint: disable=protected-access
  """Captioned images as a video source of one-frame videos (the label is the caption id)."""

  def __init__(self, records: list[VideoRecord], short_side: int | None):
    super().__init__(records)
    self.short_side = short_side

  def read(self, index: int, pick) -> np.ndarray:
    del pick  # an image is its only frame
    path = self.records[index].path
    # decode_jpeg reads any format PIL does (the world's pictures are PNG); a bad file is a BadVideoError.
    return np.asarray(sources.decode_jpeg(path, self.short_side, path))[None]


@dataclasses.dataclass(frozen=True)
class CentreCrop:
  """The training-pipeline face of `EvalAugment` (one crop): [1, H, W, 3] -> [1, S, S, 3], no randomness."""
  input_size: int

  def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    del rng
    return augment.EvalAugment(self.input_size)(frames[None])[0]


def contrastive_loss(logits: jax.Array, caption_ids: jax.Array) -> jax.Array:
  """CLIP's symmetric cross-entropy of [B images, B captions] logits, averaged over both directions.

  The target of image i is its own caption; a caption that appears several times in the batch is one text in
  several columns, so the target spreads evenly over them (calling a copy of the right caption a negative would
  be false). With distinct captions this is exactly CLIP's `(CE(logits, arange) + CE(logits.T, arange)) / 2`.
  """
  logits = logits.astype(jnp.float32)
  same = (caption_ids[:, None] == caption_ids[None, :]).astype(jnp.float32)
  targets = same / same.sum(axis=1, keepdims=True)  # symmetric pattern: the same targets serve both directions

  def cross_entropy(rows):
    return -(targets * jax.nn.log_softmax(rows, axis=1)).sum(axis=1).mean()

  return (cross_entropy(logits) + cross_entropy(logits.T)) / 2


def make_train_step(module: clip.CLIP, tx, captions, compute_dtype):
  """`(state, batch, rng) -> (state, stats)`; `captions` is the token table [num captions, L] (its common padding
  is dropped: prompts.trim_padding)."""
  captions = jnp.asarray(prompts.trim_padding(captions))

  def loss_fn(params, images, caption_ids, rng):  # images: [B, 1, S, S, 3], one-frame videos
    image_emb, text_emb, logit_scale = module.apply({'params': params['clip']}, images, captions[caption_ids],
                                                    False, rngs={'dropout': rng})
    logits = clip.logits(image_emb[:, 0].astype(jnp.float32), text_emb.astype(jnp.float32), logit_scale)
    return contrastive_loss(logits, caption_ids)

  def train_step(state, batch, rng):
    rng = jax.random.fold_in(rng, state['step'])
    images = augment.normalize(batch['frames'], compute_dtype)
    loss, grads = jax.value_and_grad(loss_fn)(state['params'], images, batch['label'], rng)
    updates, opt_state = tx.update(grads, state['opt'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    stats = {'loss': loss, 'grad_norm': optax.tree.norm(grads),
             'logit_scale': jnp.exp(state['params']['clip']['logit_scale'])}
    return {'params': params, 'opt': opt_state, 'step': state['step'] + 1}, stats

  return train_step


def init_params(clip_config: clip.CLIPConfig, rng: jax.Array, boxed: bool = False):
  """{'clip': CLIP params}: the layout of the video model's params, so a fine-tune takes them as they are."""
  return {'clip': clip.init_params(clip_config, rng, boxed=boxed)}


# ------------------------------------------------------------------------------------------------------------------


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Pre-trains; returns {'steps', 'final_loss'}."""
  # --- Config: the CLIP of the video model this config describes ---
  video_trainer.write_config(config, workdir)
  clip_config = video_trainer.model_config(config).clip
  module = clip.CLIP(clip_config)
  config_dict = json.loads(config.to_json_best_effort())

  # --- Mesh ---
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.rules(config.mesh)
  logging.info('Mesh %s over %d devices, %d processes', dict(mesh.shape), mesh.size, jax.process_count())

  # --- Data: images as one-frame clips, captions tokenized once ---
  data = config.data
  records, captions = read_captions(data.train_list, data.root or None)
  source = CaptionedImages(records, data.short_side or None)
  train_data = pipeline.train_dataset(
      source, sampling.SegmentSampler(1), CentreCrop(data.input_size),
      batch_size=inputs.per_process(data.batch_size), seed=config.seed, workers=data.workers,
      bad_videos=BadVideoLog(workdir, fail_fast=data.fail_fast))
  steps_per_epoch = max(1, len(source) // data.batch_size)
  if config.solver.total_steps > 0:
    total_steps, warmup_steps = config.solver.total_steps, config.solver.lr_warmup_step
  else:
    total_steps = config.solver.epochs * steps_per_epoch
    warmup_steps = config.solver.lr_warmup_step * steps_per_epoch
  data_iterator = iter(train_data)
  caption_table = tokenizer.tokenize(captions, clip_config.context_length)
  logging.info('%d images, %d distinct captions, %d steps', len(source), len(captions), total_steps)

  # --- Model and shardings: params are born sharded ---
  boxed_shapes = jax.eval_shape(lambda r: init_params(clip_config, r, boxed=True), jax.random.key(0))
  param_shapes = nn.unbox(boxed_shapes)
  tx = optim.make(config.solver, config.network, warmup_steps, total_steps, param_shapes)
  params_sharding = sharding.param_shardings(boxed_shapes, mesh, rules)
  opt_sharding = sharding.optimizer_shardings(jax.eval_shape(tx.init, param_shapes), params_sharding, mesh)
  state_sharding = {'params': params_sharding, 'opt': opt_sharding, 'step': sharding.replicated(mesh)}

  def init_state(rng):
    params = init_params(clip_config, rng)
    return {'params': params, 'opt': tx.init(params), 'step': jnp.zeros((), jnp.int32)}

  abstract_state = jax.eval_shape(init_state, jax.random.key(0))
  abstract_state = jax.tree_util.tree_map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                                          abstract_state, state_sharding)
  if jax.process_index() == 0:
    logging.info('Parameters:\n%s', metrics.param_table(param_shapes))

  # --- Step: compiled ahead of time ---
  batch_sharding = sharding.batch_sharding(mesh)
  size = data.input_size
  batch_shapes = {'frames': jax.ShapeDtypeStruct((data.batch_size, 1, size, size, 3), jnp.uint8,
                                                 sharding=batch_sharding),
                  'label': jax.ShapeDtypeStruct((data.batch_size,), jnp.int32, sharding=batch_sharding),
                  'video_id': jax.ShapeDtypeStruct((data.batch_size,), jnp.int32, sharding=batch_sharding)}
  step_fn = make_train_step(module, tx, caption_table, jnp.dtype(clip_config.dtype))
  init_rng, rng = jax.random.split(jax.random.key(config.seed))
  train_step = jax.jit(step_fn, in_shardings=(state_sharding, batch_sharding, sharding.replicated(mesh)),
                       out_shardings=(state_sharding, sharding.replicated(mesh)), donate_argnums=(0,))
  compiled = train_step.lower(abstract_state, batch_shapes, rng).compile()

  # --- Checkpoints: resume this run (its newest intact checkpoint), else init_from (a CLIP), else from scratch ---
  ckpt = checkpoints.Checkpoints(workdir, config.keep_checkpoints)
  writer = metrics.MetricWriter(workdir, enabled=jax.process_index() == 0)
  restored = ckpt.restore_latest(abstract_state, data_iterator)
  if restored is not None:
    start, state = restored
    logging.info('Resumed %s at step %d', workdir, start)
  else:
    start = 0
    state = jax.jit(init_state, out_shardings=state_sharding)(init_rng)
    if config.init_from:
      state['params'] = video_trainer.init_from(config.init_from, state['params'])
      state['opt'] = jax.jit(tx.init, out_shardings=opt_sharding)(state['params'])
      logging.info('Initialized from %s', config.init_from)
    logging.info('Started %s from step 0', workdir)
  writer.truncate_after(start)  # drops what an earlier attempt logged after `start` (those steps run again)

  # --- Preemption: SIGTERM saves the current step, then the run exits ---
  preempted = []
  previous_handler = signal.signal(signal.SIGTERM, lambda *_: preempted.append(True))

  def any_preempted() -> bool:
    flag = np.asarray(bool(preempted))
    if jax.process_count() > 1:
      flag = multihost_utils.process_allgather(flag).any()
    return bool(flag)

  # --- Loop ---
  loss = None
  progress = metrics.Progress(total_steps, initial=start, enabled=jax.process_index() == 0, desc='pretrain')
  lr_at = functools.partial(optim.learning_rates, config.solver, warmup_steps, total_steps)
  tick, last_logged = time.perf_counter(), start
  try:
    for step in range(start + 1, total_steps + 1):
      batch = global_batch(next(data_iterator), mesh, sharding.BATCH_AXES)
      state, stats = compiled(state, batch, rng)
      is_last = step == total_steps
      if step % config.log_every_steps == 0 or is_last or step % config.checkpoint_every_steps == 0:
        stats = jax.device_get(stats)
        metrics.check_finite(step, stats['loss'])
        loss = float(stats['loss'])
        now = time.perf_counter()
        images_per_sec = (step - last_logged) * data.batch_size / (now - tick)
        tick, last_logged = now, step
        writer.write(step, {**{k: float(v) for k, v in stats.items()}, 'lr': float(lr_at(step)),
                            'images_per_sec': images_per_sec})
        progress.update(step, loss=loss, images_per_sec=images_per_sec)
      stop = any_preempted()
      if step % config.checkpoint_every_steps == 0 or is_last or stop:
        ckpt.save(step, state, data_iterator, config_dict)
      if stop:
        logging.warning('SIGTERM: saved step %d, exiting', step)
        break
  finally:
    try:
      ckpt.close()  # waits for the writes in flight: the last checkpoint is complete, or its failure raised
    finally:
      writer.close()
      progress.close()
      signal.signal(signal.SIGTERM, previous_handler)
  return {'steps': total_steps, 'final_loss': loss}
