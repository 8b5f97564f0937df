"""Weighted token-wise interaction: masks, weights, chunked scoring, gradients, and parity with a PyTorch reference."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_heads
from actionclip_jax.model import interaction
from tolerance import rounding

B, T, N, L, D = 3, 5, 7, 9, 32
# float32 parity of the same formula: differences are rounding only (a D-long dot product, a softmax);
# 1e-5 absolute on scores in [-1, 1] (and on the O(10) regularizer, relative) is ~10x above that.
ATOL = 1e-5
# Our formula against itself in another layout: scores in [-1, 1] are a D-term cosine, then a weighted sum over
# L text tokens and a softmax over T frames; a leaked mask or a wrong chunk moves them by O(0.1).
SAME_FORMULA = rounding(D + L + T)


def _inputs(seed=0):
  kv, kt, kl = jax.random.split(jax.random.PRNGKey(seed), 3)
  video = jax.random.normal(kv, (B, T, D))
  text = jax.random.normal(kt, (N, L, D))
  lengths = jax.random.randint(kl, (N,), 2, L + 1)
  lengths = lengths.at[0].set(L)  # one text uses every position
  mask = jnp.arange(L) < lengths[:, None]
  return video, text, mask


@functools.cache
def _model_and_params():
  model = interaction.WTI(D)
  video, text, mask = _inputs()
  return model, nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(1), video, text, mask))['params']


@functools.cache
def _jitted_apply():
  return jax.jit(_model_and_params()[0].apply)


def _scores(params, video, text, mask):
  return _jitted_apply()({'params': params}, video, text, mask)


def test_text_token_mask_runs_from_start_to_end_of_text():
  sot, eot = 49406, 49407
  ids = jnp.array([[sot, 320, 1125, eot, 0, 0], [sot, eot, 0, 0, 0, 0]])
  np.testing.assert_array_equal(interaction.text_token_mask(ids),
                                [[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]])


def test_scores_shape_range_and_padding_invariance():
  model, params = _model_and_params()
  video, text, mask = _inputs()
  scores = _scores(params, video, text, mask)
  assert scores.shape == (B, N)
  assert np.all(np.abs(scores) <= 1 + SAME_FORMULA)
  garbage = jax.random.normal(jax.random.PRNGKey(9), text.shape) * 100
  scrambled = jnp.where(mask[..., None], text, garbage)  # padding may hold anything
  np.testing.assert_allclose(_scores(params, video, scrambled, mask), scores, atol=SAME_FORMULA)
  weights = model.apply({'params': params}, text, mask, method=interaction.WTI.text_weights)
  assert np.all(np.asarray(weights)[~np.asarray(mask)] == 0)
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=rounding(L))


def test_identical_tokens_score_one():
  model, params = _model_and_params()
  video, _, _ = _inputs()
  text = video[:1, :3]  # a text whose tokens are frames of video 0: every token finds itself
  mask = jnp.array([[True, True, True]])
  score = model.apply({'params': params}, video[:1, :3], text, mask)
  np.testing.assert_allclose(score, [[1.0]], atol=SAME_FORMULA)


def _torch_mlps(params):
  """Torch weight MLPs carrying the same weights as the Flax ones."""

  def mlp(p):
    m = torch_heads.weight_mlp(D)
    with torch.no_grad():
      for index, name in ((0, 'layers_0'), (2, 'layers_2')):
        m[index].weight.copy_(torch.from_numpy(np.array(p[name]['kernel']).T))
        m[index].bias.copy_(torch.from_numpy(np.array(p[name]['bias'])))
    return m

  return mlp(params['text_weight_fc']), mlp(params['video_weight_fc'])


def _random_params(params, seed=3):
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree_util.tree_unflatten(tree, [0.2 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])


def test_parity_with_pytorch_reference():
  _, params = _model_and_params()
  params = _random_params(params)  # non-trivial weights, non-zero biases
  video, text, mask = _inputs(1)
  text_fc, video_fc = _torch_mlps(params)
  with torch.no_grad():
    expected = torch_heads.wti_scores(text_fc, video_fc, torch.from_numpy(np.array(video)),
                                      torch.from_numpy(np.array(text)), torch.from_numpy(np.array(mask)))
  np.testing.assert_allclose(_scores(params, video, text, mask), expected.numpy(), atol=ATOL)


@pytest.mark.parametrize('chunk_size', [3, 64])
def test_chunked_scores_equal_direct_scores(chunk_size):
  model, params = _model_and_params()
  video, text, mask = _inputs(2)
  short_mask = mask & (jnp.arange(L) < L - 2)  # no text uses the last two positions: truncation kicks in
  direct = _scores(params, video, text, short_mask)
  chunked = interaction.wti_scores_chunked(model, params, video, text, short_mask, chunk_size=chunk_size)
  assert chunked.shape == (B, N)
  np.testing.assert_allclose(chunked, direct, atol=SAME_FORMULA)


def test_truncate_text_keeps_the_longest_valid_length():
  _, text, mask = _inputs()
  mask = mask & (jnp.arange(L) < 6)
  tokens, kept = interaction.truncate_text(text, mask)
  assert tokens.shape == (N, 6, D) and kept.shape == (N, 6)


def test_gradients_reach_both_weight_mlps():
  model, params = _model_and_params()
  video, text, mask = _inputs()
  grads = jax.jit(jax.grad(lambda p: model.apply({'params': p}, video, text, mask).sum()))(params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.any(np.asarray(g) != 0), jax.tree_util.keystr(path)
    assert np.all(np.isfinite(g))


def test_channel_decorrelation_matches_pytorch_and_trains_weights():
  model, params = _model_and_params()
  params = _random_params(params, seed=4)
  video, text, mask = _inputs(5)
  b = min(B, N)
  text, mask = text[:b], mask[:b]  # paired batch: text i describes video i

  def loss(p, v, t):
    video_w, text_w = model.apply({'params': p}, v, t, mask, method=interaction.WTI.paired)
    return interaction.channel_decorrelation_loss(v, video_w, t, text_w, mask)

  value = jax.jit(loss)(params, video, text)
  video_w, text_w = model.apply({'params': params}, video, text, mask, method=interaction.WTI.paired)
  expected = torch_heads.cdcr_loss(*(torch.from_numpy(np.array(a)) for a in (video, video_w, text, text_w, mask)))
  np.testing.assert_allclose(value, expected.item(), rtol=ATOL)
  grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(params, video, text)
  for g in jax.tree_util.tree_leaves(grads):
    assert np.all(np.isfinite(g)) and np.any(np.asarray(g) != 0)
