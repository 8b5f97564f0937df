"""ActionCLIP: CLIP's image tower per frame, a visual prompt fusing the frames, and video-text matching.

Params: {'clip': CLIP params, 'fusion': the visual prompt's, 'interaction': WTI's (interaction='wti' only)}.
Matching is either `global` (cosine of the pooled video and the pooled text embedding, ActionCLIP) or `wti`
(weighted token-wise interaction between frames and text tokens, the Connection Science 2024 follow-up).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from actionclip_jax.model import clip, heads, interaction, prompts

INTERACTIONS = ('global', 'wti')


@dataclasses.dataclass(frozen=True)
class ActionCLIPConfig:
  clip: clip.CLIPConfig  # its num_frames / joint / tsm / drop_path / emb_dropout are the video options
  sim_header: str = 'Transf'
  interaction: str = 'global'
  conv_official_reshape: bool = False  # reproduce the official Conv_1D's reshape (for its checkpoints)
  head_init: str = 'official'  # how Transf / Transf_cls start: heads.HEAD_INITS

  def __post_init__(self):
    problems = []
    if self.sim_header not in heads.SIM_HEADERS:
      problems.append(f'sim_header {self.sim_header!r} is not one of {", ".join(heads.SIM_HEADERS)}')
    if self.interaction not in INTERACTIONS:
      problems.append(f'interaction {self.interaction!r} is not one of {", ".join(INTERACTIONS)}')
    if self.sim_header == 'Transf' and self.clip.num_frames > heads.FRAME_POSITIONS:
      problems.append(f'Transf has {heads.FRAME_POSITIONS} frame positions, num_frames is {self.clip.num_frames}')
    if problems:
      raise ValueError('Invalid ActionCLIPConfig: ' + '; '.join(problems))

  @property
  def num_frames(self) -> int:
    return self.clip.num_frames

  def replace(self, **changes) -> 'ActionCLIPConfig':
    return dataclasses.replace(self, **changes)


class ActionCLIP(nn.Module):
  config: ActionCLIPConfig

  def setup(self):
    c = self.config
    self.clip = clip.CLIP(c.clip)
    self.fusion = heads.make_visual_prompt(
        c.sim_header, num_frames=1 if c.clip.joint else c.clip.num_frames,
        text_heads=max(1, c.clip.transformer_width // 64), dtype=c.clip.dtype,
        conv_official_reshape=c.conv_official_reshape, init=c.head_init, unroll=c.clip.scan_unroll)
    if c.interaction == 'wti':
      self.interaction = interaction.WTI(c.clip.embed_dim, dtype=c.clip.dtype)

  def encode_video(self, frames, deterministic: bool = True):
    """frames [B, T, H, W, 3] -> (pooled [B, D], frame tokens after the prompt [B, T, D]); both un-normalized."""
    return self.fusion(self.clip.encode_video(frames, deterministic), deterministic=deterministic)

  def encode_text(self, token_ids, deterministic: bool = True):
    """token_ids [N, L] -> (pooled [N, D], tokens [N, L, D], valid-token mask [N, L])."""
    pooled, tokens = self.clip.encode_text(token_ids, deterministic, return_tokens=True)
    return pooled, tokens, interaction.text_token_mask(token_ids)

  def similarity(self, video, text):
    """Cosine-like scores [B, N] between `encode_video` and `encode_text` outputs."""
    if self.config.interaction == 'wti':
      return self.interaction(video[1], text[1], text[2])
    return _normalize(video[0]) @ _normalize(text[0]).T

  def __call__(self, frames, token_ids, deterministic: bool = True):
    """Logits exp(logit_scale) * similarity, [B videos, N texts]."""
    video = self.encode_video(frames, deterministic)
    text = self.encode_text(token_ids, deterministic)
    return jnp.exp(self.clip.logit_scale) * self.similarity(video, text)


def _normalize(x):
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _init(config: ActionCLIPConfig, rng: jax.Array, text_length: int):
  c = config.clip
  frames = jnp.zeros((1, c.num_frames, c.image_resolution, c.image_resolution, 3), jnp.float32)
  return ActionCLIP(config).init(rng, frames, jnp.zeros((1, text_length), jnp.int32))['params']


def init_params(config: ActionCLIPConfig, rng: jax.Array, boxed: bool = False):
  """Random params for `config`; boxed=True keeps the logical-partitioning wrappers."""
  params = _init(config, rng, config.clip.context_length)
  return params if boxed else nn.unbox(params)


def param_shapes(config: ActionCLIPConfig):
  return jax.eval_shape(lambda: init_params(config, jax.random.key(0)))


@dataclasses.dataclass
class PretrainedActionCLIP:
  """An ActionCLIP config with its params, and jitted encoders (inference mode)."""
  config: ActionCLIPConfig
  params: Any

  @functools.cached_property
  def module(self) -> ActionCLIP:
    return ActionCLIP(self.config)

  @functools.cached_property
  def _apply(self):
    return jax.jit(lambda params, method, *args: self.module.apply({'params': params}, *args, method=method),
                   static_argnums=1)

  def encode_video(self, frames) -> jax.Array:
    """frames: float32 [B, T, H, W, 3], CLIP-normalized -> pooled video embeddings [B, D] (not normalized)."""
    return self._apply(self.params, ActionCLIP.encode_video, jnp.asarray(frames, jnp.float32))[0]

  def encode_image(self, images) -> jax.Array:
    """images: float32 [N, H, W, 3] -> CLIP image embeddings [N, D] (not normalized)."""
    return self._apply(self.params, _encode_image, jnp.asarray(images, jnp.float32))

  def encode_text(self, token_ids) -> jax.Array:
    """token_ids: int [N, L] -> pooled text embeddings [N, D] (not normalized)."""
    return self._apply(self.params, ActionCLIP.encode_text, jnp.asarray(token_ids, jnp.int32))[0]

  def logits(self, frames, token_ids) -> jax.Array:
    """exp(logit_scale) * similarity (global or WTI): [B videos, N texts]."""
    return self._apply(self.params, ActionCLIP.__call__, jnp.asarray(frames, jnp.float32),
                       jnp.asarray(token_ids, jnp.int32))

  def class_probs(self, frames, class_token_table) -> jax.Array:
    """Template-averaged class probabilities [B, C] for a [K, C, L] token table (see `prompts`)."""
    k, c, length = class_token_table.shape
    ids = jnp.asarray(class_token_table, jnp.int32).reshape(k * c, length)
    scores = self._apply(self.params, _scores, jnp.asarray(frames, jnp.float32), ids)
    return prompts.template_ensemble_probs(scores.reshape(-1, k, c))


def _scores(module: ActionCLIP, frames, token_ids):
  return module.similarity(module.encode_video(frames), module.encode_text(token_ids))


def _encode_image(module: ActionCLIP, images):
  return module.clip.encode_image(images)
