"""ActionCLIP loss against the official KLLoss formula implemented in PyTorch."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_heads
from actionclip_jax import clip, losses
from tolerance import rounding

# Losses are O(1-10); float32 log-softmax/KL over a batch of 8 rounds at ~1e-6 relative.
RTOL = 1e-5


@pytest.mark.parametrize('labels', [[0, 1, 2, 3, 4, 5, 6, 7], [3, 1, 3, 0, 1, 3, 2, 2], [5] * 8])
def test_matches_official_formula(labels):
  kv, kt = jax.random.split(jax.random.PRNGKey(len(set(labels))))
  video = jax.random.normal(kv, (8, 16))
  text = jax.random.normal(kt, (8, 16))
  logit_scale = jnp.float32(np.log(1 / 0.07))
  labels = jnp.array(labels)
  value = losses.actionclip_loss(video, text, labels, logit_scale)
  video_t, text_t, scale_t = (torch.from_numpy(np.array(a)) for a in (video, text, logit_scale))
  expected = torch_heads.actionclip_loss(video_t, text_t, np.array(labels), scale_t)
  np.testing.assert_allclose(value, expected.item(), rtol=RTOL)


def test_logits_variant_is_the_same_loss():
  video = jax.random.normal(jax.random.PRNGKey(0), (6, 16))
  text = jax.random.normal(jax.random.PRNGKey(1), (6, 16))
  labels = jnp.array([0, 0, 1, 2, 2, 2])
  logits = clip.logits(video, text, 2.0)
  # The same float32 math through another entry point: a 16-term dot and a 6-term log-sum-exp apart, relative.
  np.testing.assert_allclose(losses.actionclip_loss_from_logits(logits, labels),
                             losses.actionclip_loss(video, text, labels, 2.0), rtol=rounding(16 + 6))


def test_loss_prefers_matching_pairs():
  emb = jax.random.normal(jax.random.PRNGKey(0), (6, 16))
  labels = jnp.arange(6)
  matched = losses.actionclip_loss(emb, emb, labels, 3.0)
  shuffled = losses.actionclip_loss(emb, emb[::-1], labels, 3.0)
  assert matched < shuffled
  grads = jax.grad(losses.actionclip_loss, argnums=(0, 1, 3))(emb, emb[::-1], labels, 3.0)
  assert all(np.all(np.isfinite(g)) and np.any(np.asarray(g) != 0) for g in grads)


def test_rejects_logits_that_do_not_match_the_batch():
  with pytest.raises(ValueError, match=r'must be \[batch, batch\] = \(4, 4\) for 4 labels; got \(4, 5\)'):
    losses.actionclip_loss_from_logits(jnp.zeros((4, 5)), jnp.arange(4))
