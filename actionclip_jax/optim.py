"""AdamW with ActionCLIP's parameter groups: text tower x 1, visual tower x `ratio`, fusion/interaction head x
`f_ratio`; linear warm-up then cosine to 0, per step; global-norm clipping; any group frozen."""
from __future__ import annotations

import jax
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
