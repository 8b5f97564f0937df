"""ActionCLIP loss against the official KLLoss formula implemented in PyTorch."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_heads
from actionclip_jax.model import clip, losses
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
  with pytest.raises(ValueError, match=r'must be \[batch, batch\] = \(4, 4\) for 4 videos; got \(4, 5\)'):
    losses.actionclip_loss_from_logits(jnp.zeros((4, 5)), jnp.arange(4))


def test_wti_regularizer_changes_the_training_gradient_and_weight_zero_turns_it_off():
  """train.loss_parts_and_grads adds cdcr_weight x DRL's channel decorrelation loss of the batch's (video i, text i)
  pairs; weight 0 is exactly the KL loss and its gradient."""
  from actionclip_jax.model import interaction, video
  from actionclip_jax.runs import train
  # The smallest model that has every part (one block a tower, a 64-word vocabulary): compiling is the cost here.
  arch = clip.get_preset('tiny', num_frames=2, vision_layers=1, transformer_layers=1, vocab_size=64)
  config = video.ActionCLIPConfig(arch, sim_header='meanP', interaction='wti')
  module = video.ActionCLIP(config)
  params = video.init_params(config, jax.random.key(0))
  frames = jax.random.normal(jax.random.key(1), (4, 2, 32, 32, 3))
  # Start token, words, end token (the largest id, where CLIP pools), padding.
  ids = jnp.asarray([[62, 5, 63, 0], [62, 7, 9, 63], [62, 63, 0, 0], [62, 3, 4, 63]])
  labels = jnp.asarray([0, 1, 2, 3])

  def run(p):
    steps = [train.loss_parts_and_grads(module, p, frames, ids, train.kl_objective(labels), jax.random.key(2),
                                      cdcr_weight=w)
             for w in (0.0, 0.001)]
    video_repr = module.apply({'params': p}, frames, method=module.encode_video)
    _, tokens, mask = module.apply({'params': p}, ids, method=module.encode_text)
    video_w, text_w = module.apply({'params': p}, video_repr[1], tokens, mask,
                                   method=lambda m, *a: m.interaction.paired(*a))
    return steps, interaction.channel_decorrelation_loss(video_repr[1], video_w, tokens, text_w, mask)

  # One compilation for everything (the suite runs on 2 busy cores).
  ((loss0, parts0, g0), (loss1, parts1, g1)), expected = jax.jit(run)(params)
  # Off: the KL loss alone.
  assert float(parts0['cdcr']) == 0.0 and float(loss0) == float(parts0['kl']) == float(parts1['kl'])
  # On: the regularizer of the pairs, weighted, and its gradient reaches CLIP and the WTI weight MLPs.
  assert float(parts1['cdcr']) > 0
  np.testing.assert_allclose(parts1['cdcr'], expected, rtol=1e-5)
  np.testing.assert_allclose(loss1, parts1['kl'] + 0.001 * parts1['cdcr'], rtol=1e-6)
  for part in (('clip', 'text_projection'), ('interaction', 'video_weight_fc', 'layers_0', 'kernel')):
    a, b = g0, g1
    for k in part:
      a, b = a[k], b[k]
    assert np.abs(np.asarray(b) - np.asarray(a)).max() > 1e-6 * np.abs(np.asarray(a)).max(), part


def test_cdcr_weight_defaults_to_drls_with_wti_only():
  from actionclip_jax.runs import train
  from configs import k400
  assert train.cdcr_weight(k400.get_config()) == 0.0
  assert train.cdcr_weight(k400.get_config('wti')) == 0.001
  c = k400.get_config('wti')
  c.network.cdcr_weight = 0.0
  assert train.cdcr_weight(c) == 0.0


# --- Multi-label targets -------------------------------------------------------------------------------------------


def _numpy_multilabel_kl(logits: np.ndarray, labels: np.ndarray, text_classes: np.ndarray) -> float:
  """The loss written out element by element in float64: G[i, k] = 1 when text k's class is one of video i's."""
  b = len(logits)
  g = np.array([[float(labels[i, text_classes[k]]) for k in range(b)] for i in range(b)])

  def kl_rows(x, targets):
    total = 0.0
    for row, t in zip(x, targets):
      p = np.exp(10 * t - np.log(np.exp(10 * t).sum()))
      log_q = row - np.log(np.exp(row).sum())
      total += float((p * (np.log(p) - log_q)).sum())
    return total / b

  return (kl_rows(logits, g) + kl_rows(logits.T, g.T)) / 2


def test_multilabel_kl_matches_numpy():
  rng = np.random.default_rng(0)
  b, c = 8, 5
  labels = rng.random((b, c)) < 0.4
  labels[np.arange(b), rng.integers(c, size=b)] = True  # every video has at least one label
  text_classes = np.array([rng.choice(np.flatnonzero(row)) for row in labels])  # one of its own, as the step draws
  logits = rng.normal(0, 3, (b, b)).astype(np.float32)
  value = losses.actionclip_loss_from_targets(logits, losses.multilabel_targets(jnp.asarray(labels),
                                                                              jnp.asarray(text_classes)))
  expected = _numpy_multilabel_kl(logits.astype(np.float64), labels, text_classes)
  # A b-term log-sum-exp per row of O(10) logits, summed over 2b rows: float32 rounding relative to the sum.
  np.testing.assert_allclose(value, expected, rtol=rounding(4 * b))


def test_multilabel_targets_with_one_label_each_are_the_same_label_loss():
  labels = jnp.array([3, 1, 3, 0, 1, 3, 2, 2])
  logits = jax.random.normal(jax.random.key(0), (8, 8)) * 3
  multi_hot = jax.nn.one_hot(labels, 4) > 0
  # The same float32 operations on the same targets: equal to the bit.
  assert losses.actionclip_loss_from_targets(logits, losses.multilabel_targets(multi_hot, labels)) == \
      losses.actionclip_loss_from_logits(logits, labels)


def test_sigmoid_loss_matches_torch_bce():
  rng = np.random.default_rng(1)
  logits = rng.normal(0, 4, (6, 7)).astype(np.float32)
  labels = rng.random((6, 7)) < 0.3
  value = losses.sigmoid_loss(logits, labels)
  expected = torch.nn.functional.binary_cross_entropy_with_logits(
      torch.from_numpy(logits), torch.from_numpy(labels.astype(np.float32)), reduction='sum').item() / 6
  # 42 O(1-10) terms summed: float32 rounding of the sum, relative.
  np.testing.assert_allclose(value, expected, rtol=rounding(42))
  with pytest.raises(ValueError, match=r'must both be \[batch, classes\]'):
    losses.sigmoid_loss(logits, labels[:, :3])
