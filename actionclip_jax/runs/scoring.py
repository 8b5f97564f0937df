"""How a model scores videos against class prompts, for evaluation and `predict` alike.

As the official test.py: every text encoded once (`encode_texts`), each video view encoded (`video_repr`), their
cosine (or WTI) scores (`scores`), and probabilities as 100 x score, a softmax over the classes per view and
template, then the mean over templates and views (`subset_probs`).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from actionclip_jax.model import interaction, prompts, video
from data_pipelines import augment

TEXT_CHUNK = 256  # texts encoded per call: bounds the text tower's activations
SCALE = 100.0  # the official test's fixed logit scale


def encode_texts(module: video.ActionCLIP, params, ids: np.ndarray):
  """(pooled [N, D], tokens [N, L', D], mask [N, L']) for every text, with L' the longest valid length."""
  ids = prompts.trim_padding(ids)
  mask = np.asarray(interaction.text_token_mask(ids))
  apply = _encode_text_fn(module)
  padded = -len(ids) % TEXT_CHUNK
  chunks = np.concatenate([ids, np.zeros((padded, ids.shape[1]), ids.dtype)]).reshape(-1, TEXT_CHUNK, ids.shape[1])
  pooled, tokens = zip(*(apply(params, jnp.asarray(c)) for c in chunks))
  n = len(ids)
  return jnp.concatenate(pooled)[:n], jnp.concatenate(tokens)[:n], jnp.asarray(mask)


@functools.cache
def _encode_text_fn(module):
  return jax.jit(lambda p, i: module.apply({'params': p}, i, method=video.ActionCLIP.encode_text)[:2])


def video_repr(module, params, frames):
  """frames uint8 [B, V, T, H, W, 3] -> pooled [B*V, D], tokens [B*V, T', D]."""
  frames = augment.normalize(frames.reshape(-1, *frames.shape[2:]), jnp.dtype(module.config.clip.dtype))
  return module.apply({'params': params}, frames, method=video.ActionCLIP.encode_video)


def _normalize(x):
  x = x.astype(jnp.float32)
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def subset_probs(scores, subset) -> np.ndarray:
  """Cosine scores [B, V views, K templates, C] -> probabilities [B, |subset|] among the classes `subset`: the
  softmax of 100 x scores over the subset per view and template, then the mean over templates and views."""
  return np.asarray(jax.nn.softmax(SCALE * jnp.asarray(scores)[..., np.asarray(subset)], axis=-1).mean(axis=(1, 2)))


def scores(module, params, pooled, tokens, texts):
  """Cosine (or WTI) scores [B*V, N] of every video view against every text of `encode_texts`."""
  text_pooled, text_tokens, text_mask = texts
  if module.config.interaction == 'wti':
    return interaction.wti_scores_chunked(interaction.WTI(module.config.clip.embed_dim), params['interaction'],
                                          tokens, text_tokens, text_mask)
  return _normalize(pooled) @ _normalize(text_pooled).T


def sigmoid_probs(scores, subset, logit_scale, bias: float) -> np.ndarray:
  """solver.loss=sigmoid: cosine scores [B, V views, K templates, C] -> each class's own probability [B, |subset|],
  sigmoid(exp(logit_scale) x score + bias) as the loss trained it, then the mean over templates and views."""
  logits = jnp.exp(logit_scale) * jnp.asarray(scores, jnp.float32)[..., np.asarray(subset)] + bias
  return np.asarray(jax.nn.sigmoid(logits).mean(axis=(1, 2)))
