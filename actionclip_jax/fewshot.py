"""Few-shot cross-modal adaptation on cached, frozen features (Lin et al. 2023, "Multimodality Helps Unimodality",
as the ActionCLIP follow-up uses it).

A bias-free linear classifier over L2-normalized features, logits = exp(logit_scale) * x @ W^T with a fixed
logit_scale. W starts as the zero-shot classifier (per class, the normalized mean of the normalized text embeddings
of its prompts) and is trained with AdamW and cross-entropy on the K-shot video features of each class plus every
prompt's text embedding as one more example of its class. Each step draws `batch_size` video examples and
`batch_size` text examples, so the two modalities weigh the same whatever their counts.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import optax

CLIP_LOGIT_SCALE = math.log(1 / 0.07)  # CLIP's initial temperature, the fixed scale of the method


@dataclasses.dataclass(frozen=True)
class LinearClassifier:
  weights: jax.Array  # [C, D]
  logit_scale: float = CLIP_LOGIT_SCALE


def _normalize(x):
  x = jnp.asarray(x, jnp.float32)
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def zero_shot_classifier(class_text_emb, logit_scale: float = CLIP_LOGIT_SCALE) -> LinearClassifier:
  """[K, C, D] text embeddings (K prompts per class, the prompts' token-table order) -> the initial classifier."""
  return LinearClassifier(_normalize(_normalize(class_text_emb).mean(axis=0)), logit_scale)


def predict(classifier: LinearClassifier, features) -> jax.Array:
  """[N, D] features -> [N, C] logits (argmax: the predicted class)."""
  return math.exp(classifier.logit_scale) * _normalize(features) @ classifier.weights.T


@functools.partial(jax.jit, static_argnames=('steps', 'batch_size'))
def _train(weights, video, video_labels, text, text_labels, key, scale, learning_rate, weight_decay, *,
           steps: int, batch_size: int):
  optimizer = optax.adamw(learning_rate, weight_decay=weight_decay)

  def loss_fn(w, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(scale * x @ w.T, y).mean()

  def step(carry, step_key):
    w, opt_state = carry
    video_key, text_key = jax.random.split(step_key)
    vi = jax.random.randint(video_key, (batch_size,), 0, video.shape[0])
    ti = jax.random.randint(text_key, (batch_size,), 0, text.shape[0])
    x = jnp.concatenate([video[vi], text[ti]])
    y = jnp.concatenate([video_labels[vi], text_labels[ti]])
    loss, grads = jax.value_and_grad(loss_fn)(w, x, y)
    updates, opt_state = optimizer.update(grads, opt_state, w)
    return (optax.apply_updates(w, updates), opt_state), loss

  (weights, _), losses = jax.lax.scan(step, (weights, optimizer.init(weights)), jax.random.split(key, steps))
  return weights, losses


def fit(video_features, video_labels, class_text_emb, *, steps: int = 300, batch_size: int = 128,
        learning_rate: float = 1e-3, weight_decay: float = 1e-4, seed: int = 0,
        logit_scale: float = CLIP_LOGIT_SCALE) -> LinearClassifier:
  """Train the classifier. video_features [N, D] with int labels [N]; class_text_emb [K, C, D]. Deterministic in seed."""
  video_labels = jnp.asarray(video_labels, jnp.int32)
  num_prompts, num_classes, dim = class_text_emb.shape
  if video_features.shape[0] != video_labels.shape[0] or video_features.shape[-1] != dim:
    raise ValueError(f'video_features {video_features.shape} and labels {video_labels.shape} do not fit text '
                     f'embeddings {class_text_emb.shape}')
  init = zero_shot_classifier(class_text_emb, logit_scale)
  text = _normalize(class_text_emb).reshape(-1, dim)
  text_labels = jnp.tile(jnp.arange(num_classes, dtype=jnp.int32), num_prompts)
  weights, _ = _train(init.weights, _normalize(video_features), video_labels, text, text_labels,
                      jax.random.PRNGKey(seed), math.exp(logit_scale), learning_rate, weight_decay,
                      steps=steps, batch_size=batch_size)
  return LinearClassifier(weights, logit_scale)
