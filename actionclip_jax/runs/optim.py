"""AdamW with ActionCLIP's parameter groups: text tower x 1, visual tower x `ratio`, fusion/interaction head x
`f_ratio`; linear warm-up then cosine to 0, per step; global-norm clipping; any group frozen; and how the weights
are stored between steps (`weight_storage`)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

GROUPS = ('text', 'visual', 'head')


def group_of(path: tuple[str, ...]) -> str:
  """'visual' for CLIP's image tower, 'head' for the visual prompt and WTI, 'text' for the rest of CLIP
  (text tower and logit_scale), as the official optimizer splits `model.visual` from `model.parameters()`."""
  if path[0] == 'clip':
    return 'visual' if path[1] == 'visual' else 'text'
  return 'head'


def param_labels(params):
  return jax.tree_util.tree_map_with_path(lambda path, _: group_of(tuple(k.key for k in path)), params)


def schedule(peak: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
  return optax.warmup_cosine_decay_schedule(0.0, peak, max(warmup_steps, 0), max(total_steps, 1), end_value=0.0)


def make(solver, network, warmup_steps: int, total_steps: int, params) -> optax.GradientTransformation:
  """The optimizer for `params` (a tree with 'clip', and maybe 'fusion'/'interaction')."""
  multipliers = {'text': 1.0, 'visual': solver.ratio, 'head': solver.f_ratio}
  frozen = {'text': network.fix_text, 'visual': network.fix_img, 'head': False}

  def group(name):
    if frozen[name]:
      return optax.set_to_zero()
    return optax.adamw(schedule(solver.lr * multipliers[name], warmup_steps, total_steps), b1=solver.betas[0],
                       b2=solver.betas[1], eps=solver.eps, weight_decay=solver.weight_decay)

  tx = optax.multi_transform({name: group(name) for name in GROUPS}, param_labels(params))
  if solver.clip_gradient > 0:
    tx = optax.chain(optax.clip_by_global_norm(solver.clip_gradient), tx)
  return tx


def learning_rates(solver, warmup_steps: int, total_steps: int, step):
  """The base group's learning rate at `step` (the one logged)."""
  return schedule(solver.lr, warmup_steps, total_steps)(step)


# ------------------------------------------------------------------------------------------------------------------
# Weight storage between steps.
#
# 'float32': every param is a float32 master copy, fully updated and decayed each step.
# 'official_fp16': the official train.py's storage. It keeps CLIP's conv, linear and attention weights in fp16
# (OpenAI's `clip.model.convert_weights`) and each step runs `convert_models_to_fp32` -> `optimizer.step()` ->
# `convert_weights`: the Adam update is computed in float32 and the result rounded to fp16, with no float32 master
# copy. At lr 5e-6 most of those weights (std 0.02-0.05, fp16 spacing 1.5e-5-3e-5) never move, and their weight
# decay is lost. Emulated here by rounding exactly those params to fp16 (round to nearest even, as torch's .half())
# after every update, keeping them float32 arrays; embeddings, LayerNorms, logit_scale and the fusion/WTI heads
# (float32 officially) are untouched.
WEIGHT_STORAGES = ('float32', 'official_fp16')


def official_fp16(path: tuple[str, ...]) -> bool:
  """Whether OpenAI's `convert_weights` stores this CLIP param in fp16: Conv2d/Linear weights and biases,
  MultiheadAttention in_proj/out_proj weights and biases, and the `text_projection` / `visual.proj` matrices."""
  if path[0] != 'clip':
    return False
  if path[-1] in ('text_projection', 'proj'):
    return True
  return path[-1] in ('kernel', 'bias') and not path[-2].startswith('ln_')


def store(params, weight_storage: str):
  """`params` as `weight_storage` keeps them between steps (see above); the identity for 'float32'."""
  if weight_storage not in WEIGHT_STORAGES:
    raise ValueError(f'solver.weight_storage={weight_storage!r}: not one of {", ".join(WEIGHT_STORAGES)}')
  if weight_storage == 'float32':
    return params

  def leaf(path, x):
    if not official_fp16(tuple(k.key for k in path)):
      return x
    return x.astype(jnp.float16).astype(x.dtype)

  return jax.tree_util.tree_map_with_path(leaf, params)
