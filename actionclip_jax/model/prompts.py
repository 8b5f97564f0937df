"""ActionCLIP's text prompts: templates, the class token table, training-time sampling and evaluation ensembling.

The token table is template-major, [K templates, C classes, L], the order of the official `utils/Text_Prompt.py`
(all classes of template 0, then of template 1, ...).
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

TEMPLATES: tuple[str, ...] = (
    'a photo of action {}', 'a picture of action {}', 'Human action of {}', '{}, an action', '{} this is an action',
    '{}, a video of action', 'Playing action of {}', '{}', 'Playing a kind of action, {}',
    'Doing a kind of action, {}', 'Look, the human is {}', 'Can you recognize the action of {}?',
    'Video classification of {}', 'A video of {}', 'The man is {}', 'The woman is {}')


def class_token_ids(classnames: Sequence[str], templates: Sequence[str] = TEMPLATES, context_length: int = 77,
                    tokenize: Callable[..., np.ndarray] | None = None) -> np.ndarray:
  """int32 [K, C, context_length]: row [k, c] is the tokens of templates[k].format(classnames[c]).

  tokenize defaults to the OpenAI CLIP tokenizer (`actionclip_jax.model.tokenizer.tokenize`).
  """
  if tokenize is None:
    from actionclip_jax.model.tokenizer import tokenize  # pylint: disable=import-outside-toplevel
  bad = [t for t in templates if t.count('{}') != 1]
  if bad:
    raise ValueError(f'Each template needs exactly one "{{}}" for the class name; these do not: {bad}')
  texts = [template.format(name) for template in templates for name in classnames]
  ids = np.asarray(tokenize(texts, context_length=context_length), np.int32)
  return ids.reshape(len(templates), len(classnames), context_length)


def trim_padding(ids) -> np.ndarray:
  """Token ids [..., L] without the trailing positions that follow every text's end-of-text token (its largest id).

  The text tower is causal and pools at that token, so its outputs at the kept positions, and the pooled embedding,
  do not change, and the tower's cost falls with L: 'passing American football (not in game)' under the 16
  templates needs 16 of CLIP's 77 positions.
  """
  ids = np.asarray(ids)
  return ids[..., :int(ids.argmax(axis=-1).max()) + 1]


def sample_text_ids(key: jax.Array, labels: jax.Array, table: jax.Array) -> jax.Array:
  """Training: one uniformly drawn template per sample, as the official train.py. [K, C, L], int [B] -> [B, L]."""
  templates = jax.random.randint(key, labels.shape, 0, table.shape[0])
  return table[templates, labels]


def template_ensemble_probs(scores: jax.Array, scale: float = 100.0) -> jax.Array:
  """Evaluation: [B, K, C] cosine-like scores -> [B, C] class probabilities.

  As the official test.py `validate`: similarity = 100 * cos(video, every template of every class), a softmax over
  the classes of each template, then the mean over templates (a fixed 100, not the learned logit scale).
  """
  return jax.nn.softmax(scale * scores.astype(jnp.float32), axis=-1).mean(axis=1)


def zero_shot_probs(video_emb: jax.Array, class_text_emb: jax.Array, scale: float = 100.0) -> jax.Array:
  """[B, D] video embeddings, [K, C, D] text embeddings of the token table -> [B, C] probabilities."""
  video_emb = video_emb / jnp.linalg.norm(video_emb, axis=-1, keepdims=True)
  class_text_emb = class_text_emb / jnp.linalg.norm(class_text_emb, axis=-1, keepdims=True)
  return template_ensemble_probs(jnp.einsum('bd,kcd->bkc', video_emb, class_text_emb), scale)
