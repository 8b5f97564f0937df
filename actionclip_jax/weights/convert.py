"""PyTorch state dicts <-> our Flax params, as declarative tables.

A table is a list of `Rule`s: which of our params (a '/'-joined path, or several for a fused tensor) come from
which PyTorch key, through which `Transform`. A key with '{i}' is one tensor per residual block; those are stacked
along our scanned `layers` axis. The engine checks every rule against the shapes of `jax.eval_shape(init)` and is
strict: a missing, unexpected or mis-shaped tensor is an error that names each key, all at once.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
from flax import traverse_util

from actionclip_jax.model import heads


class CheckpointError(ValueError):
  """A checkpoint that does not fit the model, or a file that is no checkpoint we can read."""


@dataclasses.dataclass(frozen=True)
class Transform:
  """A pair of exact (bit-preserving) maps between one PyTorch tensor and one or more of our arrays.

  to_ours(tensor, our_shapes) -> our arrays; to_theirs(our arrays) -> tensor. to_theirs is written with jnp so
  that `jax.eval_shape` derives the PyTorch shape a rule expects from our shapes.
  """
  to_ours: Callable[[np.ndarray, tuple[tuple[int, ...], ...]], tuple[np.ndarray, ...]]
  to_theirs: Callable[..., jax.Array]


IDENTITY = Transform(lambda t, shapes: (t,), lambda x: x)
# torch Linear / plain projection matrices: [out, in] -> kernel [in, out].
LINEAR = Transform(lambda t, shapes: (t.T,), lambda x: x.T)
# torch Conv2d OIHW -> flax HWIO.
CONV = Transform(lambda t, shapes: (t.transpose(2, 3, 1, 0),), lambda x: x.transpose(3, 2, 0, 1))
# One projection to [embed, heads, head_dim] (a Linear weight) or [heads, head_dim] (its bias).
HEADS_IN = Transform(lambda t, shapes: (t.T.reshape(shapes[0]),),
                     lambda x: x.reshape(x.shape[0], -1).T if x.ndim == 3 else x.reshape(-1))
# Attention output projection: [embed_out, heads * head_dim] -> kernel [heads, head_dim, embed_out].
HEADS_OUT = Transform(lambda t, shapes: (t.T.reshape(shapes[0]),), lambda x: x.reshape(-1, x.shape[-1]).T)


def _split_in_proj(t, shapes):
  return tuple(HEADS_IN.to_ours(part, (shape,))[0] for part, shape in zip(np.split(t, 3, axis=0), shapes))


# torch MultiheadAttention's fused in_proj_weight [3 * embed, embed] / in_proj_bias [3 * embed] -> query, key, value.
IN_PROJ = Transform(_split_in_proj, lambda q, k, v: jnp.concatenate([HEADS_IN.to_theirs(x) for x in (q, k, v)]))


@dataclasses.dataclass(frozen=True)
class Rule:
  ours: tuple[str, ...]
  theirs: str
  transform: Transform = IDENTITY


def rule(ours: str | tuple[str, ...], theirs: str, transform: Transform = IDENTITY) -> Rule:
  return Rule((ours,) if isinstance(ours, str) else tuple(ours), theirs, transform)


def layer_norm(ours: str, theirs: str) -> list[Rule]:
  return [rule(f'{ours}/scale', f'{theirs}.weight'), rule(f'{ours}/bias', f'{theirs}.bias')]


def dense(ours: str, theirs: str, bias: bool = True) -> list[Rule]:
  rules = [rule(f'{ours}/kernel', f'{theirs}.weight', LINEAR)]
  return rules + [rule(f'{ours}/bias', f'{theirs}.bias')] if bias else rules


def _per_layer(ours: str, theirs: str, rules: Iterable[Rule]) -> list[Rule]:
  """Prefixes block-relative rules with a scanned stack's path and the per-block PyTorch key (with '{i}')."""
  return [Rule(tuple(f'{ours}/{p}' for p in r.ours), f'{theirs}.{r.theirs}', r.transform) for r in rules]


def torch_attention(ours: str, theirs: str) -> list[Rule]:
  """torch.nn.MultiheadAttention (fused in_proj, out_proj) at `theirs` -> our MultiHeadAttention at `ours`."""
  qkv = tuple(f'{ours}/{n}' for n in ('query', 'key', 'value'))
  return [rule(tuple(f'{p}/kernel' for p in qkv), f'{theirs}.in_proj_weight', IN_PROJ),
          rule(tuple(f'{p}/bias' for p in qkv), f'{theirs}.in_proj_bias', IN_PROJ),
          rule(f'{ours}/out_proj/kernel', f'{theirs}.out_proj.weight', HEADS_OUT),
          rule(f'{ours}/out_proj/bias', f'{theirs}.out_proj.bias')]


def openai_blocks(ours: str, theirs: str, wrapped: bool = False) -> list[Rule]:
  """OpenAI's ResidualAttentionBlock (torch MultiheadAttention + c_fc/c_proj MLP) at `theirs`.resblocks.{i}.

  wrapped: each block sits inside a wrapper module as `.net` (ActionCLIP's TemporalShift_VIT under TSM).
  """
  block = [
      *torch_attention('attn', 'attn'),
      *layer_norm('ln_1', 'ln_1'), *layer_norm('ln_2', 'ln_2'),
      *dense('c_fc', 'mlp.c_fc'), *dense('c_proj', 'mlp.c_proj'),
  ]
  return _per_layer(f'{ours}/resblocks', f'{theirs}.resblocks.{{i}}' + ('.net' if wrapped else ''), block)


def hf_blocks(ours: str, theirs: str) -> list[Rule]:
  """Hugging Face CLIPEncoderLayer (separate q/k/v projections, fc1/fc2) at `theirs`.layers.{i}."""
  block = [rule(f'attn/{n}/{p}', f'self_attn.{n[0]}_proj.{t}', HEADS_IN)
           for n in ('query', 'key', 'value') for p, t in (('kernel', 'weight'), ('bias', 'bias'))]
  block += [
      rule('attn/out_proj/kernel', 'self_attn.out_proj.weight', HEADS_OUT),
      rule('attn/out_proj/bias', 'self_attn.out_proj.bias'),
      *layer_norm('ln_1', 'layer_norm1'), *layer_norm('ln_2', 'layer_norm2'),
      *dense('c_fc', 'mlp.fc1'), *dense('c_proj', 'mlp.fc2'),
  ]
  return _per_layer(f'{ours}/resblocks', f'{theirs}.layers.{{i}}', block)


def openai_clip(tsm: bool = False, joint: bool = False) -> list[Rule]:
  """OpenAI's CLIP state dict; with ActionCLIP's video options as its `build_model` lays them out."""
  return [
      rule('visual/conv1/kernel', 'visual.conv1.weight', CONV),
      rule('visual/class_embedding', 'visual.class_embedding'),
      rule('visual/positional_embedding', 'visual.positional_embedding'),
      *([rule('visual/time_embedding', 'visual.time_embedding')] if joint else []),
      *layer_norm('visual/ln_pre', 'visual.ln_pre'),
      *openai_blocks('visual/transformer', 'visual.transformer', wrapped=tsm),
      *layer_norm('visual/ln_post', 'visual.ln_post'),
      rule('visual/proj', 'visual.proj'),
      rule('token_embedding/embedding', 'token_embedding.weight'),
      rule('positional_embedding', 'positional_embedding'),
      *openai_blocks('transformer', 'transformer'),
      *layer_norm('ln_final', 'ln_final'),
      rule('text_projection', 'text_projection'),
      rule('logit_scale', 'logit_scale'),
  ]


OPENAI_CLIP = openai_clip()

HF_CLIP: list[Rule] = [
    rule('visual/conv1/kernel', 'vision_model.embeddings.patch_embedding.weight', CONV),
    rule('visual/class_embedding', 'vision_model.embeddings.class_embedding'),
    rule('visual/positional_embedding', 'vision_model.embeddings.position_embedding.weight'),
    *layer_norm('visual/ln_pre', 'vision_model.pre_layrnorm'),  # sic: Hugging Face's spelling
    *hf_blocks('visual/transformer', 'vision_model.encoder'),
    *layer_norm('visual/ln_post', 'vision_model.post_layernorm'),
    rule('visual/proj', 'visual_projection.weight', LINEAR),
    rule('token_embedding/embedding', 'text_model.embeddings.token_embedding.weight'),
    rule('positional_embedding', 'text_model.embeddings.position_embedding.weight'),
    *hf_blocks('transformer', 'text_model.encoder'),
    *layer_norm('ln_final', 'text_model.final_layer_norm'),
    rule('text_projection', 'text_projection.weight', LINEAR),
    rule('logit_scale', 'logit_scale'),
]


def _flat_shapes(target) -> dict[str, tuple[int, ...]]:
  return {'/'.join(k): tuple(v.shape) for k, v in traverse_util.flatten_dict(target).items()}


def _num_layers(rule_: Rule, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
  return shapes[rule_.ours[0]][0] if '{i}' in rule_.theirs else None


def check_table(rules: list[Rule], target) -> None:
  """Every param of `target` (e.g. `jax.eval_shape(init)`) is produced by exactly one rule, and nothing else is."""
  shapes = _flat_shapes(target)
  produced = [p for r in rules for p in r.ours]
  twice = sorted({p for p in produced if produced.count(p) > 1})
  unknown = sorted(set(produced) - set(shapes))
  uncovered = sorted(set(shapes) - set(produced))
  if twice or unknown or uncovered:
    raise AssertionError(f'Conversion table does not match the model: produced twice {twice}, '
                         f'not in the model {unknown}, not produced {uncovered}')


def to_flax(state_dict: Mapping[str, np.ndarray], rules: list[Rule], target, *,
            extra_keys: Iterable[str] = ()) -> dict:
  """Our params (float32 numpy, nested dict) from a PyTorch state dict of numpy arrays.

  `target` is the pytree of shapes the model expects (`jax.eval_shape` of its init). `extra_keys` are keys the
  caller has already checked and consumed (metadata such as OpenAI's `input_resolution`).
  """
  check_table(rules, target)
  shapes = _flat_shapes(target)
  used, missing, mis_shaped, flat = set(extra_keys), [], [], {}
  for r in rules:
    our_shapes = tuple(shapes[p] for p in r.ours)
    layers = _num_layers(r, shapes)
    per_layer_shapes = tuple(s[1:] for s in our_shapes) if layers is not None else our_shapes
    want = jax.eval_shape(r.transform.to_theirs,
                          *(jax.ShapeDtypeStruct(s, jnp.float32) for s in per_layer_shapes)).shape
    keys = [r.theirs.format(i=i) for i in range(layers)] if layers is not None else [r.theirs]
    parts = []
    for key in keys:
      if key not in state_dict:
        missing.append(key)
        continue
      used.add(key)
      tensor = np.asarray(state_dict[key])
      if tensor.shape != want:
        mis_shaped.append(f'{key}: checkpoint {tuple(tensor.shape)}, model expects {tuple(want)}')
        continue
      parts.append(r.transform.to_ours(tensor.astype(np.float32), per_layer_shapes))
    if len(parts) == len(keys):
      for j, path in enumerate(r.ours):
        flat[path] = np.stack([p[j] for p in parts]) if layers is not None else parts[0][j]
  unexpected = sorted(set(state_dict) - used)
  problems = []
  if missing:
    problems.append(f'missing keys: {", ".join(missing)}')
  if unexpected:
    problems.append(f'unexpected keys: {", ".join(unexpected)}')
  if mis_shaped:
    problems.append(f'mis-shaped tensors: {"; ".join(mis_shaped)}')
  if problems:
    raise CheckpointError('Checkpoint does not match the model: ' + ' | '.join(problems))
  return traverse_util.unflatten_dict({tuple(k.split('/')): np.array(v, order='C') for k, v in flat.items()})


def to_torch(params, rules: list[Rule]) -> dict[str, np.ndarray]:
  """The PyTorch state dict (numpy arrays) of our params; exact inverse of `to_flax`."""
  flat = {'/'.join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}
  shapes = {k: v.shape for k, v in flat.items()}
  out = {}
  for r in rules:
    arrays = [flat[p] for p in r.ours]
    layers = _num_layers(r, shapes)
    if layers is None:
      out[r.theirs] = np.asarray(r.transform.to_theirs(*arrays))
    else:
      for i in range(layers):
        out[r.theirs.format(i=i)] = np.asarray(r.transform.to_theirs(*(a[i] for a in arrays)))
  return out


# ----------------------------------------------------------------------------------------------------------------
# Official PyTorch state dict (`fusion_model_state_dict`, without DataParallel's `module.` prefix) -> Flax params,
# as tables for the engine above. Our paths are relative to the head.

def _unbatched(leading: int) -> Transform:
  """torch [1] * leading + shape <-> ours shape (the official class token and position table carry batch axes)."""
  return Transform(lambda t, shapes: (t.reshape(shapes[0]),), lambda x: x.reshape((1,) * leading + x.shape))


# torch Conv1d [out, in / groups, width] <-> flax [width, in / groups, out].
_CONV1D = Transform(lambda t, shapes: (t.transpose(2, 1, 0),), lambda x: x.transpose(2, 1, 0))

# Every official head but meanP builds this table; only Transf uses it, so for the others it is accepted and dropped.
FRAME_POSITIONS_KEY = 'frame_position_embeddings.weight'


def heads_rules(sim_header: str) -> list[Rule]:
  """The conversion table of the official `visual_prompt` state dict for `sim_header` (see `to_flax`)."""
  if sim_header == 'meanP':
    return []
  if sim_header == 'Conv_1D':
    return [rule('shift/kernel', 'shift.weight', _CONV1D)]
  if sim_header == 'LSTM':
    return [rule(f'lstm_visual/{name}', f'lstm_visual.{name}', transform)
            for name, transform in (('weight_ih_l0', LINEAR), ('weight_hh_l0', LINEAR),
                                    ('bias_ih_l0', IDENTITY), ('bias_hh_l0', IDENTITY))]
  if sim_header == 'Transf':
    return [rule('frame_position_embeddings/embedding', FRAME_POSITIONS_KEY),
            *openai_blocks('transformer', 'transformer')]
  if sim_header == 'Transf_cls':
    ours, theirs = 'transformer_enc/layers', 'transformer.transformer_enc.layers.{i}'
    return [rule('cls_token', 'transformer.cls_token', _unbatched(2)),
            rule('pos_embed', 'transformer.pos_embed', _unbatched(1)),
            *torch_attention(f'{ours}/self_attn', f'{theirs}.self_attn'),
            *dense(f'{ours}/linear1', f'{theirs}.linear1'),
            *dense(f'{ours}/linear2', f'{theirs}.linear2'),
            *layer_norm(f'{ours}/norm1', f'{theirs}.norm1'),
            *layer_norm(f'{ours}/norm2', f'{theirs}.norm2'),
            *layer_norm('transformer_enc/norm', 'transformer.transformer_enc.norm')]
  raise ValueError(f'Unknown sim_header {sim_header!r}; valid: {", ".join(heads.SIM_HEADERS)}')


def heads_params_from_torch(state_dict: Mapping[str, Any], sim_header: str, *, embed_dim: int, num_frames: int,
                            text_heads: int) -> dict:
  """Flax params of `heads.make_visual_prompt(sim_header, ...)` from an official `visual_prompt` state dict.

  Values may be torch tensors or arrays. Strict (`to_flax`): every missing, unexpected or mis-shaped key is
  named in one `CheckpointError`.
  """
  arrays = {k: v.detach().cpu().numpy() if hasattr(v, 'detach') else np.asarray(v) for k, v in state_dict.items()}
  head = heads.make_visual_prompt(sim_header, num_frames=num_frames, text_heads=text_heads)
  frames = jax.ShapeDtypeStruct((1, num_frames, embed_dim), jnp.float32)
  target = nn.unbox(jax.eval_shape(head.init, jax.random.PRNGKey(0), frames)).get('params', {})
  rules = heads_rules(sim_header)
  unused = [FRAME_POSITIONS_KEY] if sim_header != 'Transf' and FRAME_POSITIONS_KEY in arrays else []
  return to_flax(arrays, rules, target, extra_keys=unused)
