"""Text prompts: the template list, the token table's order, training-time sampling and evaluation ensembling."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from actionclip_jax.model import prompts, tokenizer
from tolerance import rounding

CLASSES = ['abseiling', 'playing cello', 'tai chi']


def test_templates_are_the_official_sixteen_in_order():
  assert prompts.TEMPLATES == (
      'a photo of action {}', 'a picture of action {}', 'Human action of {}', '{}, an action',
      '{} this is an action', '{}, a video of action', 'Playing action of {}', '{}',
      'Playing a kind of action, {}', 'Doing a kind of action, {}', 'Look, the human is {}',
      'Can you recognize the action of {}?', 'Video classification of {}', 'A video of {}', 'The man is {}',
      'The woman is {}')


def test_class_token_ids_are_template_major():
  table = prompts.class_token_ids(CLASSES, context_length=20)
  assert table.shape == (16, 3, 20) and table.dtype == np.int32
  for k in (0, 7, 11):
    for c, name in enumerate(CLASSES):
      np.testing.assert_array_equal(table[k, c], tokenizer.tokenize(prompts.TEMPLATES[k].format(name), 20)[0])


def test_templates_are_configurable_and_checked():
  table = prompts.class_token_ids(CLASSES, templates=('{}', 'a video of {}'), context_length=12)
  np.testing.assert_array_equal(table[1, 2], tokenizer.tokenize('a video of tai chi', 12)[0])
  with pytest.raises(ValueError, match='exactly one'):
    prompts.class_token_ids(CLASSES, templates=('no slot',))


def test_trim_padding_keeps_every_position_up_to_the_last_end_token():
  table = prompts.class_token_ids(CLASSES, context_length=30)
  trimmed = prompts.trim_padding(table)
  longest = 'Can you recognize the action of abseiling?'  # the longest text of the table (12 tokens)
  assert trimmed.shape == (16, 3, len(tokenizer.tokenize(longest, 30)[0].nonzero()[0]))
  np.testing.assert_array_equal(trimmed, table[..., :trimmed.shape[-1]])
  assert (table[..., trimmed.shape[-1]:] == 0).all()
  np.testing.assert_array_equal(prompts.trim_padding(trimmed), trimmed)


def test_sample_text_ids_draws_a_template_per_sample_from_the_key():
  table = jnp.arange(16 * 3 * 4).reshape(16, 3, 4)  # row [k, c] = 4 * (3 k + c) + position
  labels = jnp.array([0, 2, 2, 1] * 64)
  ids = prompts.sample_text_ids(jax.random.PRNGKey(0), labels, table)
  assert ids.shape == (256, 4)
  row = np.asarray(ids[:, 0]) // 4
  np.testing.assert_array_equal(row % 3, labels)  # the sample's own class
  assert len(np.unique(row // 3)) == 16  # every template turns up over 256 draws
  np.testing.assert_array_equal(ids, prompts.sample_text_ids(jax.random.PRNGKey(0), labels, table))
  assert np.any(ids != prompts.sample_text_ids(jax.random.PRNGKey(1), labels, table))


def test_zero_shot_probs_follow_official_validate():
  kv, kt = jax.random.split(jax.random.PRNGKey(0))
  video = jax.random.normal(kv, (5, 16))
  text = jax.random.normal(kt, (16, 7, 8 * 2))  # [K, C, D]
  probs = prompts.zero_shot_probs(video, text)
  # Official test.py: text features of all K * C prompts (template-major), 100 * cos, view(b, K, -1), softmax, mean.
  image_features = torch.from_numpy(np.array(video))
  text_features = torch.from_numpy(np.array(text)).reshape(16 * 7, -1)
  image_features = image_features / image_features.norm(dim=-1, keepdim=True)
  text_features = text_features / text_features.norm(dim=-1, keepdim=True)
  similarity = (100.0 * image_features @ text_features.T).view(5, 16, -1).softmax(dim=-1).mean(dim=1)
  # Rounding moves each cosine (a normalization and a 16-term dot) by at most rounding(2 * 16), the logits by 100x
  # that, and a softmax probability by at most half a logit's change. A template-major/class-major mix-up moves
  # probabilities by O(0.1).
  np.testing.assert_allclose(probs, similarity.numpy(), atol=100 * rounding(2 * 16) / 2, rtol=0)
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=rounding(7 + 16))  # 7 classes summed, 16 templates averaged
