"""ActionCLIP's post-network visual prompts (`sim_header`): per-frame CLIP features [B, T, D] -> a video feature.

Every head returns `(pooled [B, D], frame_tokens [B, T, D])`: frame_tokens are the per-frame features after the
prompt and before pooling (the video side of the weighted token-wise interaction). Module and parameter names follow
the official `modules/Visual_Prompt.py` state dict, which `weights/convert.py` converts with one declarative table per
head (`convert.heads_rules`).

| sim_header | params (Flax path: shape)                                                              |
| meanP      | none                                                                                   |
| Conv_1D    | shift/kernel [3, 1, D]                                                                 |
| LSTM       | lstm_visual/{weight_ih_l0, weight_hh_l0} [D, 4D], lstm_visual/{bias_ih_l0, bias_hh_l0} [4D] |
| Transf     | frame_position_embeddings/embedding [77, D], transformer/resblocks/... (clip.Transformer, 6 layers) |
| Transf_cls | cls_token [D], pos_embed [T+1, D], transformer_enc/layers/... (6 scanned layers), transformer_enc/norm |
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from actionclip_jax.model import clip
from actionclip_jax.model.clip import EMBED, LAYERS, MLP, POS, _param_init

SIM_HEADERS = ('meanP', 'Conv_1D', 'LSTM', 'Transf', 'Transf_cls')
FRAME_POSITIONS = 77  # the official table has CLIP's context length rows, so Transf takes up to 77 frames
# How Transf and Transf_cls start (`network.head_init`):
# - 'official': the official code's init, in distribution. `visual_prompt.init_weights` (N(0, 0.02) for every
#   nn.Linear and nn.Embedding, zero biases) reaches Transf's blocks, but nn.MultiheadAttention's fused in_proj is
#   a bare Parameter and keeps torch's xavier-uniform (U(+-sqrt(6 / 4D)), std (2D)^-1/2: 0.031 at D = 512).
#   Transf_cls (TAggregate) gets the fmod "trunc normal" std 0.02 on its Linears (out_proj included), and as
#   nn.TransformerEncoder deep-copies one layer, every layer's in_proj is the same xavier draw.
# - 'scaled': CLIP's width-scaled rule for its own towers: attention in_proj D^-1/2, output projections
#   (2 D layers)^-1/2, MLP input (2D)^-1/2, position table (and class token) D^-1/2. At ViT-B's D = 512 the two
#   are close; at small widths N(0, 0.02) leaves the blocks nearly linear and the positions tiny, so Transf starts
#   as an order-blind mean (at D = 32, reversing the frames moves the pooled feature by 1e-3 of its spread over
#   videos against 8e-2 with 'scaled'), and learns order slowly (tests/test_learning.py's left/right task after 200
#   steps: 52% val top-1 against 90% with 'scaled').
HEAD_INITS = ('official', 'scaled')


def official_trunc_normal(std: float) -> Callable:
  """The official `trunc_normal_`: a standard normal wrapped into (-2, 2) by fmod, times std (not a true truncation)."""

  def init(key, shape, dtype=jnp.float32):
    return jnp.fmod(jax.random.normal(key, shape, dtype), 2.0) * std

  return init


def xavier_in_proj(key, shape, dtype=jnp.float32):
  """torch's xavier_uniform_ of a fused in_proj [3D, D], for our query/key/value kernels [..., D, heads * kv]
  (flax's DenseGeneral draws its kernel flat, then reshapes it to [D, heads, kv])."""
  bound = (6.0 / (4 * shape[-2])) ** 0.5  # fan_in D, fan_out 3D
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def _check_init(init: str) -> None:
  if init not in HEAD_INITS:
    raise ValueError(f'Unknown head_init {init!r}; valid: {", ".join(HEAD_INITS)}')


def _dense(features: int, name: str, axes: tuple, kernel_init: Callable, dtype: Any) -> nn.Dense:
  return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, name=name,
                  kernel_init=_param_init(kernel_init, *axes),
                  bias_init=_param_init(nn.initializers.zeros, axes[-1]))


class MeanP(nn.Module):
  """`meanP`: the mean over frames; no parameters."""

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    del deterministic
    return x.mean(axis=1), x


def _shift_init(key, shape, dtype=jnp.float32):
  """Kernel [3, 1, D] of a depthwise conv that starts as a temporal shift (the official index ranges, verbatim)."""
  del key
  d = shape[-1]
  kernel = np.zeros(shape, np.float32)
  kernel[0, 0, :d // 4] = 1.0  # previous frame
  kernel[1, 0, d // 4:d // 4 + d // 2] = 1.0  # this frame
  kernel[2, 0, -d // 4:] = 1.0  # next frame; -d // 4 is -ceil(d / 4), as in the official code
  return jnp.asarray(kernel, dtype)


class TemporalConv(nn.Module):
  """`Conv_1D`: x + depthwise temporal conv (kernel 3, padding 1, no bias, shift-initialized), then the mean.

  official_reshape reproduces the official `x.view(-1, c, t)` on a [b, t, c] tensor: a reshape, not a transpose, so
  the conv runs over a scrambled frame-channel layout. Only for official Conv_1D checkpoints, whose weights were
  trained that way; new training should keep the default (a real temporal conv).
  """
  official_reshape: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    del deterministic
    b, t, c = x.shape
    h = x.reshape(b, c, t).swapaxes(1, 2) if self.official_reshape else x
    h = nn.Conv(c, (3,), padding=((1, 1),), feature_group_count=c, use_bias=False, dtype=self.dtype,
                param_dtype=jnp.float32, name='shift',
                kernel_init=_param_init(_shift_init, None, None, EMBED))(h)
    tokens = h.astype(x.dtype) + x
    return tokens.mean(axis=1), tokens


class LSTMLayer(nn.Module):
  """One unidirectional torch.nn.LSTM layer (batch first, hidden = input width), scanned over time.

  Kernels are stored input-major ([D, 4D], torch's weight transposed) with torch's gate order i, f, g, o.
  """
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    bound = d ** -0.5  # torch's default LSTM init: U(-1/sqrt(hidden), 1/sqrt(hidden)) for every parameter
    init = nn.initializers.uniform(2 * bound)

    def param(name, shape, *axes):
      return self.param(name, _param_init(lambda k, s, dt: init(k, s, dt) - bound, *axes), shape, jnp.float32)

    w_ih = param('weight_ih_l0', (d, 4 * d), EMBED, MLP)
    w_hh = param('weight_hh_l0', (d, 4 * d), EMBED, MLP)
    b_ih = param('bias_ih_l0', (4 * d,), MLP)
    b_hh = param('bias_hh_l0', (4 * d,), MLP)
    dtype = self.dtype
    gates_x = x.astype(dtype) @ w_ih.astype(dtype) + (b_ih + b_hh).astype(dtype)  # all frames at once

    def step(carry, gx):
      h, c = carry
      i, f, g, o = jnp.split(gx + h @ w_hh.astype(dtype), 4, axis=-1)
      c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
      h = jax.nn.sigmoid(o) * jnp.tanh(c)
      return (h, c), h

    zeros = jnp.zeros((x.shape[0], d), dtype)
    _, hs = jax.lax.scan(step, (zeros, zeros), gates_x.swapaxes(0, 1))
    return hs.swapaxes(0, 1)


class TemporalLSTM(nn.Module):
  """`LSTM`: x + LSTM(x), then the mean."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    del deterministic
    tokens = LSTMLayer(self.dtype, name='lstm_visual')(x).astype(x.dtype) + x
    return tokens.mean(axis=1), tokens


class TemporalTransformer(nn.Module):
  """`Transf`: x + blocks(x + frame position embedding), then the mean.

  The blocks are clip.Transformer's pre-LN residual attention blocks with QuickGELU, as the official
  TemporalTransformer, with its LayerNorm epsilon (1e-12). `head_init`: see HEAD_INITS.
  """
  heads: int  # official: text-tower width // 64
  layers: int = 6
  dtype: Any = jnp.float32
  head_init: str = 'official'
  unroll: int = 1  # blocks per scan iteration (network.scan_unroll)

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    _check_init(self.head_init)
    t = x.shape[1]
    if t > FRAME_POSITIONS:
      raise ValueError(f'Transf has {FRAME_POSITIONS} frame positions; got {t} frames')
    official = self.head_init == 'official'
    pos_std = 0.02 if official else x.shape[-1] ** -0.5
    pos = nn.Embed(FRAME_POSITIONS, x.shape[-1], param_dtype=jnp.float32, name='frame_position_embeddings',
                   embedding_init=_param_init(nn.initializers.normal(pos_std), POS, EMBED))(jnp.arange(t))
    h = x.astype(self.dtype) + pos.astype(self.dtype)
    # init_std None: clip.ResidualAttentionBlock's width-scaled stds.
    h = clip.Transformer(self.layers, self.heads, 'quick_gelu', self.dtype, init_std=0.02 if official else None,
                         ln_epsilon=1e-12, qkv_init=(xavier_in_proj,) * 3 if official else None,
                         unroll=self.unroll, name='transformer')(h, deterministic=deterministic)
    tokens = h.astype(x.dtype) + x
    return tokens.mean(axis=1), tokens


class EncoderLayer(nn.Module):
  """torch.nn.TransformerEncoderLayer with its defaults: post-LN, ReLU, LayerNorm eps 1e-5, and dropout on the
  attention weights, the feed-forward hidden and both residual branches. Returns (x, None) as an `nn.scan` body."""
  num_heads: int = 8
  mlp_dim: int = 2048
  dropout_rate: float = 0.1
  dtype: Any = jnp.float32
  head_init: str = 'official'  # see HEAD_INITS
  layers: int = 6  # of the whole stack, for the 'scaled' output projections

  @nn.compact
  def __call__(self, x, deterministic: bool = True, shared_key=None):
    """shared_key: the one key of every layer's in_proj draw ('official'; only read at init)."""
    def drop(y):
      return nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)

    d = x.shape[-1]
    if self.head_init == 'official':
      # torch.nn.TransformerEncoder deep-copies one layer, then TAggregate re-draws every nn.Linear (out_proj
      # too) with the fmod "trunc normal": in_proj is one xavier draw shared by all layers, the rest per layer.
      in_proj = xavier_in_proj(shared_key, (3, d, d)) if self.is_initializing() else None

      def qkv_init(i):  # flax also calls an init (for its shape only) when the parameter exists: then zeros
        return lambda key, shape, dtype=jnp.float32: jnp.zeros(shape, dtype) if in_proj is None else in_proj[i]

      qkv = tuple(qkv_init(i) for i in range(3))
      out = fc_in = fc_out = official_trunc_normal(0.02)
    else:
      qkv = (nn.initializers.normal(d ** -0.5),) * 3
      out = fc_out = nn.initializers.normal((2 * d * self.layers) ** -0.5)
      fc_in = nn.initializers.normal((2 * d) ** -0.5)
    attn = clip.MultiHeadAttention(self.num_heads, self.dtype, qkv_init=qkv, out_init=out, name='self_attn')(
        x, None, deterministic, self.dropout_rate)
    x = clip.LayerNorm(name='norm1')(x + drop(attn))
    h = drop(jax.nn.relu(_dense(self.mlp_dim, 'linear1', (EMBED, MLP), fc_in, self.dtype)(x)))
    h = _dense(d, 'linear2', (MLP, EMBED), fc_out, self.dtype)(h)
    return clip.LayerNorm(name='norm2')(x + drop(h)), None


class PostLNEncoder(nn.Module):
  """torch.nn.TransformerEncoder(layer, num_layers, norm=LayerNorm): scanned layers, then a final LayerNorm.

  The layers have the official sizes (EncoderLayer's defaults).
  """
  layers: int = 6
  dropout_rate: float = 0.1
  dtype: Any = jnp.float32
  head_init: str = 'official'  # see HEAD_INITS
  unroll: int = 1  # layers per scan iteration (network.scan_unroll)

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    stack = nn.scan(
        EncoderLayer, length=self.layers,
        variable_axes={'params': 0}, split_rngs={'params': True, 'dropout': True},
        in_axes=(nn.broadcast, nn.broadcast), metadata_params={nn.PARTITION_NAME: LAYERS},
        unroll=min(self.unroll, self.layers))
    # One key outside the scan: the same in every layer (EncoderLayer's 'official' in_proj).
    shared_key = self.make_rng('params') if self.is_initializing() else jax.random.PRNGKey(0)
    x, _ = stack(dropout_rate=self.dropout_rate, dtype=self.dtype, head_init=self.head_init, layers=self.layers,
                 name='layers')(x, deterministic, shared_key)
    return clip.LayerNorm(name='norm')(x)


class ClsAggregate(nn.Module):
  """`Transf_cls` (the official TAggregate): [class token; frames] + position embedding -> post-LN encoder.

  pooled is the class token's output; frame_tokens are the frames' outputs (after the final LayerNorm).
  """
  num_frames: int  # the position table has num_frames + 1 rows, so the head only takes this many frames
  dropout_rate: float = 0.1
  dtype: Any = jnp.float32
  head_init: str = 'official'  # see HEAD_INITS
  unroll: int = 1  # encoder layers per scan iteration (network.scan_unroll)

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    _check_init(self.head_init)
    b, t, d = x.shape
    if t != self.num_frames:
      raise ValueError(f'Transf_cls was built for num_frames={self.num_frames}; got {t} frames')
    init = official_trunc_normal(0.02) if self.head_init == 'official' else nn.initializers.normal(d ** -0.5)
    cls = self.param('cls_token', _param_init(init, EMBED), (d,), jnp.float32)
    pos = self.param('pos_embed', _param_init(init, POS, EMBED), (t + 1, d), jnp.float32)
    h = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)), x.astype(jnp.float32)], axis=1) + pos
    h = PostLNEncoder(dropout_rate=self.dropout_rate, dtype=self.dtype, head_init=self.head_init,
                      unroll=self.unroll, name='transformer_enc')(
        h.astype(self.dtype), deterministic)
    h = h.astype(x.dtype)
    return h[:, 0], h[:, 1:]


def make_visual_prompt(sim_header: str, *, num_frames: int, text_heads: int, dtype: Any = jnp.float32,
                       conv_official_reshape: bool = False, init: str = 'official', unroll: int = 1) -> nn.Module:
  """The head for `sim_header`; call it as `head.apply(variables, frames [B, T, D], deterministic=...)`.

  num_frames: T (Transf_cls's position table is sized by it). text_heads: the text tower's width // 64, the head
  count of Transf as in the official code. conv_official_reshape: see TemporalConv.official_reshape. init: how
  Transf and Transf_cls start (HEAD_INITS; the other heads have one init). unroll: layers per iteration of
  Transf's and Transf_cls's layer scans.
  """
  _check_init(init)
  if sim_header == 'meanP':
    return MeanP()
  if sim_header == 'Conv_1D':
    return TemporalConv(conv_official_reshape, dtype)
  if sim_header == 'LSTM':
    return TemporalLSTM(dtype)
  if sim_header == 'Transf':
    return TemporalTransformer(text_heads, dtype=dtype, head_init=init, unroll=unroll)
  if sim_header == 'Transf_cls':
    return ClsAggregate(num_frames, dtype=dtype, head_init=init, unroll=unroll)
  raise ValueError(f'Unknown sim_header {sim_header!r}; valid: {", ".join(SIM_HEADERS)}')
