"""What every run builds from a config, in one room below them all (`train`, `pretrain`, `evaluate`, `predict`).

- the model: `model_config` (CLIP preset + ActionCLIP's options), its compute dtype and remat resolved for a
  platform (`compute_dtype`, `remat_mode`), and the class-prompt table (`class_table`);
- the start: `init_from` (params from another run, an official checkpoint or a CLIP), `write_config`;
- the training state: `TrainState` (the optimizer and the state `{'params', 'opt', 'step'}` laid out on the mesh
  before any of it exists), `compile_step` (the donated, sharded step, compiled ahead of time), `start_state`
  (resume, else `init_from`, else from scratch) and `Preemption` (SIGTERM asks every process to save and stop).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import signal
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from actionclip_jax.model import clip, prompts, video
from actionclip_jax.weights import pretrained
from actionclip_jax.runs import checkpoints, metrics, optim, sharding

# ------------------------------------------------------------------------------------------------------------------
# The model.


def model_config(config, platform: str | None = None) -> video.ActionCLIPConfig:
  """The model the config describes (CLIP preset + ActionCLIP's video options), its 'auto' settings resolved for
  `platform` (default: JAX's backend)."""
  n = config.network
  clip_config = clip.get_preset(
      n.arch, num_frames=config.data.num_segments * config.data.seg_length, joint=n.joint, tsm=n.tsm,
      drop_path=n.drop_out, emb_dropout=n.emb_dropout, dtype=compute_dtype(n.dtype, platform),
      remat=remat_mode(n.remat, platform), scan_unroll=n.get('scan_unroll', 1),
      vision_position_std=n.get('position_std'), logit_scale_init=n.get('logit_scale_init'))
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
  """Token ids [templates, classes, context_length] of every class in every template (network.templates, else the
  16 of ActionCLIP)."""
  templates = tuple(config.network.templates) if config.network.templates else prompts.TEMPLATES
  return prompts.class_token_ids(names, templates, context_length)


# ------------------------------------------------------------------------------------------------------------------
# The start of a run.


def write_config(config, workdir: str) -> None:
  """WORKDIR/config.json: the resolved config, saved with every run (process 0)."""
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True) + '\n')


def init_from(path: str, params) -> Any:
  """`params` with whatever `path` provides replaced: another run dir (its latest params), an official
  ActionCLIP checkpoint (CLIP + fusion), or an OpenAI / Hugging Face CLIP (the CLIP part). Each part taken
  ('clip', 'fusion', 'interaction') must fit the configured model exactly; parts it lacks keep their init
  (abstract ones stay abstract: `evaluate.load_params` initializes only those)."""
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


def schedule_steps(solver, examples: int, batch_size: int) -> tuple[int, int]:
  """(total, warm-up) steps: solver.total_steps and lr_warmup_step as steps, or else solver.epochs and
  lr_warmup_step as epochs of `examples`."""
  if solver.total_steps > 0:
    return solver.total_steps, solver.lr_warmup_step
  steps_per_epoch = max(1, examples // batch_size)
  return solver.epochs * steps_per_epoch, solver.lr_warmup_step * steps_per_epoch


# ------------------------------------------------------------------------------------------------------------------
# The training state, laid out on the mesh before it exists; its compiled step; where a run starts.


@dataclasses.dataclass(frozen=True)
class TrainState:
  """The optimizer and the layout of `{'params', 'opt', 'step'}`: `abstract` holds ShapeDtypeStructs with their
  shardings (what the step is compiled for and a checkpoint restores into), `init(rng)` builds the state itself."""
  tx: Any
  init: Callable[[jax.Array], dict]
  abstract: dict
  shardings: dict
  param_shapes: Any


def abstract_params(init_params: Callable[..., Any], config, mesh) -> tuple[Any, Any]:
  """(ShapeDtypeStructs with their shardings, the shardings) of the params `init_params(rng, boxed=...)` builds:
  their logical axes mapped to the mesh by config.mesh.rules. Nothing is allocated."""
  boxed_shapes = jax.eval_shape(lambda r: init_params(r, boxed=True), jax.random.key(0))
  shardings = sharding.param_shardings(boxed_shapes, mesh, sharding.rules(config.mesh))
  abstract = jax.tree_util.tree_map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                                    nn.unbox(boxed_shapes), shardings)
  return abstract, shardings


def train_state(init_params: Callable[..., Any], config, mesh, warmup_steps: int, total_steps: int) -> TrainState:
  """`init_params(rng, boxed=...)` builds the params, sharded as `abstract_params` says; the optimizer state follows
  its params, the step counter is replicated. Nothing is allocated here."""
  param_shapes, params_sharding = abstract_params(init_params, config, mesh)
  tx = optim.make(config.solver, config.network, warmup_steps, total_steps, param_shapes)
  opt_sharding = sharding.optimizer_shardings(jax.eval_shape(tx.init, param_shapes), params_sharding, mesh)
  shardings = {'params': params_sharding, 'opt': opt_sharding, 'step': sharding.replicated(mesh)}

  def init(rng):
    params = init_params(rng)
    return {'params': params, 'opt': tx.init(params), 'step': jnp.zeros((), jnp.int32)}

  abstract = jax.tree_util.tree_map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                                    jax.eval_shape(init, jax.random.key(0)), shardings)
  if jax.process_index() == 0:
    logging.info('Parameters:\n%s', metrics.param_table(param_shapes))
  return TrainState(tx, init, abstract, shardings, param_shapes)


def batch_shapes(batch_size: int, num_frames: int, size: int, mesh, multilabel_classes: int = 0) -> dict:
  """The global batch the input pipeline yields: uint8 frames [B, T, S, S, 3], labels and video ids [B], and with
  `multilabel_classes` = C > 0 the multi-hot labels bool [B, C]."""
  split = sharding.batch_sharding(mesh)
  multi_hot = {'labels': jax.ShapeDtypeStruct((batch_size, multilabel_classes), jnp.bool_, sharding=split)}
  return {'frames': jax.ShapeDtypeStruct((batch_size, num_frames, size, size, 3), jnp.uint8, sharding=split),
          'label': jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=split),
          'video_id': jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=split),
          **(multi_hot if multilabel_classes else {})}


def rng_shape(mesh) -> jax.ShapeDtypeStruct:
  """The step's rng argument, abstract: a replicated key."""
  key = jax.eval_shape(lambda: jax.random.key(0))
  return jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=sharding.replicated(mesh))


def compile_step(step_fn, state: TrainState, batch: dict, rng: jax.ShapeDtypeStruct, mesh):
  """`step_fn(state, batch, rng) -> (state, stats)` jitted over the mesh with the state donated, lowered and compiled
  ahead of time (its memory estimate logged before the first step: a run that cannot fit fails in seconds)."""
  jitted = jax.jit(step_fn, in_shardings=(state.shardings, sharding.batch_sharding(mesh), sharding.replicated(mesh)),
                   out_shardings=(state.shardings, sharding.replicated(mesh)), donate_argnums=(0,))
  compiled = jitted.lower(state.abstract, batch, rng).compile()
  memory = compiled.memory_analysis()
  if memory is not None:
    fields = ('argument_size_in_bytes', 'output_size_in_bytes', 'temp_size_in_bytes', 'generated_code_size_in_bytes')
    logging.info('Compiled step memory per device: %s', ', '.join(
        f'{f.removesuffix("_size_in_bytes")} {getattr(memory, f, 0) / 2**30:.2f} GiB' for f in fields))
  return compiled


def start_state(ckpt: checkpoints.Checkpoints, state: TrainState, data_iterator, rng: jax.Array, init_path: str,
                weight_storage: str = 'float32', workdir: str = '') -> tuple[int, dict]:
  """(step, state) a run starts from: its newest intact checkpoint (the data iterator restored in place), else a
  fresh state with `init_path`'s params (rounded as `weight_storage` keeps them, the optimizer state rebuilt for
  them), else a fresh state."""
  restored = ckpt.restore_latest(state.abstract, data_iterator)
  if restored is not None:
    logging.info('Resumed %s at step %d', workdir, restored[0])
    return restored
  fresh = jax.jit(state.init, out_shardings=state.shardings)(rng)
  if init_path:
    params = init_from(init_path, fresh['params'])
    # OpenAI's CLIP files hold those weights in fp16 already: rounding changes them only for other sources.
    params = jax.jit(functools.partial(optim.store, weight_storage=weight_storage),
                     out_shardings=state.shardings['params'])(params)
    fresh = {**fresh, 'params': params, 'opt': jax.jit(state.tx.init, out_shardings=state.shardings['opt'])(params)}
    logging.info('Initialized from %s', init_path)
  logging.info('Started %s from step 0', workdir)
  return 0, fresh


class Preemption:
  """SIGTERM (a preempted VM) asks the run to save its current step and stop. `with Preemption() as p:` installs
  the handler (and restores the previous one after); `p.requested()` is True on every process once any process got
  the signal, so all of them save the same step together."""

  def __init__(self):
    self._flag, self._previous = [], None

  def __enter__(self) -> 'Preemption':
    self._previous = signal.signal(signal.SIGTERM, lambda *_: self._flag.append(True))
    return self

  def __exit__(self, *exc):
    signal.signal(signal.SIGTERM, self._previous)
    return False

  def requested(self) -> bool:
    flag = np.asarray(bool(self._flag))
    if jax.process_count() > 1:
      flag = multihost_utils.process_allgather(flag).any()
    return bool(flag)
