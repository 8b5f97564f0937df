"""Visual prompts (sim_header): shapes, frame order, gradients, init, and parity with the official PyTorch heads."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_heads
from actionclip_jax.model import heads
from actionclip_jax.weights import convert
from tolerance import rounding

B, T, D, TEXT_HEADS = 2, 6, 32, 2
# float32 parity: the same weights give the same function, so the only difference is float32 rounding in a
# different order of operations (6 blocks deep at most); 1e-5 absolute on O(1) features leaves ~10x headroom.
ATOL = 1e-5


def _frames(seed=0, t=T):
  return jax.random.normal(jax.random.PRNGKey(seed), (B, t, D))


@functools.cache
def _head(sim_header, conv_official_reshape=False):
  return heads.make_visual_prompt(sim_header, num_frames=T, text_heads=TEXT_HEADS,
                                  conv_official_reshape=conv_official_reshape)


@functools.cache
def _apply(sim_header, conv_official_reshape=False):
  """Jitted head.apply (eager flax runs every op of the scanned blocks separately, which is slow)."""
  return jax.jit(_head(sim_header, conv_official_reshape).apply, static_argnames='deterministic')


@functools.cache
def _variables(sim_header):
  """Initial variables for [B, T, D] frames, shared by the tests (compiling an init costs seconds on CPU)."""
  return nn.unbox(jax.jit(_head(sim_header).init)(jax.random.PRNGKey(1), _frames()))


@pytest.mark.parametrize('sim_header', heads.SIM_HEADERS)
def test_shapes_and_pooling(sim_header):
  x = _frames()
  pooled, tokens = _apply(sim_header)(_variables(sim_header), x)
  assert pooled.shape == (B, D) and tokens.shape == (B, T, D)
  assert np.all(np.isfinite(pooled))
  if sim_header != 'Transf_cls':  # Transf_cls pools with its class token, not the mean
    np.testing.assert_allclose(pooled, tokens.mean(axis=1), atol=rounding(T, tokens))  # a T-term mean apart


def test_meanp_ignores_frame_order_and_transf_does_not():
  x = _frames()
  reversed_x = x[:, ::-1]
  meanp = _apply('meanP')
  np.testing.assert_allclose(meanp({}, x)[0], meanp({}, reversed_x)[0], atol=rounding(T, x))  # the mean, reordered
  transf = _apply('Transf')
  variables = _variables('Transf')
  gap = np.abs(transf(variables, x)[0] - transf(variables, reversed_x)[0]).max()
  assert gap > 1e-5  # small with the official init (position embeddings have std 0.02), far above rounding


@pytest.mark.parametrize('sim_header', [h for h in heads.SIM_HEADERS if h != 'meanP'])
def test_gradients_reach_every_parameter(sim_header):
  x = _frames()
  head = _head(sim_header)
  params = _variables(sim_header)['params']
  probe = jax.random.normal(jax.random.PRNGKey(2), (B, T + 1, D))

  def loss(p):
    pooled, tokens = head.apply({'params': p}, x)
    # A random projection: a plain sum would be blind to parameters before a LayerNorm.
    return jnp.sum(pooled * probe[:, 0]) + jnp.sum(tokens * probe[:, 1:])

  grads = jax.tree_util.tree_leaves_with_path(jax.jit(jax.grad(loss))(params))
  dead = [jax.tree_util.keystr(path) for path, g in grads if not np.any(np.asarray(g) != 0)]
  assert not dead, f'no gradient reaches {dead}'


def test_conv1d_starts_as_a_temporal_shift():
  d = 8  # quarters of 2 channels
  x = jax.random.normal(jax.random.PRNGKey(0), (B, T, d))
  head = heads.make_visual_prompt('Conv_1D', num_frames=T, text_heads=1)
  _, tokens = jax.jit(head.apply)(nn.unbox(head.init(jax.random.PRNGKey(1), x)), x)
  zero = jnp.zeros_like(x[:, :1])
  previous = jnp.concatenate([zero, x[:, :-1]], axis=1)
  following = jnp.concatenate([x[:, 1:], zero], axis=1)
  shifted = jnp.concatenate([previous[..., :2], x[..., 2:6], following[..., 6:]], axis=-1)
  np.testing.assert_allclose(tokens, x + shifted, atol=rounding(3 * d, x))  # a 3-tap conv over d channels


def _official_torch_init_(ref, sim_header, seed=0):
  """The official init of `visual_prompt(sim_header)` (ActionCLIP `modules/Visual_Prompt.py`) on our torch twin.

  Transf: `visual_prompt.init_weights` via `self.apply`: nn.Linear / nn.Embedding weights N(0, 0.02), Linear biases
  0; nn.MultiheadAttention's in_proj_weight is a bare Parameter and keeps torch's xavier_uniform (its bias 0).
  Transf_cls (built after that apply): TAggregate's fmod "trunc normal" std 0.02 on pos_embed, cls_token and every
  nn.Linear (out_proj too), biases 0; nn.TransformerEncoder deep-copied one layer, so in_proj is one draw for all.
  """
  torch.manual_seed(seed)
  with torch.no_grad():
    if sim_header == 'Transf':
      for module in ref.modules():
        if isinstance(module, torch.nn.MultiheadAttention):
          torch.nn.init.xavier_uniform_(module.in_proj_weight)
          torch.nn.init.zeros_(module.in_proj_bias)
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
          module.weight.normal_(0.0, 0.02)
        if isinstance(module, torch.nn.Linear) and module.bias is not None:
          module.bias.zero_()
    else:
      agg = ref.transformer
      first = agg.transformer_enc.layers[0].self_attn
      torch.nn.init.xavier_uniform_(first.in_proj_weight)
      for layer in agg.transformer_enc.layers:  # the deep copies
        layer.self_attn.in_proj_weight.copy_(first.in_proj_weight)
        layer.self_attn.in_proj_bias.zero_()
      for p in (agg.pos_embed, agg.cls_token):
        p.normal_().fmod_(2).mul_(0.02)
      for module in agg.modules():
        if isinstance(module, torch.nn.Linear):
          module.weight.normal_().fmod_(2).mul_(0.02)
          module.bias.zero_()
        if isinstance(module, torch.nn.LayerNorm):
          module.weight.fill_(1.0)
          module.bias.zero_()
  return ref


@pytest.mark.parametrize('sim_header', ['Transf', 'Transf_cls'])
def test_official_init_matches_the_official_code_in_distribution(sim_header):
  """Each parameter's std, largest |value| (fmod and xavier bound them) and sharing over layers, against the
  official init of the torch twin, at width 64 (thousands of values per tensor: stds agree to a few %)."""
  d, t, text_heads = 64, 8, 1
  ref = _official_torch_init_(torch_heads.VisualPrompt(sim_header, d, t, text_heads), sim_header)
  theirs = convert.heads_params_from_torch(ref.state_dict(), sim_header, embed_dim=d, num_frames=t,
                                         text_heads=text_heads)
  head = heads.make_visual_prompt(sim_header, num_frames=t, text_heads=text_heads, init='official')
  ours = nn.unbox(jax.jit(head.init)(jax.random.PRNGKey(0), jnp.zeros((1, t, d))))['params']
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(ours), jax.tree_util.tree_leaves(theirs),
                          strict=True):
    name, a, b = jax.tree_util.keystr(path), np.asarray(a), np.asarray(b)
    if b.std() == 0:  # biases, LayerNorms
      np.testing.assert_array_equal(a, b, err_msg=name)
      continue
    assert abs(a.std() / b.std() - 1) < 0.08, (name, a.std(), b.std())
    assert abs(np.abs(a).max() / np.abs(b).max() - 1) < 0.15, (name, np.abs(a).max(), np.abs(b).max())
    if 'layers' in name:  # Transf_cls: shared over layers exactly where torch's deep copy shares
      assert np.array_equal(a[0], a[1]) == np.array_equal(b[0], b[1]), name


def test_scaled_init_stds():
  d = 64
  head = heads.make_visual_prompt('Transf', num_frames=T, text_heads=1, init='scaled')
  params = nn.unbox(jax.jit(head.init)(jax.random.PRNGKey(1), jnp.zeros((1, T, d))))['params']
  block = params['transformer']['resblocks']
  expected = {'frame_position_embeddings': (params['frame_position_embeddings']['embedding'], d ** -0.5),
              'query': (block['attn']['query']['kernel'], d ** -0.5),
              'out_proj': (block['attn']['out_proj']['kernel'], (2 * d * 6) ** -0.5),
              'c_fc': (block['c_fc']['kernel'], (2 * d) ** -0.5),
              'c_proj': (block['c_proj']['kernel'], (2 * d * 6) ** -0.5)}
  for name, (leaf, std) in expected.items():
    assert abs(float(leaf.std()) / std - 1) < 0.05, (name, float(leaf.std()), std)
  assert not np.any(block['c_proj']['bias']) and not np.any(block['attn']['query']['bias'])


def test_unknown_head_init_raises():
  with pytest.raises(ValueError, match="Unknown head_init 'xavier'; valid: official, scaled"):
    heads.make_visual_prompt('Transf', num_frames=T, text_heads=1, init='xavier')


def test_transf_cls_dropout_only_when_not_deterministic():
  x = _frames()
  apply = _apply('Transf_cls')
  variables = _variables('Transf_cls')
  eval_out = apply(variables, x)[0]
  np.testing.assert_array_equal(eval_out, apply(variables, x, deterministic=True)[0])
  train_out = [apply(variables, x, deterministic=False, rngs={'dropout': jax.random.PRNGKey(s)})[0]
               for s in (0, 1)]
  assert np.abs(train_out[0] - eval_out).max() > 1e-3
  assert np.abs(train_out[0] - train_out[1]).max() > 1e-3


def test_bad_configurations_raise():
  with pytest.raises(ValueError, match=r"Unknown sim_header 'transf'; valid: meanP, Conv_1D, LSTM, Transf, "):
    heads.make_visual_prompt('transf', num_frames=T, text_heads=1)
  head = _head('Transf_cls')
  with pytest.raises(ValueError, match='num_frames=6; got 4 frames'):
    jax.eval_shape(head.init, jax.random.PRNGKey(0), _frames(t=4))
  with pytest.raises(ValueError, match='77 frame positions; got 78'):
    jax.eval_shape(_head('Transf').init, jax.random.PRNGKey(0), _frames(t=78))


def _torch_reference(sim_header, official_view=True):
  torch.manual_seed(0)
  ref = torch_heads.VisualPrompt(sim_header, D, T, TEXT_HEADS, official_view=official_view).eval()
  return torch_heads.randomize_(ref)


@pytest.mark.parametrize('sim_header,official_view', [
    ('meanP', True), ('Conv_1D', True), ('Conv_1D', False), ('LSTM', True), ('Transf', True),
    ('Transf_cls', True)])
def test_parity_with_official_pytorch(sim_header, official_view):
  ref = _torch_reference(sim_header, official_view)
  params = convert.heads_params_from_torch(ref.state_dict(), sim_header, embed_dim=D, num_frames=T,
                                         text_heads=TEXT_HEADS)
  x = np.array(_frames(3))
  head = _head(sim_header, official_view)
  expected = jax.eval_shape(head.init, jax.random.PRNGKey(0), x)
  assert jax.tree_util.tree_map(np.shape, {'params': params} if params else {}) == jax.tree_util.tree_map(
      np.shape, nn.unbox(expected))
  pooled, tokens = _apply(sim_header, official_view)({'params': params}, x)
  with torch.no_grad():
    ref_pooled, ref_tokens = ref(torch.from_numpy(x))
  np.testing.assert_allclose(pooled, ref_pooled.numpy(), atol=ATOL, rtol=0)
  np.testing.assert_allclose(tokens, ref_tokens.numpy(), atol=ATOL, rtol=0)


def test_conv1d_official_reshape_differs_from_temporal_conv():
  ref = _torch_reference('Conv_1D')
  params = convert.heads_params_from_torch(ref.state_dict(), 'Conv_1D', embed_dim=D, num_frames=T, text_heads=1)
  x = _frames()
  official = _apply('Conv_1D', True)({'params': params}, x)[0]
  temporal = _apply('Conv_1D')({'params': params}, x)[0]
  assert np.abs(official - temporal).max() > 1e-2


def test_conversion_names_every_bad_key():
  state = dict(_torch_reference('Transf').state_dict())
  del state['transformer.resblocks.3.ln_2.bias']
  state['transformer.resblocks.0.attn.in_proj_weight'] = torch.zeros(3 * D, D + 1)
  state['transformer.resblocks.6.ln_1.weight'] = torch.zeros(D)
  with pytest.raises(convert.CheckpointError) as err:
    convert.heads_params_from_torch(state, 'Transf', embed_dim=D, num_frames=T, text_heads=TEXT_HEADS)
  message = str(err.value)
  assert 'missing keys: transformer.resblocks.3.ln_2.bias |' in message
  assert 'unexpected keys: transformer.resblocks.6.ln_1.weight |' in message
  assert 'transformer.resblocks.0.attn.in_proj_weight: checkpoint (96, 33), model expects (96, 32)' in message


def test_conversion_rejects_another_heads_state_dict():
  state = _torch_reference('LSTM').state_dict()
  with pytest.raises(convert.CheckpointError, match='missing keys: shift.weight') as err:
    convert.heads_params_from_torch(state, 'Conv_1D', embed_dim=D, num_frames=T, text_heads=TEXT_HEADS)
  assert 'unexpected keys: lstm_visual.bias_hh_l0, lstm_visual.bias_ih_l0' in str(err.value)


@pytest.mark.parametrize('sim_header', heads.SIM_HEADERS)
def test_conversion_round_trips(sim_header):
  state = {k: v.numpy() for k, v in _torch_reference(sim_header).state_dict().items()}
  params = convert.heads_params_from_torch(state, sim_header, embed_dim=D, num_frames=T, text_heads=TEXT_HEADS)
  back = convert.to_torch(params, convert.heads_rules(sim_header))
  unused = {convert.FRAME_POSITIONS_KEY} if sim_header not in ('meanP', 'Transf') else set()
  assert set(back) == set(state) - unused
  for key, value in back.items():
    np.testing.assert_array_equal(value, state[key], err_msg=key)
