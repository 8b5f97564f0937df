"""ActionCLIP's training loss: KL divergence between video-text logits and soft same-label targets, both ways
(plus, with WTI, a weighted regularizer: `with_regularizer`).

Matches the official `utils/KLLoss.py` as `train.py` uses it: for a batch of B pairs, G[i, k] = 1 when samples i and
k share a label, the target row is softmax(10 * G[i]), and a direction's loss is
`KLDivLoss(size_average=True, reduce=True)(log_softmax(logits, 1), softmax(10 * G, 1)) * B`. That torch reduction is
the mean over all B * B elements, so times B it is the sum of the per-row KL divergences divided by B: the KL
averaged over the batch (torch's 'batchmean'). The loss is the mean of the video->text and text->video terms.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from actionclip_jax.model import clip


def _kl_to_soft_labels(logits, soft_label_logits):
  """sum_ij p_ij * (log p_ij - log_softmax(logits)_ij) / rows, with p = softmax(soft_label_logits) per row."""
  log_p = jax.nn.log_softmax(soft_label_logits, axis=1)
  kl = jnp.exp(log_p) * (log_p - jax.nn.log_softmax(logits, axis=1))
  return kl.sum() / logits.shape[0]


def actionclip_loss_from_logits(logits_per_video, labels):
  """The loss for a [B, B] logits matrix (row i: video i against every text; column k: text k).

  For the global interaction use `actionclip_loss`; for WTI pass exp(logit_scale) * WTI scores.
  """
  logits_per_video = jnp.asarray(logits_per_video, jnp.float32)
  b = labels.shape[0]
  if logits_per_video.shape != (b, b):
    raise ValueError(f'logits_per_video must be [batch, batch] = {(b, b)} for {b} labels; '
                     f'got {logits_per_video.shape}')
  same_label = (labels[:, None] == labels[None, :]).astype(jnp.float32)
  # G is symmetric, so the text->video term uses the same targets, as the official code does.
  return (_kl_to_soft_labels(logits_per_video, 10 * same_label)
          + _kl_to_soft_labels(logits_per_video.T, 10 * same_label)) / 2


def actionclip_loss(video_emb, text_emb, labels, logit_scale):
  """video_emb, text_emb: [B, D] (not normalized); labels: int [B]; logit_scale: the log temperature parameter."""
  return actionclip_loss_from_logits(clip.logits(video_emb, text_emb, logit_scale), labels)


def with_regularizer(loss, regularizer, weight: float):
  """The training loss with a weighted regularizer (WTI: DRL's channel decorrelation, weight 0.001); weight 0 is
  the loss itself, exactly."""
  return loss + weight * regularizer if weight else loss
