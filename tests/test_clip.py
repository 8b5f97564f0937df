"""The Flax CLIP: presets, logical axes, compute dtype, remat, config validation."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_clip
from actionclip_jax import clip

OPENAI_PRESETS = ['ViT-B/32', 'ViT-B/16', 'ViT-L/14', 'ViT-L/14@336']


def count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize('name', OPENAI_PRESETS)
def test_presets_have_the_openai_parameter_count(name):
  config = clip.get_preset(name)
  shapes = jax.eval_shape(lambda: clip.init_params(config, jax.random.key(0)))
  fields = {f: getattr(config, f) for f in ('embed_dim', 'image_resolution', 'vision_layers', 'vision_width',
                                             'vision_patch_size', 'context_length', 'vocab_size',
                                             'transformer_width', 'transformer_heads', 'transformer_layers')}
  with torch.device('meta'):
    reference = torch_clip.CLIP(**fields)
  assert count(shapes) == sum(p.numel() for p in reference.parameters())


def test_unknown_preset_lists_the_known_ones():
  with pytest.raises(ValueError, match='ViT-B/32'):
    clip.get_preset('ViT-H/99')


def test_invalid_config_names_every_problem():
  with pytest.raises(ValueError) as info:
    clip.get_preset('tiny', image_resolution=30, vision_heads=3, act='relu6')
  for part in ('image_resolution 30', 'vision_heads 3', "act 'relu6'"):
    assert part in str(info.value)


def test_every_parameter_has_logical_axes():
  boxed = clip.init_params(clip.get_preset('tiny'), jax.random.key(0), boxed=True)
  leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
  for leaf in leaves:
    assert len(leaf.names) == leaf.value.ndim
  blocks = boxed['visual']['transformer']['resblocks']
  assert blocks['attn']['query']['kernel'].names == ('layers', 'embed', 'heads', 'kv')
  assert blocks['c_fc']['kernel'].value.shape[0] == clip.get_preset('tiny').vision_layers


@pytest.fixture(scope='module')
def tiny():
  config = clip.get_preset('tiny')
  params = clip.init_params(config, jax.random.key(0))
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.standard_normal((2, 32, 32, 3)), jnp.float32)
  ids = jnp.asarray([[49406, 320, 1929, 49407] + [0] * 12, [49406, 320, 2368, 269, 49407] + [0] * 11])
  return config, params, images, ids


def test_bfloat16_compute_keeps_float32_params_and_is_close(tiny):
  config, params, images, ids = tiny
  forward = jax.jit(lambda cfg, p: clip.CLIP(cfg).apply({'params': p}, images, ids), static_argnums=0)
  f32, bf16 = forward(config, params), forward(config.replace(dtype='bfloat16'), params)
  for a, b in zip(f32[:2], bf16[:2]):
    assert b.dtype == jnp.bfloat16
    cos = jnp.sum(a * b.astype(jnp.float32), -1) / jnp.linalg.norm(a, axis=-1) / jnp.linalg.norm(b.astype(jnp.float32), axis=-1)
    assert (cos > 0.99).all()
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(params))


def test_remat_changes_nothing_but_memory(tiny):
  config, params, images, ids = tiny

  def loss(p, cfg):
    img, txt, scale = clip.CLIP(cfg).apply({'params': p}, images, ids)
    return jnp.sum(clip.logits(img, txt, scale) ** 2)

  grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  plain = grad(params, config)
  remat = grad(params, config.replace(remat=True))
  np.testing.assert_allclose(plain[0], remat[0], rtol=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves(plain[1]), jax.tree_util.tree_leaves(remat[1])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_text_tokens_pool_at_the_end_token(tiny):
  config, params, _, ids = tiny
  pooled, tokens = clip.CLIP(config).apply({'params': params}, ids, return_tokens=True,
                                          method=clip.CLIP.encode_text)
  assert tokens.shape == (*ids.shape, config.embed_dim)
  np.testing.assert_allclose(pooled, tokens[jnp.arange(2), jnp.argmax(ids, -1)], atol=1e-6)
  # Causal: a token's features do not depend on what follows it.
  changed = ids.at[:, -1].set(7)
  _, tokens2 = clip.CLIP(config).apply({'params': params}, changed, return_tokens=True,
                                      method=clip.CLIP.encode_text)
  np.testing.assert_allclose(tokens[:, :-1], tokens2[:, :-1], atol=1e-6)


def test_text_longer_than_context_is_refused(tiny):
  config, params, _, _ = tiny
  with pytest.raises(ValueError, match='context_length'):
    clip.CLIP(config).apply({'params': params}, jnp.zeros((1, 17), jnp.int32), method=clip.CLIP.encode_text)
