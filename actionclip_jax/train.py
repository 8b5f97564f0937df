"""The ActionCLIP trainer: one top-to-bottom `train()`; `launch.py` runs it.

The step is a pure function `(state, batch, rng) -> (state, metrics)` jitted over a device mesh with
in/out shardings and a donated state; the loss is computed on the global batch, so contrastive logits span
every device without hand-written collectives. Randomness is `fold_in(rng, step)`, the data order is the grain
iterator's, and both are checkpointed: a resumed run is the same run.
"""
from __future__ import annotations

import functools
import json
import os
import signal
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils

from actionclip_jax import checkpoints, clip, inputs, interaction, losses, metrics, optim, pretrained, prompts
from actionclip_jax import sharding, video
from data_pipelines import augment
from data_pipelines.pipeline import global_batch


def model_config(config) -> video.ActionCLIPConfig:
  """The model the config describes (CLIP preset + ActionCLIP's video options)."""
  n = config.network
  clip_config = clip.get_preset(
      n.arch, num_frames=config.data.num_segments * config.data.seg_length, joint=n.joint, tsm=n.tsm,
      drop_path=n.drop_out, emb_dropout=n.emb_dropout, dtype=compute_dtype(n.dtype), remat=remat_mode(n.remat),
      scan_unroll=n.get('scan_unroll', 1), vision_position_std=n.get('position_std'),
      logit_scale_init=n.get('logit_scale_init'))
  if clip_config.image_resolution != config.data.input_size:
    clip_config = clip_config.replace(image_resolution=config.data.input_size)
  return video.ActionCLIPConfig(clip_config, sim_header=n.sim_header, interaction=n.interaction,
                                conv_official_reshape=_conv_official_reshape(config),
                                head_init=config.network.get('head_init', 'official'))


def _auto(name: str, on_cpu: str, elsewhere: str, platform: str | None) -> str:
  """An 'auto' setting resolved for the platform (default: JAX's backend); any other name as it is."""
  if name != 'auto':
    return name
  return on_cpu if (platform or jax.default_backend()) == 'cpu' else elsewhere


def compute_dtype(name: str, platform: str | None = None) -> str:
  """network.dtype resolved: 'auto' is bfloat16 on GPU/TPU and float32 on CPU (see configs/common.py for why)."""
  return _auto(name, 'float32', 'bfloat16', platform)


def remat_mode(name: str | bool, platform: str | None = None) -> str:
  """network.remat resolved: 'auto' is 'dots' on CPU and 'none' on GPU/TPU (configs/common.py says why); the bool of
  a run saved before the modes existed (its config.json, read back by predict) is 'full' or 'none'."""
  if isinstance(name, bool):
    return 'full' if name else 'none'
  return _auto(name, 'dots', 'none', platform)


def _conv_official_reshape(config) -> bool:
  """network.conv_reshape resolved: 'auto' is the official reshape when init_from is an official Conv_1D checkpoint,
  as `load_pretrained` does."""
  mode = config.network.get('conv_reshape', 'auto')
  if config.network.sim_header != 'Conv_1D' or mode == 'transpose':
    return False
  return mode == 'official' or pretrained.official_sim_header(config.init_from) == 'Conv_1D'


def class_table(config, names: list[str], context_length: int) -> np.ndarray:
  templates = tuple(config.network.templates) if config.network.templates else prompts.TEMPLATES
  return prompts.class_token_ids(names, templates, context_length)


def write_config(config, workdir: str) -> None:
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True) + '\n')


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
  """network.cdcr_weight resolved: unset (None) = DRL's 0.001 with interaction='wti', else 0."""
  weight = config.network.get('cdcr_weight')
  if weight is None:
    return 0.001 if config.network.interaction == 'wti' else 0.0
  return float(weight)


def loss_parts_and_grads(module: video.ActionCLIP, params, frames, ids, labels, rng, accum_steps: int = 1,
                         cdcr_weight: float = 0.0):
  """The training loss on the whole batch, its parts and its gradient: (loss, {'kl': ..., 'cdcr': ...}, grads).

  The loss is ActionCLIP's KL loss plus, with WTI and cdcr_weight > 0, cdcr_weight x DRL's channel decorrelation
  regularizer (`interaction.channel_decorrelation_loss`) on the batch's (video i, its sampled text i) pairs; parts
  has the unweighted regularizer under 'cdcr' (0 when off).

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
    kl = losses.actionclip_loss_from_logits(logits, labels)
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


def make_train_step(module, tx, table, accum_steps: int, compute_dtype, *, cdcr_weight: float = 0.0,
                    weight_storage: str = 'float32'):
  """The jit-able step. `weight_storage` (optim.store) rounds what it keeps after each update, as the official
  trainer does with 'official_fp16'. The text tower sees `table` without its common padding (prompts.trim_padding:
  the same loss, fewer positions)."""
  table = jnp.asarray(prompts.trim_padding(table))

  def train_step(state, batch, rng):
    rng = jax.random.fold_in(rng, state['step'])
    text_rng, dropout_rng = jax.random.split(rng)
    frames = augment.normalize(batch['frames'], compute_dtype)
    ids = prompts.sample_text_ids(text_rng, batch['label'], table)
    loss, parts, grads = loss_parts_and_grads(module, state['params'], frames, ids, batch['label'], dropout_rng,
                                              accum_steps, cdcr_weight)
    updates, opt_state = tx.update(grads, state['opt'], state['params'])
    params = optim.store(optax.apply_updates(state['params'], updates), weight_storage)
    stats = {'loss': loss, 'grad_norm': optax.tree.norm(grads),
             **({'loss_kl': parts['kl'], 'cdcr': parts['cdcr']} if cdcr_weight else {}),
             'logit_scale': jnp.exp(state['params']['clip']['logit_scale'])}
    return {'params': params, 'opt': opt_state, 'step': state['step'] + 1}, stats

  return train_step


# ------------------------------------------------------------------------------------------------------------------
# Initial params: random, or converted from a pretrained checkpoint (`init_from`).


def init_from(path: str, params) -> Any:
  """`params` with whatever `path` provides replaced: another run dir (its latest params), an official
  ActionCLIP checkpoint (CLIP + fusion), or an OpenAI / Hugging Face CLIP (the CLIP part). Each part taken
  ('clip', 'fusion', 'interaction') must fit the configured model exactly; parts it lacks keep their init."""
  if os.path.isdir(os.path.join(path, 'checkpoints')) or os.path.isdir(os.path.join(path, 'best')):
    source = checkpoints.read_params(path)
    if source is None:
      raise FileNotFoundError(f'init_from={path} is a run directory without checkpoints')
  else:
    loaded = pretrained.load_pretrained(path)
    source = loaded.params if isinstance(loaded, video.PretrainedActionCLIP) else {'clip': loaded.params}
  merged = dict(params)
  for name, subtree in source.items():
    if name not in params:
      logging.warning('init_from=%s: its %r params have no place in this model and are not used', path, name)
      continue
    want = jax.tree_util.tree_map(lambda x: (x.shape, np.dtype(x.dtype)), params[name])
    got = jax.tree_util.tree_map(lambda x: (x.shape, np.dtype(x.dtype)), subtree)
    if want != got:
      raise pretrained.CheckpointError(
          f'init_from={path}: its {name!r} params do not fit the configured model (check network.arch, '
          f'network.sim_header, data.num_segments, data.input_size)')
    merged[name] = jax.tree_util.tree_map(lambda new, old: jax.device_put(new, old.sharding), subtree, params[name])
  return merged


# ------------------------------------------------------------------------------------------------------------------


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains, evaluating at `eval.every_steps` and at the end; returns the last evaluation's results."""
  from actionclip_jax import evaluate  # evaluation reuses this module's builders

  # --- Config ---
  write_config(config, workdir)
  mcfg = model_config(config)
  module = video.ActionCLIP(mcfg)
  config_dict = json.loads(config.to_json_best_effort())

  # --- Mesh ---
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.rules(config.mesh)
  logging.info('Mesh %s over %d devices, %d processes', dict(mesh.shape), mesh.size, jax.process_count())

  # --- Data ---
  names = inputs.label_names(config.data)
  train_source, train_data = inputs.train_dataset(config, workdir, names)
  steps_per_epoch = max(1, len(train_source) // config.data.batch_size)
  if config.solver.total_steps > 0:
    total_steps, warmup_steps = config.solver.total_steps, config.solver.lr_warmup_step
  else:
    total_steps = config.solver.epochs * steps_per_epoch
    warmup_steps = config.solver.lr_warmup_step * steps_per_epoch
  data_iterator = iter(train_data)
  table = class_table(config, names, mcfg.clip.context_length)

  # --- Model and shardings: params are born sharded ---
  boxed_shapes = jax.eval_shape(lambda r: video.init_params(mcfg, r, boxed=True), jax.random.key(0))
  param_shapes = nn.unbox(boxed_shapes)
  tx = optim.make(config.solver, config.network, warmup_steps, total_steps, param_shapes)
  params_sharding = sharding.param_shardings(boxed_shapes, mesh, rules)
  opt_sharding = sharding.optimizer_shardings(jax.eval_shape(tx.init, param_shapes), params_sharding, mesh)
  state_sharding = {'params': params_sharding, 'opt': opt_sharding, 'step': sharding.replicated(mesh)}

  def init_state(rng):
    params = video.init_params(mcfg, rng)
    return {'params': params, 'opt': tx.init(params), 'step': jnp.zeros((), jnp.int32)}

  abstract_state = jax.eval_shape(init_state, jax.random.key(0))
  abstract_state = jax.tree_util.tree_map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                                          abstract_state, state_sharding)
  if jax.process_index() == 0:
    logging.info('Parameters:\n%s', metrics.param_table(param_shapes))

  # --- Step: compiled ahead of time, its memory estimate logged before the first step ---
  batch_sharding = sharding.batch_sharding(mesh)
  frames_shape = (config.data.batch_size, mcfg.num_frames, config.data.input_size, config.data.input_size, 3)
  batch_shapes = {'frames': jax.ShapeDtypeStruct(frames_shape, jnp.uint8, sharding=batch_sharding),
                  'label': jax.ShapeDtypeStruct((config.data.batch_size,), jnp.int32, sharding=batch_sharding),
                  'video_id': jax.ShapeDtypeStruct((config.data.batch_size,), jnp.int32, sharding=batch_sharding)}
  step_fn = make_train_step(module, tx, table, config.solver.grad_accum_steps, jnp.dtype(mcfg.clip.dtype),
                            cdcr_weight=cdcr_weight(config),
                            weight_storage=config.solver.get('weight_storage', 'float32'))
  init_rng, rng = jax.random.split(jax.random.key(config.seed))
  train_step = jax.jit(step_fn, in_shardings=(state_sharding, batch_sharding, sharding.replicated(mesh)),
                       out_shardings=(state_sharding, sharding.replicated(mesh)), donate_argnums=(0,))
  compiled = train_step.lower(abstract_state, batch_shapes, rng).compile()
  memory = compiled.memory_analysis()
  if memory is not None:
    logging.info('Compiled step memory per device: %s', _memory_summary(memory))

  # --- Checkpoints: resume this run (its newest intact checkpoint), else init_from, else from scratch ---
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
      state['params'] = init_from(config.init_from, state['params'])
      # OpenAI's CLIP files hold those weights in fp16 already: rounding changes them only for other sources.
      state['params'] = jax.jit(functools.partial(optim.store, weight_storage=config.solver.get(
          'weight_storage', 'float32')), out_shardings=params_sharding)(state['params'])
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

  def save(step):
    ckpt.save(step, state, data_iterator, config_dict)

  # --- Loop ---
  results = {}
  progress = metrics.Progress(total_steps, initial=start, enabled=jax.process_index() == 0)
  lr_at = functools.partial(optim.learning_rates, config.solver, warmup_steps, total_steps)
  cost = compiled.cost_analysis()  # per device; a list of one dict in some jax versions
  cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
  timer = metrics.StepTimer(config.data.batch_size, total_steps, start,
                            flops_per_step=(cost or {}).get('flops'),
                            peak=metrics.peak_flops(jax.devices()[0].device_kind))
  try:
    for step in range(start + 1, total_steps + 1):
      with timer.data_wait():
        batch = global_batch(next(data_iterator), mesh, sharding.BATCH_AXES)
      state, stats = compiled(state, batch, rng)
      is_last = step == total_steps
      if step % config.log_every_steps == 0 or is_last or step % config.checkpoint_every_steps == 0:
        stats = jax.device_get(stats)
        metrics.check_finite(step, stats['loss'])
        timing = timer.lap(step)
        eta_s = timing.pop('eta_s')
        writer.write(step, {**{k: float(v) for k, v in stats.items()}, 'lr': float(lr_at(step)), **timing})
        progress.update(step, loss=float(stats['loss']), clips_per_sec=timing['clips_per_sec'], eta_s=eta_s)
      stop = any_preempted()
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
        ckpt.save_best(step, state, config_dict, results['top1'])
      if step % config.checkpoint_every_steps == 0 or is_last or stop:
        save(step)
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
  return results


def _memory_summary(memory) -> str:
  fields = ('argument_size_in_bytes', 'output_size_in_bytes', 'temp_size_in_bytes', 'generated_code_size_in_bytes')
  return ', '.join(f'{f.removesuffix("_size_in_bytes")} {getattr(memory, f, 0) / 2**30:.2f} GiB' for f in fields)

