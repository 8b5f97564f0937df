"""The ActionCLIP trainer: one top-to-bottom `train()`; `launch.py` runs it.

The step is a pure function `(state, batch, rng) -> (state, metrics)` jitted over a device mesh with
in/out shardings and a donated state; the loss is computed on the global batch, so contrastive logits span
every device without hand-written collectives. Randomness is `fold_in(rng, step)`, the data order is the grain
iterator's, and both are checkpointed: a resumed run is the same run. What the sections build comes from
`builders`, the room every run shares; evaluation is the room below (`evaluate`), called at `eval.every_steps`.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging

from actionclip_jax.model import flops, interaction, losses, prompts, video
from actionclip_jax.runs import builders, checkpoints, evaluate, executables, inputs, metrics, optim, sharding
from data_pipelines import augment
from data_pipelines.pipeline import global_batch


# ------------------------------------------------------------------------------------------------------------------
# The loss and its gradients.


def _encode(module, frames, ids, deterministic: bool):
  video_repr = module.encode_video(frames, deterministic)
  pooled, tokens, _ = module.encode_text(ids, deterministic)
  return video_repr, (pooled, tokens)


def _similarity(module, video_repr, text_repr, text_mask):
  return module.similarity(video_repr, (*text_repr, text_mask))


def _channel_decorrelation(module, video_repr, text_repr, text_mask):
  """DRL's regularizer on the batch's (video i, text i) pairs, from the frame and text tokens WTI scores."""
  video_weights, text_weights = module.interaction.paired(video_repr[1], text_repr[1], text_mask)
  return interaction.channel_decorrelation_loss(video_repr[1], video_weights, text_repr[1], text_weights, text_mask)


def cdcr_weight(config) -> float:
  """network.cdcr_weight resolved: unset (None) = DRL's 0.001 with interaction='wti' and the KL loss, else 0 (the
  regularizer pairs video i with its own text i, which the sigmoid loss's class prompts are not)."""
  weight = config.network.get('cdcr_weight')
  if weight is None:
    kl = config.solver.get('loss', 'kl') == 'kl'
    return 0.001 if config.network.interaction == 'wti' and kl else 0.0
  return float(weight)


def kl_objective(labels):
  """ActionCLIP's KL loss of [B, B] logits for int labels [B] (every same-label pair a positive)."""
  return functools.partial(losses.actionclip_loss_from_logits, labels=labels)


def loss_parts_and_grads(module: video.ActionCLIP, params, frames, ids, objective, rng, accum_steps: int = 1,
                         cdcr_weight: float = 0.0):
  """The training loss on the whole batch, its parts and its gradient: (loss, {'kl': ..., 'cdcr': ...}, grads).

  `objective` maps the logits of every video against every text of `ids`, [B, N] (exp(logit_scale) x the
  similarity), to the loss: ActionCLIP's KL loss of the B videos and their B sampled texts (`kl_objective`,
  `multilabel_kl_objective`), or `sigmoid_objective` of the videos against the N classes' prompts. With WTI and
  cdcr_weight > 0 the loss adds cdcr_weight x DRL's channel decorrelation regularizer
  (`interaction.channel_decorrelation_loss`) on the batch's (video i, its sampled text i) pairs; parts has the
  objective's value under 'kl' and the unweighted regularizer under 'cdcr' (0 when off).

  With accum_steps > 1 the batch is encoded in that many chunks, twice (GradCache): once without gradients to
  get every embedding, then the loss gradient w.r.t. the embeddings is pulled back through each chunk's encoder.
  Memory is one chunk's activations, and the loss and gradient are those of the whole batch: contrastive
  logits still span every sample. Dropout draws differ from the unchunked step (one key per chunk).
  """
  text_mask = interaction.text_token_mask(ids)

  def encode(p, f, i, r):
    return module.apply({'params': p}, f, i, False, method=_encode, rngs={'dropout': r})

  def loss_from(p, video_repr, text_repr):
    scores = module.apply({'params': p}, video_repr, text_repr, text_mask, method=_similarity)
    logits = jnp.exp(p['clip']['logit_scale']) * scores.astype(jnp.float32)
    kl = objective(logits)
    if not cdcr_weight:
      return kl, {'kl': kl, 'cdcr': jnp.zeros((), jnp.float32)}
    cdcr = module.apply({'params': p}, video_repr, text_repr, text_mask, method=_channel_decorrelation)
    return losses.with_regularizer(kl, cdcr, cdcr_weight), {'kl': kl, 'cdcr': cdcr}

  if accum_steps == 1:
    (loss, parts), grads = jax.value_and_grad(lambda p: loss_from(p, *encode(p, frames, ids, rng)),
                                              has_aux=True)(params)
    return loss, parts, grads

  def split(x):  # chunk j = samples j, j + k, ...: each chunk keeps every device's share of the batch
    return x.reshape(x.shape[0] // accum_steps, accum_steps, *x.shape[1:]).swapaxes(0, 1)

  def merge(x):
    return x.swapaxes(0, 1).reshape(-1, *x.shape[2:])

  chunks = (split(frames), split(ids), jax.random.split(rng, accum_steps))
  reprs = jax.lax.map(lambda c: encode(params, *c), chunks)
  (loss, parts), (head_grads, *repr_grads) = jax.value_and_grad(loss_from, argnums=(0, 1, 2), has_aux=True)(
      params, *jax.tree_util.tree_map(merge, reprs))

  def pull_back(acc, chunk):
    f, i, r, g = chunk
    _, vjp = jax.vjp(lambda p: encode(p, f, i, r), params)
    return jax.tree_util.tree_map(jnp.add, acc, vjp(g)[0]), None

  encoder_grads, _ = jax.lax.scan(pull_back, jax.tree_util.tree_map(jnp.zeros_like, params),
                                  (*chunks, jax.tree_util.tree_map(split, tuple(repr_grads))))
  return loss, parts, jax.tree_util.tree_map(jnp.add, head_grads, encoder_grads)


@dataclasses.dataclass(frozen=True)
class Loss:
  """What the step trains with: `kind` 'kl' (ActionCLIP's) or 'sigmoid', and whether the batch's videos carry
  multi-hot `labels` [B, C] (data.multilabel) rather than one `label` each."""
  kind: str = 'kl'
  multilabel: bool = False
  sigmoid_bias: float = 0.0

  @classmethod
  def from_config(cls, config) -> Loss:
    return cls(config.solver.get('loss', 'kl'), bool(config.data.get('multilabel', False)),
               float(config.solver.get('sigmoid_bias', 0.0)))


def multilabel_kl_objective(labels, text_classes):
  """The KL loss with multi-hot labels [B, C] and the class each video's text was drawn from, int [B]: video i and
  text k are a positive pair when text k's class is one of video i's (`losses.multilabel_targets`)."""
  return lambda logits: losses.actionclip_loss_from_targets(logits, losses.multilabel_targets(labels, text_classes))


def sigmoid_objective(labels, bias: float):
  """Binary cross-entropy of [B, C] logits plus a fixed bias against multi-hot labels [B, C]."""
  return lambda logits: losses.sigmoid_loss(logits + bias, labels)


def draw_labels(key, labels):
  """One of each video's labels, uniformly: multi-hot [B, C] -> int [B]. (Training lists leave out videos without
  a label; one would draw class 0.)"""
  return jax.random.categorical(key, jnp.where(labels, 0.0, -jnp.inf))


def texts_and_objective(key, batch, table, loss: Loss):
  """The step's texts [N, L] and the objective of their [B, N] logits (see `loss_parts_and_grads`).

  - 'kl', one label a video: each video's class with a template drawn per video (the official train.py);
  - 'kl', multi-label: one of each video's labels drawn per video and step, then a template as above; the positives
    are every (video, text) pair whose text's class the video shows;
  - 'sigmoid': every class once, each with a template drawn per step, [C, L]; each video is scored against all.
  """
  if loss.kind == 'sigmoid':
    labels = batch['labels'] if loss.multilabel else jax.nn.one_hot(batch['label'], table.shape[1]) > 0
    templates = jax.random.randint(key, (table.shape[1],), 0, table.shape[0])
    return table[templates, jnp.arange(table.shape[1])], sigmoid_objective(labels, loss.sigmoid_bias)
  if loss.multilabel:
    label_key, template_key = jax.random.split(key)
    text_classes = draw_labels(label_key, batch['labels'])
    return (prompts.sample_text_ids(template_key, text_classes, table),
            multilabel_kl_objective(batch['labels'], text_classes))
  return prompts.sample_text_ids(key, batch['label'], table), kl_objective(batch['label'])


def make_train_step(module, tx, table, accum_steps: int, compute_dtype, *, cdcr_weight: float = 0.0,
                    weight_storage: str = 'float32', loss: Loss = Loss()):
  """The jit-able step. `weight_storage` (optim.store) rounds what it keeps after each update, as the official
  trainer does with 'official_fp16'. The text tower sees `table` without its common padding (prompts.trim_padding:
  the same loss, fewer positions). `loss` picks the texts the step encodes and how their logits are scored
  (`texts_and_objective`)."""
  table = jnp.asarray(prompts.trim_padding(table))

  def train_step(state, batch, rng):
    rng = jax.random.fold_in(rng, state['step'])
    text_rng, dropout_rng = jax.random.split(rng)
    frames = augment.normalize(batch['frames'], compute_dtype)
    ids, objective = texts_and_objective(text_rng, batch, table, loss)
    loss_value, parts, grads = loss_parts_and_grads(module, state['params'], frames, ids, objective, dropout_rng,
                                                    accum_steps, cdcr_weight)
    updates, opt_state = tx.update(grads, state['opt'], state['params'])
    params = optim.store(optax.apply_updates(state['params'], updates), weight_storage)
    stats = {'loss': loss_value, 'grad_norm': optax.tree.norm(grads),
             **({'loss_kl': parts['kl'], 'cdcr': parts['cdcr']} if cdcr_weight else {}),
             'logit_scale': jnp.exp(state['params']['clip']['logit_scale'])}
    return {'params': params, 'opt': opt_state, 'step': state['step'] + 1}, stats

  return train_step


# ------------------------------------------------------------------------------------------------------------------
# The step `train()` compiles, on this host's mesh or, for `--mode=compile`, on a TPU topology's.


@dataclasses.dataclass(frozen=True)
class Step:
  """The train step and what it is compiled for: the state's layout, the global batch and rng (abstract), its
  analytic FLOPs on the global batch, and the trimmed prompt table's shape and schedule its signature names."""
  fn: Any
  layout: builders.TrainState
  batch: dict
  rng: jax.ShapeDtypeStruct
  flops: int
  table_shape: tuple[int, ...]
  schedule: tuple[int, int]

  def signature(self, config, devices) -> dict:
    return executables.signature(config, devices, self.table_shape, *self.schedule)

  def out_shapes(self):
    return jax.eval_shape(self.fn, self.layout.abstract, self.batch, self.rng)


def build_step(config, mcfg: video.ActionCLIPConfig, names: list[str], mesh, warmup_steps: int,
               total_steps: int) -> Step:
  """The step for `config` on `mesh`, with the class prompts of `names`; nothing is allocated or compiled."""
  table = builders.class_table(config, names, mcfg.clip.context_length)
  layout = builders.train_state(functools.partial(video.init_params, mcfg), config, mesh, warmup_steps, total_steps)
  loss = Loss.from_config(config)
  fn = make_train_step(video.ActionCLIP(mcfg), layout.tx, table, config.solver.grad_accum_steps,
                       jnp.dtype(mcfg.clip.dtype), cdcr_weight=cdcr_weight(config),
                       weight_storage=config.solver.get('weight_storage', 'float32'), loss=loss)
  trimmed = prompts.trim_padding(table).shape
  batch = builders.batch_shapes(config.data.batch_size, mcfg.num_frames, config.data.input_size, mesh,
                                multilabel_classes=len(names) if loss.multilabel else 0)
  texts = len(names) if loss.kind == 'sigmoid' else None
  return Step(fn, layout, batch, builders.rng_shape(mesh),
              flops.train_step(mcfg, config.data.batch_size, trimmed[-1], texts), trimmed, (total_steps, warmup_steps))


# ------------------------------------------------------------------------------------------------------------------


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains, evaluating at `eval.every_steps` and at the end; returns the last evaluation's results."""
  # --- Config ---
  builders.write_config(config, workdir)
  mcfg = builders.model_config(config)
  module = video.ActionCLIP(mcfg)
  config_dict = json.loads(config.to_json_best_effort())

  # --- Mesh ---
  mesh = sharding.make_mesh(config.mesh)
  logging.info('Mesh %s over %d devices, %d processes', dict(mesh.shape), mesh.size, jax.process_count())

  # --- Data ---
  names = inputs.label_names(config.data)
  train_source, train_data = inputs.train_dataset(config, workdir, names)
  total_steps, warmup_steps = builders.schedule_steps(config.solver, len(train_source), config.data.batch_size)
  data_iterator = iter(train_data)

  # --- Model, optimizer and state (params born sharded), and the step ---
  program = build_step(config, mcfg, names, mesh, warmup_steps, total_steps)
  layout = program.layout
  logging.info('A step: %.4g FLOPs (the model\'s matmuls on the global batch)', program.flops)

  # --- Step: compiled ahead of time (its memory estimate logged before the first step), or loaded compiled ---
  init_rng, rng = jax.random.split(jax.random.key(config.seed))
  if config.get('compile', {}).get('load'):
    compiled = executables.load(config.compile.load, program.signature(config, jax.devices()),
                                (layout.abstract, program.batch, program.rng), program.out_shapes())
    logging.info('Loaded the compiled step from %s', config.compile.load)
  else:
    compiled = builders.compile_step(program.fn, layout, program.batch, program.rng, mesh)

  results = {}
  with (metrics.MetricWriter(workdir, enabled=jax.process_index() == 0) as writer,
        builders.Preemption() as preemption,  # SIGTERM: save the current step, then exit
        checkpoints.Checkpoints(workdir, config.keep_checkpoints) as ckpt):
    # --- Start: this run's newest intact checkpoint, else init_from, else from scratch ---
    start, state = builders.start_state(ckpt, layout, data_iterator, init_rng, config.init_from,
                                        config.solver.get('weight_storage', 'float32'), workdir)
    writer.truncate_after(start)  # drops what an earlier attempt logged after `start` (those steps run again)

    # --- Loop ---
    lr_at = functools.partial(optim.learning_rates, config.solver, warmup_steps, total_steps)
    timer = metrics.StepTimer(config.data.batch_size, total_steps, start, flops_per_step=program.flops,
                              peak=metrics.peak_flops(jax.devices()[0].device_kind), devices=jax.device_count())
    with metrics.Progress(total_steps, initial=start, enabled=jax.process_index() == 0) as progress:
      for step in range(start + 1, total_steps + 1):
        with timer.data_wait():
          batch = global_batch(next(data_iterator), mesh, sharding.BATCH_AXES)
        state, stats = compiled(state, batch, rng)
        is_last = step == total_steps
        if step % config.log_every_steps == 0 or is_last or step % config.checkpoint_every_steps == 0:
          metrics.log_step(step, stats, lr_at(step), timer, writer, progress)
        stop = preemption.requested()
        # Evaluated before this step's checkpoint: a checkpoint at step N means N's evaluation is recorded, so a run
        # killed during an evaluation redoes it when resumed, from the previous checkpoint, which is complete before
        # the evaluation starts. A preempted run saves at once, skipping that evaluation.
        if not stop and config.data.val_list and ((config.eval.every_steps and step % config.eval.every_steps == 0)
                                                  or is_last):
          ckpt.wait()
          logging.info('Evaluating step %d on %s', step, config.data.val_list)
          with timer.excluded():  # the next logged step_s is the steps' time, not the evaluation's
            results = evaluate.evaluate_params(config, workdir, module, state['params'], mesh, names)
          writer.write_eval(f'{config.eval.name}_step{step}', results)
          ckpt.save_best(step, state, config_dict, evaluate.headline(results))
        if step % config.checkpoint_every_steps == 0 or is_last or stop:
          ckpt.save(step, state, data_iterator, config_dict)
        if stop:
          logging.warning('SIGTERM: saved step %d, exiting', step)
          break
  return results
