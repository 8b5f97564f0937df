"""Weighted token-wise interaction (WTI) between text tokens and video frame tokens, and its regularizer.

WTI was introduced by DRL ("Disentangled Representation Learning for Text-Video Retrieval", Wang et al. 2022) and is
the video-text matching of the ActionCLIP follow-up (Connection Science 2024). For a video with frame tokens
v_1..v_T and a text with valid tokens t_1..t_L, with S[l, f] = cos(t_l, v_f):

    text->video = sum_l w_l * max_f S[l, f]      video->text = sum_f u_f * max_l S[l, f]
    score = (text->video + video->text) / 2

w = softmax over the valid tokens of text_weight_fc(t) and u = softmax over frames of video_weight_fc(v); each
weight MLP is D -> D -> 1 with a ReLU and sees the un-normalized features. The score is cosine-like (in [-1, 1]); the
caller multiplies it by exp(logit_scale).

Text tokens are the text tower's outputs at every position (after ln_final and the projection); `text_token_mask`
keeps the start token, the words and the end-of-text token, as DRL does with CLIP's tokenizer. The start token's
output is the same for every text (the tower is causal), so it acts as a learned per-video offset.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from actionclip_jax.model.clip import EMBED, MLP, _param_init


def text_token_mask(token_ids):
  """[N, L] bool: positions 0 .. end-of-text (the largest id, as CLIP pools), i.e. start token, words, end token."""
  eot = jnp.argmax(token_ids, axis=-1)
  return jnp.arange(token_ids.shape[-1]) <= eot[..., None]


def _normalize(x):
  x = x.astype(jnp.float32)
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def _weight_mlp(embed_dim: int, dtype: Any) -> nn.Sequential:
  # DRL initializes these Linear layers N(0, 0.02) with zero biases. The Sequential names them layers_0 / layers_2,
  # as torch's Sequential numbers them 0 / 2.
  def dense(features, axes):
    return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32,
                    kernel_init=_param_init(nn.initializers.normal(0.02), *axes),
                    bias_init=_param_init(nn.initializers.zeros, axes[-1]))

  return nn.Sequential([dense(embed_dim, (EMBED, MLP)), nn.relu, dense(1, (MLP, None))])


class WTI(nn.Module):
  """The two token-weight MLPs (`text_weight_fc`, `video_weight_fc`) and the WTI score."""
  embed_dim: int
  dtype: Any = jnp.float32

  def setup(self):
    self.text_weight_fc = _weight_mlp(self.embed_dim, self.dtype)
    self.video_weight_fc = _weight_mlp(self.embed_dim, self.dtype)

  def text_weights(self, text_tokens, text_mask):
    """[N, L, D], [N, L] -> [N, L] softmax weights, exactly 0 at masked positions."""
    logits = self.text_weight_fc(text_tokens)[..., 0].astype(jnp.float32)
    return jax.nn.softmax(jnp.where(text_mask, logits, -jnp.inf), axis=-1)

  def video_weights(self, video_tokens):
    """[B, T, D] -> [B, T] softmax weights."""
    return jax.nn.softmax(self.video_weight_fc(video_tokens)[..., 0].astype(jnp.float32), axis=-1)

  def __call__(self, video_tokens, text_tokens, text_mask):
    """[B, T, D] video tokens, [N, L, D] text tokens, [N, L] mask -> [B, N] scores (every video x every text)."""
    return wti_similarity(video_tokens, self.video_weights(video_tokens), text_tokens,
                          self.text_weights(text_tokens, text_mask), text_mask)

  def paired(self, video_tokens, text_tokens, text_mask):
    """Weights for a batch of (video i, text i) pairs, for `channel_decorrelation_loss`: ([B, T], [B, L])."""
    return self.video_weights(video_tokens), self.text_weights(text_tokens, text_mask)


def _token_similarity(video_tokens, text_tokens, text_mask):
  """S[b, n, l, f] = cos(text n token l, video b frame f), -inf at masked text positions."""
  s = jnp.einsum('bfd,nld->bnlf', _normalize(video_tokens), _normalize(text_tokens))
  return jnp.where(text_mask[None, :, :, None], s, -jnp.inf)


def wti_similarity(video_tokens, video_weights, text_tokens, text_weights, text_mask):
  """WTI scores [B, N] from tokens and their precomputed weights (see the module docstring for the formula).

  Masked text positions are excluded from the max over tokens by -inf (DRL multiplies them by 0 instead, which
  differs only when every valid token of a text has negative cosine to a frame).
  """
  s = _token_similarity(video_tokens, text_tokens, text_mask)
  # A masked row is all -inf; its weight is exactly 0, so zero it before the product rather than multiply inf by 0.
  text_to_video = jnp.einsum('bnl,nl->bn', jnp.where(text_mask[None], s.max(axis=-1), 0.0), text_weights)
  video_to_text = jnp.einsum('bnf,bf->bn', s.max(axis=-2), video_weights)
  return (text_to_video + video_to_text) / 2


def truncate_text(text, text_mask):
  """Drop the trailing positions no text uses; needs a concrete mask. Returns (text, mask).

  text: the text tower's token features [N, L, D] (its token ids are trimmed before the tower, by
  prompts.trim_padding).
  """
  length = int(np.asarray(text_mask).sum(axis=-1).max())
  if length == text_mask.shape[-1]:
    return text, text_mask
  return text[:, :length], text_mask[:, :length]


@functools.partial(jax.jit, static_argnames=('wti', 'chunk_size'))
def _chunked_scores(wti: WTI, params, video_tokens, text_tokens, text_mask, chunk_size: int):
  n = text_tokens.shape[0]
  variables = {'params': params}
  video_weights = wti.apply(variables, video_tokens, method=WTI.video_weights)

  def score_chunk(i, scores):
    # Slicing in place keeps the text tensor uncopied. The last chunk is moved back to end at n; the texts it
    # shares with the previous chunk are scored twice, to the same values.
    start = jnp.minimum(i * chunk_size, n - chunk_size)
    tokens = jax.lax.dynamic_slice_in_dim(text_tokens, start, chunk_size)
    mask = jax.lax.dynamic_slice_in_dim(text_mask, start, chunk_size)
    weights = wti.apply(variables, tokens, mask, method=WTI.text_weights)
    chunk_scores = wti_similarity(video_tokens, video_weights, tokens, weights, mask)
    return jax.lax.dynamic_update_slice_in_dim(scores, chunk_scores, start, axis=1)

  scores = jnp.zeros((video_tokens.shape[0], n), jnp.float32)
  return jax.lax.fori_loop(0, -(-n // chunk_size), score_chunk, scores)


def wti_scores_chunked(wti: WTI, params, video_tokens, text_tokens, text_mask, *, chunk_size: int = 256):
  """WTI scores [B, N] for evaluation (e.g. B videos against C classes x K templates, N = K * C).

  Same values as `wti.apply({'params': params}, video_tokens, text_tokens, text_mask)`, but text is truncated to
  its longest valid length and scored `chunk_size` texts at a time, so memory is that of the inputs plus one chunk's
  [B, chunk_size, L, T] similarities. Call it outside jit: the truncation reads the mask's values.
  """
  text_tokens, text_mask = truncate_text(text_tokens, text_mask)
  return _chunked_scores(wti, params, video_tokens, text_tokens, jnp.asarray(text_mask, bool),
                         min(chunk_size, text_tokens.shape[0]))


def _masked_standardize(x, mask):
  """Per-channel (x - mean) / std over the rows where mask is set; std unbiased (torch's default)."""
  m = mask[..., None].astype(jnp.float32)
  count = m.sum()
  mean = (x * m).sum(axis=0) / count
  var = (jnp.square(x - mean) * m).sum(axis=0) / (count - 1)
  return (x - mean) * jax.lax.rsqrt(var)


def channel_decorrelation_loss(video_tokens, video_weights, text_tokens, text_weights, text_mask, *,
                               on_diagonal: float = 1.0, off_diagonal: float = 0.06):
  """DRL's channel decorrelation regularization (its default variant, "cdcr 3") for paired (video i, text i).

  Every valid text token is paired with its best-matching frame of its own video, and every frame with its
  best-matching valid token of its own text (argmax of the cosine, no gradient through the choice). All features are
  L2-normalized, then each channel is standardized over the valid rows (z = (x - mean) / std, unbiased std). With B
  pairs, text-token weights w and frame weights u (the WTI softmax weights):

      C_t = sum_{valid tokens r} w_r * z(text_r) z(frame matched to r)^T / B      (D x D)
      C_v = sum_{frames r} u_r * z(frame_r) z(token matched to r)^T / B
      C = (C_t + C_v) / 2
      loss = on_diagonal * sum_i (C_ii - 1)^2 + off_diagonal * sum_{i != j} C_ij^2

  The off-diagonal term decorrelates channels across modalities; the diagonal term keeps matched channels
  correlated. DRL's defaults: on_diagonal 1.0, off_diagonal 0.06, added to the loss with weight 0.001.
  Shapes: video [B, T, D] and [B, T]; text [B, L, D], [B, L] and mask [B, L].
  """
  v = _normalize(video_tokens)
  t = _normalize(text_tokens)
  s = jnp.where(text_mask[:, :, None], jnp.einsum('bld,bfd->blf', t, v), -jnp.inf)
  frame_for_token = jnp.take_along_axis(v, jnp.argmax(s, axis=2)[..., None], axis=1)  # [B, L, D]
  token_for_frame = jnp.take_along_axis(t, jnp.argmax(s, axis=1)[..., None], axis=1)  # [B, T, D]
  d = t.shape[-1]
  frame_mask = jnp.ones(v.shape[:2], bool)

  def correlation(a, b, weights, mask):
    a = _masked_standardize(a.reshape(-1, d), mask.reshape(-1))
    b = _masked_standardize(b.reshape(-1, d), mask.reshape(-1))
    weights = jnp.where(mask, weights, 0.0).reshape(-1)
    return jnp.einsum('rc,rd,r->cd', a, b, weights) / video_tokens.shape[0]

  c = (correlation(t, frame_for_token, text_weights, text_mask)
       + correlation(v, token_for_frame, video_weights, frame_mask)) / 2
  diag = jnp.diagonal(c)
  return on_diagonal * jnp.sum(jnp.square(diag - 1)) + off_diagonal * (jnp.sum(jnp.square(c))
                                                                       - jnp.sum(jnp.square(diag)))
