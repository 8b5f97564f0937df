"""The Flax CLIP: presets, logical axes, compute dtype, remat, config validation."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_clip
from actionclip_jax.model import clip
from tolerance import assert_trees_close, rounding

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
    clip.get_preset('tiny', image_resolution=30, vision_heads=3, act='relu6', vision_position_std=0.0,
                    logit_scale_init=0.0, remat=True)
  for part in ('image_resolution 30', 'vision_heads 3', "act 'relu6'", 'vision_position_std 0.0',
               'logit_scale_init 0.0', 'remat True'):
    assert part in str(info.value)


def test_vision_position_std_sets_only_the_positional_embedding_init():
  default = clip.get_preset('tiny')
  for std, want in ((None, default.vision_width ** -0.5), (1.0, 1.0)):
    params = clip.init_params(default.replace(vision_position_std=std), jax.random.key(0))
    table = np.asarray(params['visual']['positional_embedding'])
    # 17 x 64 normal draws: the sample std is within 4 standard errors ((2 n) ** -1/2, about 2%) of `want`.
    assert abs(table.std() / want - 1) < 4 / np.sqrt(2 * table.size)
  reference = clip.init_params(default, jax.random.key(0))
  del params['visual']['positional_embedding'], reference['visual']['positional_embedding']
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, reference)


def test_logit_scale_init_sets_only_the_temperature():
  default = clip.get_preset('tiny')
  reference = clip.init_params(default, jax.random.key(0))
  params = clip.init_params(default.replace(logit_scale_init=100.0), jax.random.key(0))
  np.testing.assert_allclose(np.exp(reference.pop('logit_scale')), 1 / 0.07, rtol=1e-6)  # float32 exp: ulps
  np.testing.assert_allclose(np.exp(params.pop('logit_scale')), 100.0, rtol=1e-6)
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, reference)


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
  forward = jax.jit(lambda cfg, p: clip.CLIP(cfg).apply({'params': p}, images[:, None], ids), static_argnums=0)
  f32, bf16 = forward(config, params), forward(config.replace(dtype='bfloat16'), params)
  for a, b in zip(f32[:2], bf16[:2]):
    assert b.dtype == jnp.bfloat16
    cos = jnp.sum(a * b.astype(jnp.float32), -1) / jnp.linalg.norm(a, axis=-1) / jnp.linalg.norm(b.astype(jnp.float32), axis=-1)
    assert (cos > 0.99).all()
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(params))


@pytest.mark.parametrize('variant', [dict(remat='full', scan_unroll=2), dict(remat='dots')])
def test_remat_and_unrolling_change_nothing_but_memory_and_speed(tiny, variant):
  """Rematerialized blocks, fully or all but their weight matmuls, in an unrolled or scanned stack (the tiny towers
  have 2 blocks), compute the same function."""
  config, params, images, ids = tiny

  def loss(p, cfg):
    img, txt, scale = clip.CLIP(cfg).apply({'params': p}, images[:, None], ids)
    return jnp.sum(clip.logits(img[:, 0], txt, scale) ** 2)

  grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  plain = grad(params, config)
  other = grad(params, config.replace(**variant))
  # Recomputed or unrolled blocks may fuse differently: rounding of one forward and backward pass of the tiny towers
  # (64 channels, up to 17 tokens, 2 samples, 2 blocks), against a skipped, stale or misordered block that changes
  # O(1)%.
  terms = 64 * 17 * 2 * 2
  np.testing.assert_allclose(plain[0], other[0], atol=rounding(terms, plain[0]), rtol=0)
  assert_trees_close(other[1], plain[1], terms)
  # It did unroll: no loop is left in the program.
  assert 'stablehlo.while' in grad.lower(params, config).as_text()
  looped = 'stablehlo.while' in grad.lower(params, config.replace(**variant)).as_text()
  assert looped == ('scan_unroll' not in variant)


def test_remat_modes_keep_less_for_the_backward_pass(tiny):
  """XLA's own count of the compiled gradient's temporaries: 'dots' keeps less than 'none' (not the elementwise
  intermediates), 'full' less than 'dots' (not the matmul outputs either)."""
  config, params, _, _ = tiny
  images = jnp.zeros((16, 1, 32, 32, 3))

  def temporaries(remat):
    def loss(p):
      return jnp.sum(clip.CLIP(config.replace(remat=remat)).apply({'params': p}, images, method='encode_video') ** 2)
    return jax.jit(jax.grad(loss)).lower(params).compile().memory_analysis().temp_size_in_bytes

  none, dots, full = (temporaries(mode) for mode in ('none', 'dots', 'full'))
  assert full < dots < none, (full, dots, none)


def test_text_tokens_pool_at_the_end_token(tiny):
  config, params, _, ids = tiny
  pooled, tokens = clip.CLIP(config).apply({'params': params}, ids, return_tokens=True,
                                          method=clip.CLIP.encode_text)
  assert tokens.shape == (*ids.shape, config.embed_dim)
  np.testing.assert_allclose(pooled, tokens[jnp.arange(2), jnp.argmax(ids, -1)], atol=rounding(64, tokens))
  # Causal: a token's features do not depend on what follows it.
  changed = ids.at[:, -1].set(7)
  _, tokens2 = clip.CLIP(config).apply({'params': params}, changed, return_tokens=True,
                                      method=clip.CLIP.encode_text)
  np.testing.assert_allclose(tokens[:, :-1], tokens2[:, :-1], atol=rounding(64 + 16, tokens))  # width, context


def test_text_longer_than_context_is_refused(tiny):
  config, params, _, _ = tiny
  with pytest.raises(ValueError, match='context_length'):
    clip.CLIP(config).apply({'params': params}, jnp.zeros((1, 17), jnp.int32), method=clip.CLIP.encode_text)


# --- ActionCLIP's video options of the image tower ---

VIDEO_ARCH = dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=128, vision_patch_size=8,
                  context_length=16, vocab_size=300, transformer_width=64, transformer_heads=1, transformer_layers=1)


@pytest.mark.parametrize('option', ['plain', 'tsm', 'joint'])
def test_video_prompts_match_torch(tmp_path, option):
  """Per-frame encoding, TSM (`shift`) and `joint` give the PyTorch reference's numbers with its weights."""
  from actionclip_jax.weights import pretrained
  frames_per_video = 4
  torch.manual_seed(0)
  model = torch_clip.CLIP(**VIDEO_ARCH, T=frames_per_video, tsm=option == 'tsm', joint=option == 'joint').eval()
  torch.save(model.state_dict(), tmp_path / 'clip.pt')
  config, params = pretrained.read_clip(str(tmp_path / 'clip.pt'))
  assert (config.tsm, config.joint) == (option == 'tsm', option == 'joint')
  config = config.replace(num_frames=frames_per_video)
  frames = np.random.default_rng(0).standard_normal((2, frames_per_video, 32, 32, 3)).astype(np.float32)
  ours = clip.CLIP(config).apply({'params': params}, frames, method=clip.CLIP.encode_video)
  with torch.no_grad():
    theirs = model.encode_image(torch.from_numpy(frames.reshape(-1, 32, 32, 3)).permute(0, 3, 1, 2)).numpy()
  assert ours.shape == (2, 1 if option == 'joint' else frames_per_video, 32)
  # 1e-5 float32, as every parity test (see test_pretrained.py).
  np.testing.assert_allclose(np.asarray(ours).reshape(theirs.shape), theirs, atol=1e-5, rtol=0)


def test_temporal_shift_moves_one_eighth_each_way():
  b, t, tokens, width = 2, 3, 5, 16
  x = jnp.arange(b * t * tokens * width, dtype=jnp.float32).reshape(b * t, tokens, width)
  y = np.asarray(clip.temporal_shift(x, t)).reshape(b, t, tokens, width)
  x = np.asarray(x).reshape(b, t, tokens, width)
  np.testing.assert_array_equal(y[:, :, 0], x[:, :, 0])  # class token untouched
  np.testing.assert_array_equal(y[:, :-1, 1:, :2], x[:, 1:, 1:, :2])  # channels 0-1 from the next frame
  np.testing.assert_array_equal(y[:, -1, 1:, :2], 0)
  np.testing.assert_array_equal(y[:, 1:, 1:, 2:4], x[:, :-1, 1:, 2:4])  # channels 2-3 from the previous frame
  np.testing.assert_array_equal(y[:, 0, 1:, 2:4], 0)
  np.testing.assert_array_equal(y[..., 1:, 4:], x[..., 1:, 4:])


def test_frame_count_must_match_a_joint_or_tsm_model():
  config = clip.get_preset('tiny', num_frames=4, tsm=True)
  params = clip.init_params(config, jax.random.key(0))
  with pytest.raises(ValueError, match='num_frames=4, got 3 frames'):
    clip.CLIP(config).apply({'params': params}, jnp.zeros((1, 3, 32, 32, 3)), method=clip.CLIP.encode_video)


def test_dropout_helper_rates():
  x = jnp.ones((4000, 8))
  y = clip.dropout(x, 0.25, jax.random.key(0))
  assert abs(float((y == 0).mean()) - 0.25) < 0.02
  np.testing.assert_allclose(float(y.mean()), 1.0, atol=0.03)  # inverted dropout keeps the expectation
  per_sample = clip.dropout(x, 0.5, jax.random.key(1), per_sample=True)
  rows_zero = (per_sample == 0).all(1)
  assert ((per_sample == 0).any(1) == rows_zero).all()  # whole samples are dropped, never parts
  np.testing.assert_array_equal(clip.dropout(x, 0.0, jax.random.key(2)), x)


def test_dropouts_act_only_in_training():
  config = clip.get_preset('tiny', drop_path=0.3, emb_dropout=0.2)
  params = clip.init_params(config, jax.random.key(0))
  frames = jax.random.normal(jax.random.key(1), (2, 1, 32, 32, 3))
  ids = jnp.asarray([[49406, 320, 1929, 49407] + [0] * 12] * 2)
  model = clip.CLIP(config)
  apply = jax.jit(lambda rng, det: model.apply({'params': params}, frames, ids, det, rngs={'dropout': rng}),
                  static_argnums=1)
  plain = jax.jit(clip.CLIP(config.replace(drop_path=0.0, emb_dropout=0.0)).apply)({'params': params}, frames, ids)
  evaluation = apply(jax.random.key(2), True)
  for a, b in zip(plain[:2], evaluation[:2]):
    np.testing.assert_allclose(a, b, atol=rounding(64 + 17, a))  # the same forward, compiled apart
  train_a, train_b = apply(jax.random.key(2), False), apply(jax.random.key(3), False)
  for a, b, c in zip(train_a[:2], train_b[:2], plain[:2]):
    assert np.isfinite(a).all()
    assert not np.allclose(a, b) and not np.allclose(a, c)
