"""ActionCLIP's training loss: KL divergence between video-text logits and soft same-label targets, both ways
(plus, with WTI, a weighted regularizer: `with_regularizer`).

Matches the official `utils/KLLoss.py` as `train.py` uses it: for a batch of B pairs, G[i, k] = 1 when samples i and
k share a label, the target row is softmax(10 * G[i]), and a direction's loss is
`KLDivLoss(size_average=True, reduce=True)(log_softmax(logits, 1), softmax(10 * G, 1)) * B`. That torch reduction is
the mean over all B * B elements, so times B it is the sum of the per-row KL divergences divided by B: the KL
averaged over the batch (torch's 'batchmean'). The loss is the mean of the video->text and text->video terms.

Multi-label videos (Charades: several actions at once) generalize G, not the loss: text k is the prompt of one class
c_k drawn per step from video k's label set, and G[i, k] = 1 when c_k is among video i's labels (`multilabel_targets`).
Each video is positive with its own text (G[i, i] = 1), and with single labels G is the same-label matrix above. G is
no longer symmetric, so the text->video term takes G's transpose: text k's targets are the videos showing c_k.
`sigmoid_loss` is the other multi-label loss: binary cross-entropy of each video against every class's prompt.
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

  `labels`: int [B], one class a video (multi-label videos: `actionclip_loss_from_targets` with
  `multilabel_targets`). For the global interaction use `actionclip_loss`; for WTI pass exp(logit_scale) * WTI scores.
  """
  # G is symmetric here, so both terms use the same targets, as the official code does.
  return actionclip_loss_from_targets(logits_per_video, labels[:, None] == labels[None, :])


def multilabel_targets(labels, text_classes):
  """G [B, B] for multi-hot `labels` bool [B, C] and the class of each video's drawn text, int [B]:
  G[i, k] = labels[i, text_classes[k]]."""
  return jnp.take_along_axis(labels, jnp.broadcast_to(text_classes[None, :], labels.shape[:1] * 2), axis=1)


def actionclip_loss_from_targets(logits_per_video, positives):
  """The KL loss for [B, B] logits and positives G [B, B] (bool; row i: the texts video i matches)."""
  logits_per_video = jnp.asarray(logits_per_video, jnp.float32)
  b = positives.shape[0]
  if logits_per_video.shape != (b, b):
    raise ValueError(f'logits_per_video must be [batch, batch] = {(b, b)} for {b} videos; '
                     f'got {logits_per_video.shape}')
  g = positives.astype(jnp.float32)
  return (_kl_to_soft_labels(logits_per_video, 10 * g) + _kl_to_soft_labels(logits_per_video.T, 10 * g.T)) / 2


def sigmoid_loss(logits, labels):
  """Binary cross-entropy of logits [B, C] (each video against every class's prompt) with multi-hot labels [B, C]:
  summed over the classes, averaged over the batch (a video's C independent yes/no questions, as SigLIP sums its
  pairs), so its size does not shrink with the class count the way a mean over all B x C terms would."""
  logits = jnp.asarray(logits, jnp.float32)
  if logits.shape != labels.shape:
    raise ValueError(f'logits {logits.shape} and labels {labels.shape} must both be [batch, classes]')
  y = labels.astype(jnp.float32)
  # -y log sigmoid(x) - (1 - y) log sigmoid(-x), written as softplus for stability.
  return (jax.nn.softplus(logits) - y * logits).sum() / logits.shape[0]


def actionclip_loss(video_emb, text_emb, labels, logit_scale):
  """video_emb, text_emb: [B, D] (not normalized); labels: int [B]; logit_scale: the log temperature parameter."""
  return actionclip_loss_from_logits(clip.logits(video_emb, text_emb, logit_scale), labels)


def with_regularizer(loss, regularizer, weight: float):
  """The training loss with a weighted regularizer (WTI: DRL's channel decorrelation, weight 0.001); weight 0 is
  the loss itself, exactly."""
  return loss + weight * regularizer if weight else loss
