"""Few-shot cross-modal adaptation on synthetic features."""
import jax
import jax.numpy as jnp
import numpy as np

from actionclip_jax import fewshot
from tolerance import rounding

C, K, SHOTS, D = 20, 16, 8, 64


def _task(seed=0):
  """Text embeddings sit on class anchors; videos mix the anchor with a class direction the text does not know.

  So zero-shot (the text classifier) is weak and a few labelled videos should fix it.
  """
  ka, kb, kt, kv, kq = jax.random.split(jax.random.PRNGKey(seed), 5)
  anchors = jax.random.normal(ka, (C, D))
  visual = jax.random.normal(kb, (C, D))
  text = anchors + 0.5 * jax.random.normal(kt, (K, C, D))

  def videos(key, per_class):
    labels = jnp.repeat(jnp.arange(C), per_class)
    noise = jax.random.normal(key, (C * per_class, D))
    return 0.3 * anchors[labels] + visual[labels] + 1.5 * noise, labels

  train, train_labels = videos(kv, SHOTS)
  test, test_labels = videos(kq, 50)
  return text, train, train_labels, test, test_labels


def _accuracy(classifier, x, y):
  return float(jnp.mean(jnp.argmax(fewshot.predict(classifier, x), -1) == y))


def test_beats_zero_shot_where_text_alone_is_weak():
  text, train, train_labels, test, test_labels = _task()
  zero_shot = _accuracy(fewshot.zero_shot_classifier(text), test, test_labels)
  adapted = _accuracy(fewshot.fit(train, train_labels, text), test, test_labels)
  assert zero_shot < 0.5 < adapted
  assert adapted > zero_shot + 0.3


def test_zero_shot_classifier_is_the_normalized_mean_of_normalized_text():
  text = jax.random.normal(jax.random.PRNGKey(0), (K, C, D))
  weights = fewshot.zero_shot_classifier(text).weights
  unit = text / jnp.linalg.norm(text, axis=-1, keepdims=True)
  mean = unit.mean(0)
  # Unit vectors: two D-term norms and a K-term mean apart.
  np.testing.assert_allclose(weights, mean / jnp.linalg.norm(mean, axis=-1, keepdims=True), atol=rounding(2 * D + K))


def test_deterministic_given_the_seed():
  text, train, train_labels, _, _ = _task()
  first = fewshot.fit(train, train_labels, text, seed=3).weights
  np.testing.assert_array_equal(first, fewshot.fit(train, train_labels, text, seed=3).weights)
  assert np.abs(first - fewshot.fit(train, train_labels, text, seed=4).weights).max() > 1e-4
