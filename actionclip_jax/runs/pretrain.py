"""CLIP pre-training on image-caption pairs, `--mode=pretrain`:

    python launch.py --config=configs/demo.py:pretrain --mode=pretrain --workdir=workdirs/clip \
        --config.data.train_list=DATA/pretrain/captions.csv --config.data.root=DATA/pretrain

`data.train_list` is a `path,caption` CSV with a header (`annotations.read_captions`); paths are relative to
`data.root`. Images are read as one-frame clips by the video pipeline (grain, bad images reported and replaced,
checkpointable order), with the evaluation geometry (short-side resize, centre crop) and no flips, crops or colour
jitter: the captions name colours and positions, which those would make false. The model is the CLIP of the video
model the same config describes, so `--config.init_from=<this work dir>` fine-tunes from it: its checkpoints hold
`{'clip': params}`.

A fork of `train.py` in big_vision's manner, not a second user of one loop: the sections read the same and every
piece they build is the shared one (`builders`: mesh-laid state, the compiled donated step, resume / init_from,
SIGTERM; `checkpoints`, `metrics`), while the loop is this file's own. What differs, and why a fork: the data
(captioned images as one-frame clips, a caption-id label, the captions tokenized once), the model (CLIP alone),
the loss (CLIP's symmetric cross-entropy, `contrastive_loss`), and what it leaves out (no evaluation or best
checkpoint: nothing to classify; no weight-storage rounding and no GradCache: the official recipes do not
pre-train).
"""
from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging

from actionclip_jax.model import clip, prompts, tokenizer
from actionclip_jax.runs import builders, checkpoints, inputs, metrics, optim, sharding
from data_pipelines import augment, pipeline, sampling, sources
from data_pipelines.annotations import read_captions
from data_pipelines.bad_videos import BadVideoLog
from data_pipelines.pipeline import global_batch


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
  builders.write_config(config, workdir)
  clip_config = builders.model_config(config).clip
  module = clip.CLIP(clip_config)
  config_dict = json.loads(config.to_json_best_effort())

  # --- Mesh ---
  mesh = sharding.make_mesh(config.mesh)
  logging.info('Mesh %s over %d devices, %d processes', dict(mesh.shape), mesh.size, jax.process_count())

  # --- Data: images as one-frame clips, captions tokenized once ---
  data = config.data
  records, captions = read_captions(data.train_list, data.root or None)
  source = sources.CaptionedImages(records, data.short_side or None, cache=data.get('cache_decoded', False))
  train_data = pipeline.train_dataset(
      source, sampling.SegmentSampler(1), augment.CentreCrop(data.input_size),
      batch_size=inputs.per_process(data.batch_size), seed=config.seed, workers=data.workers,
      bad_videos=BadVideoLog(workdir, fail_fast=data.fail_fast))
  total_steps, warmup_steps = builders.schedule_steps(config.solver, len(source), data.batch_size)
  data_iterator = iter(train_data)
  caption_table = tokenizer.tokenize(captions, clip_config.context_length)
  logging.info('%d images, %d distinct captions, %d steps', len(source), len(captions), total_steps)

  # --- Model, optimizer and state: params are born sharded ---
  layout = builders.train_state(functools.partial(init_params, clip_config), config, mesh, warmup_steps, total_steps)

  # --- Step: compiled ahead of time ---
  step_fn = make_train_step(module, layout.tx, caption_table, jnp.dtype(clip_config.dtype))
  init_rng, rng = jax.random.split(jax.random.key(config.seed))
  compiled = builders.compile_step(step_fn, layout, builders.batch_shapes(data.batch_size, 1, data.input_size, mesh),
                                   builders.rng_shape(mesh), mesh)

  loss = None
  with (metrics.MetricWriter(workdir, enabled=jax.process_index() == 0) as writer,
        builders.Preemption() as preemption,  # SIGTERM: save the current step, then exit
        checkpoints.Checkpoints(workdir, config.keep_checkpoints) as ckpt):
    # --- Start: this run's newest intact checkpoint, else init_from (a CLIP), else from scratch ---
    start, state = builders.start_state(ckpt, layout, data_iterator, init_rng, config.init_from, workdir=workdir)
    writer.truncate_after(start)  # drops what an earlier attempt logged after `start` (those steps run again)

    # --- Loop ---
    lr_at = functools.partial(optim.learning_rates, config.solver, warmup_steps, total_steps)
    timer = metrics.StepTimer(data.batch_size, total_steps, start)
    with metrics.Progress(total_steps, initial=start, enabled=jax.process_index() == 0, desc='pretrain') as progress:
      for step in range(start + 1, total_steps + 1):
        with timer.data_wait():
          batch = global_batch(next(data_iterator), mesh, sharding.BATCH_AXES)
        state, stats = compiled(state, batch, rng)
        is_last = step == total_steps
        if step % config.log_every_steps == 0 or is_last or step % config.checkpoint_every_steps == 0:
          loss = metrics.log_step(step, stats, lr_at(step), timer, writer, progress)
        stop = preemption.requested()
        if step % config.checkpoint_every_steps == 0 or is_last or stop:
          ckpt.save(step, state, data_iterator, config_dict)
        if stop:
          logging.warning('SIGTERM: saved step %d, exiting', step)
          break
  return {'steps': total_steps, 'final_loss': loss}
