"""CLIP (ViT image tower + causal text tower) in Flax linen, numerically the OpenAI PyTorch model.

Module and parameter names follow the OpenAI state dict (`visual.conv1`, `ln_pre`, `resblocks`, `ln_post`, `proj`,
`token_embedding`, `ln_final`, `text_projection`, `logit_scale`), so `weights/convert.py` is a rename plus transposes.
Residual blocks are stacked with `nn.scan` (a leading `layers` axis on every block parameter): compile time stays
flat in depth, and the same layout serves remat and sharding. Every parameter carries logical axis names; how those
map to a device mesh is configuration, not model code.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

# Logical axis names used by every parameter (mapped to mesh axes by the trainer's rules).
EMBED, MLP, HEADS, KV, VOCAB, LAYERS, NORM, PROJ, POS = (
    'embed', 'mlp', 'heads', 'kv', 'vocab', 'layers', 'norm', 'proj', 'pos')


def quick_gelu(x):
  return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable] = {'quick_gelu': quick_gelu, 'gelu': lambda x: jax.nn.gelu(x, approximate=False)}

# What a rematerialized block keeps for the backward pass (CLIPConfig.remat). 'full': only its input, the whole
# forward is recomputed; 'dots': the outputs of its weight matmuls (q, k, v, out_proj, c_fc, c_proj: dots without
# batch dimensions), while LayerNorms, attention scores and softmax, the activation and the residual adds are
# recomputed from them.
REMAT_POLICIES: dict[str, Callable | None] = {
    'full': None, 'dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
  """Architecture of a ViT CLIP; the names are those of OpenAI's `build_model`."""
  embed_dim: int
  image_resolution: int
  vision_layers: int
  vision_width: int
  vision_patch_size: int
  context_length: int
  vocab_size: int
  transformer_width: int
  transformer_heads: int
  transformer_layers: int
  vision_heads: int | None = None  # OpenAI: vision_width // 64
  act: str = 'quick_gelu'  # 'quick_gelu' (OpenAI weights) or 'gelu' (some Hugging Face checkpoints)
  dtype: str = 'float32'  # compute dtype; params are always float32
  remat: str = 'none'  # 'none', 'full' or 'dots': what each residual block keeps for the backward pass, see
  # REMAT_POLICIES
  # Blocks per iteration of each tower's scan (>= layers: none left, straight-line code). Unrolling removes the
  # scan's per-block slicing of stacked params and stacking of saved activations, for a longer compile.
  scan_unroll: int = 1
  # Std of the image tower's positional embedding at init; None: OpenAI's vision_width ** -0.5. Only a tower
  # trained from scratch sees it (configs/demo.py says why it raises it).
  vision_position_std: float | None = None
  # exp(logit_scale) at init; None: OpenAI's 1 / 0.07. Only a model trained from scratch sees it; a frozen text
  # tower freezes it too (optim.group_of), so it then stays the temperature of every later fine-tune.
  logit_scale_init: float | None = None
  # ActionCLIP's video options of the image tower (`build_model(tsm=, T=, dropout=, joint=, emb_dropout=)`).
  num_frames: int = 1  # frames per video; fixes the shape of joint's time embedding
  joint: bool = False  # pre-network prompt: all frames' patch tokens in one sequence, plus a time embedding
  tsm: bool = False  # in-network prompt: temporal shift of the patch tokens before every image block
  drop_path: float = 0.0  # stochastic depth + attention dropout, rising linearly to this over the blocks
  emb_dropout: float = 0.0  # dropout after the positional embedding, both towers

  def __post_init__(self):
    if self.vision_heads is None:
      object.__setattr__(self, 'vision_heads', max(1, self.vision_width // 64))
    problems = []
    if self.image_resolution % self.vision_patch_size:
      problems.append(f'image_resolution {self.image_resolution} is not a multiple of '
                      f'vision_patch_size {self.vision_patch_size}')
    if self.vision_width % self.vision_heads:
      problems.append(f'vision_width {self.vision_width} is not divisible by vision_heads {self.vision_heads}')
    if self.transformer_width % self.transformer_heads:
      problems.append(f'transformer_width {self.transformer_width} is not divisible by '
                      f'transformer_heads {self.transformer_heads}')
    if not 0.0 <= self.drop_path < 1.0 or not 0.0 <= self.emb_dropout < 1.0:
      problems.append(f'drop_path {self.drop_path} and emb_dropout {self.emb_dropout} must be in [0, 1)')
    if self.num_frames < 1:
      problems.append(f'num_frames {self.num_frames} must be >= 1')
    if self.vision_position_std is not None and not self.vision_position_std > 0:
      problems.append(f'vision_position_std {self.vision_position_std} must be > 0 (or None)')
    if self.logit_scale_init is not None and not self.logit_scale_init > 0:
      problems.append(f'logit_scale_init {self.logit_scale_init} must be > 0 (or None)')
    if self.remat not in ('none', *REMAT_POLICIES):
      problems.append(f'remat {self.remat!r} is not one of none, {", ".join(REMAT_POLICIES)}')
    if self.act not in ACTIVATIONS:
      problems.append(f'act {self.act!r} is not one of {sorted(ACTIVATIONS)}')
    if problems:
      raise ValueError('Invalid CLIPConfig: ' + '; '.join(problems))

  @property
  def grid_size(self) -> int:
    return self.image_resolution // self.vision_patch_size

  def replace(self, **changes) -> 'CLIPConfig':
    return dataclasses.replace(self, **changes)


def _openai(**fields) -> CLIPConfig:
  return CLIPConfig(context_length=77, vocab_size=49408, transformer_layers=12, **fields)


PRESETS: dict[str, CLIPConfig] = {
    'ViT-B/32': _openai(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
                        transformer_width=512, transformer_heads=8),
    'ViT-B/16': _openai(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
                        transformer_width=512, transformer_heads=8),
    'ViT-L/14': _openai(embed_dim=768, image_resolution=224, vision_layers=24, vision_width=1024,
                        vision_patch_size=14, transformer_width=768, transformer_heads=12),
    'ViT-L/14@336': _openai(embed_dim=768, image_resolution=336, vision_layers=24, vision_width=1024,
                            vision_patch_size=14, transformer_width=768, transformer_heads=12),
    # For CPU tests and smoke runs. Heads follow OpenAI's width // 64 rule, so a tiny model saved in the OpenAI or
    # ActionCLIP layout (where heads are not stored) loads back as the same architecture.
    'tiny': CLIPConfig(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
                       context_length=16, vocab_size=49408, transformer_width=64, transformer_heads=1,
                       transformer_layers=2),
}


def get_preset(name: str, **overrides) -> CLIPConfig:
  if name not in PRESETS:
    raise ValueError(f'Unknown CLIP preset {name!r}; known presets: {", ".join(PRESETS)}')
  return PRESETS[name].replace(**overrides)


def _param_init(init, *axes):
  return nn.with_logical_partitioning(init, axes)


class LayerNorm(nn.Module):
  """LayerNorm (eps 1e-5) computed in float32 whatever the compute dtype, as OpenAI's fp16 subclass does."""
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x):
    dim = x.shape[-1]
    scale = self.param('scale', _param_init(nn.initializers.ones, NORM), (dim,), jnp.float32)
    bias = self.param('bias', _param_init(nn.initializers.zeros, NORM), (dim,), jnp.float32)
    y = x.astype(jnp.float32)
    mean = y.mean(-1, keepdims=True)
    var = jnp.square(y - mean).mean(-1, keepdims=True)
    y = (y - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
    return y.astype(x.dtype)


def dropout(x, rate, rng, per_sample: bool = False):
  """Inverted dropout whose rate may be traced (it varies over a scanned stack of blocks).

  per_sample drops whole samples (stochastic depth): one draw per leading index.
  """
  keep = 1.0 - rate
  shape = x.shape[:1] + (1,) * (x.ndim - 1) if per_sample else x.shape
  mask = jax.random.bernoulli(rng, keep, shape)
  return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros((), x.dtype))


def temporal_shift(x, num_frames: int, fold_div: int = 8):
  """TSM on ViT tokens [B*T, 1 + P, W]: patch tokens take 1/fold_div of their channels from the next frame and
  1/fold_div from the previous one (zeros past the ends); the class token is left alone."""
  cls, patches = x[:, :1], x[:, 1:]
  n, tokens, width = patches.shape
  patches = patches.reshape(n // num_frames, num_frames, tokens, width)
  fold = width // fold_div
  pad = jnp.zeros_like(patches[:, :1])
  from_next = jnp.concatenate([patches[:, 1:], pad], axis=1)[..., :fold]
  from_prev = jnp.concatenate([pad, patches[:, :-1]], axis=1)[..., fold:2 * fold]
  patches = jnp.concatenate([from_next, from_prev, patches[..., 2 * fold:]], axis=-1)
  return jnp.concatenate([cls, patches.reshape(n, tokens, width)], axis=1)


class MultiHeadAttention(nn.Module):
  """torch.nn.MultiheadAttention with the fused in_proj split into query/key/value [embed, heads, kv] kernels."""
  num_heads: int
  dtype: Any = jnp.float32
  init_std: float = 0.02
  out_init_std: float = 0.02
  # Initializers overriding the stds: of the query, key and value kernels (in that order), and of out_proj.
  qkv_init: tuple[Callable, Callable, Callable] | None = None
  out_init: Callable | None = None

  @nn.compact
  def __call__(self, x, mask=None, deterministic: bool = True, dropout_rate=0.0):
    width = x.shape[-1]
    head_dim = width // self.num_heads
    qkv_init = self.qkv_init or (nn.initializers.normal(self.init_std),) * 3

    def proj(name):
      return nn.DenseGeneral(
          (self.num_heads, head_dim), dtype=self.dtype, param_dtype=jnp.float32, name=name,
          kernel_init=_param_init(qkv_init[('query', 'key', 'value').index(name)], EMBED, HEADS, KV),
          bias_init=_param_init(nn.initializers.zeros, HEADS, KV))(x)

    # torch scales the query (bias included) before the product; doing the same keeps float32 parity tight.
    q = proj('query') * jnp.asarray(head_dim ** -0.5, self.dtype)
    k, v = proj('key'), proj('value')
    logits = jnp.einsum('...qhd,...khd->...hqk', q, k).astype(jnp.float32)
    if mask is not None:
      logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    if not deterministic:
      weights = dropout(weights, dropout_rate, self.make_rng('dropout'))
    out = jnp.einsum('...hqk,...khd->...qhd', weights, v)
    return nn.DenseGeneral(
        width, axis=(-2, -1), dtype=self.dtype, param_dtype=jnp.float32, name='out_proj',
        kernel_init=_param_init(self.out_init or nn.initializers.normal(self.out_init_std), HEADS, KV, EMBED),
        bias_init=_param_init(nn.initializers.zeros, EMBED))(out)


class ResidualAttentionBlock(nn.Module):
  """Pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x)). Returns (x, None) to serve as an `nn.scan` body.

  `drop_rate` (traced, one per block) is both the attention dropout and the stochastic-depth rate of the two
  residual branches, as in ActionCLIP. With `shift_frames` > 0 the input is temporally shifted first (TSM).
  """
  num_heads: int
  num_layers: int  # of the whole stack: OpenAI's init scales projections by it
  act: str = 'quick_gelu'
  dtype: Any = jnp.float32
  init_std: float | None = None  # one std for every kernel (ActionCLIP's temporal head); None: OpenAI's stds
  ln_epsilon: float = 1e-5  # ActionCLIP's temporal head uses 1e-12
  shift_frames: int = 0
  qkv_init: tuple[Callable, Callable, Callable] | None = None  # see MultiHeadAttention

  @nn.compact
  def __call__(self, x, mask=None, deterministic: bool = True, drop_rate=0.0):
    width = x.shape[-1]
    if self.init_std is None:
      attn_std = width ** -0.5
      proj_std = width ** -0.5 * (2 * self.num_layers) ** -0.5
      fc_std = (2 * width) ** -0.5
    else:
      attn_std = proj_std = fc_std = self.init_std

    def drop_path(h):
      return h if deterministic else dropout(h, drop_rate, self.make_rng('dropout'), per_sample=True)

    if self.shift_frames:
      x = temporal_shift(x, self.shift_frames)
    x = x + drop_path(MultiHeadAttention(self.num_heads, self.dtype, attn_std, proj_std, self.qkv_init, name='attn')(
        LayerNorm(self.ln_epsilon, name='ln_1')(x), mask, deterministic, drop_rate))
    h = LayerNorm(self.ln_epsilon, name='ln_2')(x)
    h = nn.Dense(4 * width, dtype=self.dtype, param_dtype=jnp.float32, name='c_fc',
                 kernel_init=_param_init(nn.initializers.normal(fc_std), EMBED, MLP),
                 bias_init=_param_init(nn.initializers.zeros, MLP))(h)
    h = ACTIVATIONS[self.act](h)
    h = nn.Dense(width, dtype=self.dtype, param_dtype=jnp.float32, name='c_proj',
                 kernel_init=_param_init(nn.initializers.normal(proj_std), MLP, EMBED),
                 bias_init=_param_init(nn.initializers.zeros, EMBED))(h)
    return x + drop_path(h), None


class Transformer(nn.Module):
  """`layers` residual blocks, scanned: block parameters have a leading `layers` axis.

  drop_path: the last block's stochastic-depth (and attention-dropout) rate; it rises linearly from 0 at the first.
  """
  layers: int
  heads: int
  act: str = 'quick_gelu'
  dtype: Any = jnp.float32
  remat: str = 'none'  # see CLIPConfig.remat
  unroll: int = 1  # blocks per scan iteration, see CLIPConfig.scan_unroll
  init_std: float | None = None  # see ResidualAttentionBlock
  ln_epsilon: float = 1e-5
  drop_path: float = 0.0
  shift_frames: int = 0
  qkv_init: tuple[Callable, Callable, Callable] | None = None  # see MultiHeadAttention

  @nn.compact
  def __call__(self, x, mask=None, deterministic: bool = True):
    block = ResidualAttentionBlock
    if self.remat != 'none':
      block = nn.remat(block, static_argnums=(3,), prevent_cse=False, policy=REMAT_POLICIES[self.remat])
    stack = nn.scan(
        block, length=self.layers,
        variable_axes={'params': 0}, split_rngs={'params': True, 'dropout': True},
        in_axes=(nn.broadcast, nn.broadcast, 0), metadata_params={nn.PARTITION_NAME: LAYERS},
        unroll=min(self.unroll, self.layers))
    rates = jnp.linspace(0.0, self.drop_path, self.layers, dtype=jnp.float32)
    x, _ = stack(self.heads, self.layers, self.act, self.dtype, self.init_std, self.ln_epsilon, self.shift_frames,
                 self.qkv_init, name='resblocks')(x, mask, deterministic, rates)
    return x


class PatchEmbedding(nn.Module):
  """CLIP's conv1 (a bias-free convolution whose stride is its kernel size) as one matmul over flattened patches:
  [N, H, W, 3] -> [N, patches, width], patches row-major over the grid as torch's flatten. The kernel keeps nn.Conv's
  layout [p, p, 3, width] and init. XLA's CPU convolution ran this at a quarter of its matmul rate (BENCHMARKS.md)."""
  width: int
  patch: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images):
    p = self.patch
    kernel = self.param('kernel', _param_init(nn.initializers.lecun_normal(), None, None, None, EMBED),
                        (p, p, images.shape[-1], self.width), jnp.float32)
    n, h, w, c = images.shape
    patches = images.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, -1, p * p * c)
    return patches.astype(self.dtype) @ kernel.reshape(-1, self.width).astype(self.dtype)


class VisionTransformer(nn.Module):
  """CLIP's image tower, on videos: [B, T, H, W, 3] -> [B, T, embed_dim] (one embedding per frame), or
  [B, 1, embed_dim] with `joint` (all frames' patches in one sequence behind a single class token)."""
  config: CLIPConfig

  def setup(self):
    c = self.config
    scale = c.vision_width ** -0.5
    self.conv1 = PatchEmbedding(c.vision_width, c.vision_patch_size, c.dtype)
    self.class_embedding = self.param(
        'class_embedding', _param_init(nn.initializers.normal(scale), EMBED), (c.vision_width,))
    position_std = scale if c.vision_position_std is None else c.vision_position_std
    self.positional_embedding = self.param(
        'positional_embedding', _param_init(nn.initializers.normal(position_std), POS, EMBED),
        (c.grid_size ** 2 + 1, c.vision_width))
    if c.joint:
      self.time_embedding = self.param(
          'time_embedding', _param_init(nn.initializers.normal(scale), POS, EMBED), (c.num_frames, c.vision_width))
    self.ln_pre = LayerNorm()
    self.transformer = Transformer(c.vision_layers, c.vision_heads, c.act, c.dtype, c.remat, c.scan_unroll,
                                   drop_path=c.drop_path, shift_frames=c.num_frames if c.tsm else 0)
    self.ln_post = LayerNorm()
    self.proj = self.param('proj', _param_init(nn.initializers.normal(scale), EMBED, PROJ),
                           (c.vision_width, c.embed_dim))

  def __call__(self, frames, deterministic: bool = True):
    """frames: float [B, T, H, W, 3], CLIP-normalized. Returns [B, T or 1, embed_dim] (not normalized)."""
    c = self.config
    dtype = jnp.dtype(c.dtype)
    batch, num_frames = frames.shape[:2]
    if (c.joint or c.tsm) and num_frames != c.num_frames:
      raise ValueError(f'joint/tsm models are built for num_frames={c.num_frames}, got {num_frames} frames')
    x = self.conv1(frames.reshape(-1, *frames.shape[2:]))
    cls = jnp.broadcast_to(self.class_embedding.astype(dtype), (x.shape[0], 1, x.shape[-1]))
    x = jnp.concatenate([cls, x], axis=1) + self.positional_embedding.astype(dtype)
    if c.joint:
      patches = x[:, 1:].reshape(batch, num_frames, -1, x.shape[-1]) + self.time_embedding[:, None].astype(dtype)
      # Patch-major, frame-minor sequence order, as ActionCLIP's `(b n) t m -> b (n t) m`.
      patches = patches.transpose(0, 2, 1, 3).reshape(batch, -1, x.shape[-1])
      x = jnp.concatenate([x[::num_frames, :1], patches], axis=1)
    if c.emb_dropout and not deterministic:
      x = dropout(x, c.emb_dropout, self.make_rng('dropout'))
    x = self.transformer(self.ln_pre(x), deterministic=deterministic)
    x = self.ln_post(x[:, 0]) @ self.proj.astype(dtype)
    return x.reshape(batch, -1, x.shape[-1])


class CLIP(nn.Module):
  """Both towers and the learned temperature. Use `encode_image` / `encode_text` via `apply(..., method=...)`."""
  config: CLIPConfig

  def setup(self):
    c = self.config
    self.visual = VisionTransformer(c)
    self.transformer = Transformer(c.transformer_layers, c.transformer_heads, c.act, c.dtype, c.remat,
                                   c.scan_unroll, drop_path=c.drop_path)
    self.token_embedding = nn.Embed(
        c.vocab_size, c.transformer_width, param_dtype=jnp.float32,
        embedding_init=_param_init(nn.initializers.normal(0.02), VOCAB, EMBED))
    self.positional_embedding = self.param(
        'positional_embedding', _param_init(nn.initializers.normal(0.01), POS, EMBED),
        (c.context_length, c.transformer_width))
    self.ln_final = LayerNorm()
    self.text_projection = self.param(
        'text_projection', _param_init(nn.initializers.normal(c.transformer_width ** -0.5), EMBED, PROJ),
        (c.transformer_width, c.embed_dim))
    scale = 1 / 0.07 if c.logit_scale_init is None else c.logit_scale_init
    self.logit_scale = self.param('logit_scale', _param_init(nn.initializers.constant(math.log(scale))), ())

  def encode_image(self, images, deterministic: bool = True):
    """images: float [N, H, W, 3], CLIP-normalized -> [N, embed_dim] (not normalized)."""
    return self.visual(images[:, None], deterministic)[:, 0]

  def encode_video(self, frames, deterministic: bool = True):
    """frames: float [B, T, H, W, 3] -> per-frame embeddings [B, T, embed_dim] ([B, 1, embed_dim] with joint)."""
    return self.visual(frames, deterministic)

  def encode_text(self, token_ids, deterministic: bool = True, return_tokens: bool = False):
    """token_ids: int [N, L<=context_length]. Returns [N, embed_dim] pooled at the end-of-text token (argmax id).

    With return_tokens, also every position's features after ln_final and the projection, [N, L, embed_dim].
    """
    dtype = jnp.dtype(self.config.dtype)
    length = token_ids.shape[-1]
    if length > self.config.context_length:
      raise ValueError(f'token_ids have length {length} > context_length {self.config.context_length}')
    x = self.token_embedding(token_ids).astype(dtype) + self.positional_embedding[:length].astype(dtype)
    if self.config.emb_dropout and not deterministic:
      x = dropout(x, self.config.emb_dropout, self.make_rng('dropout'))
    causal = nn.make_causal_mask(token_ids, dtype=jnp.bool_)
    x = self.ln_final(self.transformer(x, causal, deterministic))
    eot = jnp.argmax(token_ids, axis=-1)
    pooled = jnp.take_along_axis(x, eot[:, None, None], axis=1)[:, 0]
    pooled = pooled @ self.text_projection.astype(dtype)
    if return_tokens:
      return pooled, x @ self.text_projection.astype(dtype)
    return pooled

  def __call__(self, frames, token_ids, deterministic: bool = True):
    """Returns (per-frame video embeddings, text embeddings, logit_scale); used for init."""
    return (self.encode_video(frames, deterministic), self.encode_text(token_ids, deterministic),
            self.logit_scale)


@functools.partial(jax.jit, static_argnums=(0,))
def _init(config: CLIPConfig, rng: jax.Array):
  frames = jnp.zeros((1, config.num_frames, config.image_resolution, config.image_resolution, 3), jnp.float32)
  ids = jnp.zeros((1, config.context_length), jnp.int32)
  return CLIP(config).init(rng, frames, ids)['params']


def init_params(config: CLIPConfig, rng: jax.Array, boxed: bool = False):
  """Random params for `config`. boxed=True keeps the `nn.LogicallyPartitioned` wrappers (for sharding)."""
  params = _init(config, rng)
  return params if boxed else nn.unbox(params)


def logits(image_emb, text_emb, logit_scale):
  """CLIP logits: exp(logit_scale) * cos(image, text), [N_image, N_text]."""
  image_emb = image_emb / jnp.linalg.norm(image_emb, axis=-1, keepdims=True)
  text_emb = text_emb / jnp.linalg.norm(text_emb, axis=-1, keepdims=True)
  return jnp.exp(logit_scale) * image_emb @ text_emb.T
