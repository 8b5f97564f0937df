"""The official-recipe switches (docs/fidelity.md, "Differences from the official code"), each against the official
behaviour: PyTorch where it is deterministic, statistics where it is random."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import torch
from flax import traverse_util

import torch_clip
from actionclip_jax.model import clip
from actionclip_jax.weights import convert, pretrained
from actionclip_jax.runs import optim

TINY = {k: getattr(clip.get_preset('tiny'), k) for k in (
    'embed_dim', 'image_resolution', 'vision_layers', 'vision_width', 'vision_patch_size', 'context_length',
    'vocab_size', 'transformer_width', 'transformer_heads', 'transformer_layers')}
LR, WD = 5e-6, 0.2  # the official peak lr and weight decay (configs/k400.py)
RATIO = 2.0  # visual tower lr multiplier, != 1 so that a wrong group shows


def _solver(**overrides):
  return ml_collections.ConfigDict({**dict(lr=LR, weight_decay=WD, betas=(0.9, 0.98), eps=1e-8, ratio=RATIO,
                                          f_ratio=10.0, clip_gradient=0.0), **overrides})


def _network():
  return ml_collections.ConfigDict(dict(fix_text=False, fix_img=False))


def _official_step(model, grads):
  """The official train.py's step on an fp16-converted CLIP: convert_models_to_fp32, AdamW (text, visual x ratio),
  convert_weights."""
  for name, p in model.named_parameters():
    p.grad = torch.from_numpy(np.array(grads[name])).to(p.dtype)
  for p in model.parameters():  # ActionCLIP's utils: convert_models_to_fp32
    p.data = p.data.float()
    p.grad.data = p.grad.data.float()
  visual = {id(p) for p in model.visual.parameters()}
  text = [p for p in model.parameters() if id(p) not in visual]
  opt = torch.optim.AdamW([{'params': text}, {'params': model.visual.parameters(), 'lr': LR * RATIO}],
                          lr=LR, betas=(0.9, 0.98), eps=1e-8, weight_decay=WD)
  opt.step()
  torch_clip.convert_weights_to_fp16(model)


def test_official_fp16_storage_is_one_official_optimizer_step_bit_for_bit():
  torch.manual_seed(0)
  model = torch_clip.convert_weights_to_fp16(torch_clip.CLIP(**TINY))
  state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
  target = pretrained.target_shapes(clip.get_preset('tiny'))
  params = {'clip': convert.to_flax(state, convert.OPENAI_CLIP, target)}
  # The converted set is OpenAI's: rounding what we start from changes nothing.
  jax.tree_util.tree_map(np.testing.assert_array_equal, optim.store(params, 'official_fp16'), params)

  rng = np.random.default_rng(0)
  # Gradients of a few 1e-4, held in fp16 (the official backward pass gives fp16 grads for fp16 params).
  grads = jax.tree_util.tree_map(
      lambda p: (1e-4 * rng.standard_normal(p.shape)).astype(np.float16).astype(np.float32), params)
  tx = optim.make(_solver(), _network(), 0, 100, params)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  ours = jax.jit(lambda p, u: optim.store(optax.apply_updates(p, u), 'official_fp16'))(params, updates)

  _official_step(model, convert.to_torch(grads['clip'], convert.OPENAI_CLIP))
  theirs = model.state_dict()
  ours_torch = convert.to_torch(ours['clip'], convert.OPENAI_CLIP)
  fp16 = [k for k, v in theirs.items() if v.dtype == torch.float16]
  assert len(fp16) > 20 and not any('ln_' in k or 'embedding' in k for k in fp16)
  changed = 0
  for name, want in theirs.items():
    got = ours_torch[name]
    if want.dtype == torch.float16:  # stored in fp16: bit for bit
      np.testing.assert_array_equal(got.astype(np.float16), want.numpy(), err_msg=name)
      np.testing.assert_array_equal(got, got.astype(np.float16).astype(np.float32), err_msg=name)
      changed += int((want.numpy() != state[name].astype(np.float16)).sum())
    else:  # float32 master weights (LayerNorm, embeddings, logit_scale): Adam's float32 rounding apart
      np.testing.assert_allclose(got, want.numpy(), atol=1e-3 * LR * RATIO, rtol=1e-6, err_msg=name)
  total = sum(theirs[k].numel() for k in fp16)
  # The official storage's point: at lr 5e-6 many fp16 weights do not move at all, and many do.
  assert 0.05 * total < changed < 0.95 * total


def test_official_fp16_storage_leaves_heads_and_float32_params_alone():
  params = {'clip': {'ln_final': {'scale': jnp.full((4,), 1 + 1e-6)}, 'logit_scale': jnp.float32(4.6051702),
                     'token_embedding': {'embedding': jnp.full((3, 4), 0.1 + 1e-7)},
                     'text_projection': jnp.full((4, 2), 0.1 + 1e-7),
                     'visual': {'conv1': {'kernel': jnp.full((2, 2), 0.1 + 1e-7)}}},
            'fusion': {'transformer': {'c_fc': {'kernel': jnp.full((4, 4), 0.1 + 1e-7)}}},
            'interaction': {'text_weight_fc': {'layers_0': {'bias': jnp.full((4,), 0.1 + 1e-7)}}}}
  stored = traverse_util.flatten_dict(optim.store(params, 'official_fp16'), sep='/')
  flat = traverse_util.flatten_dict(params, sep='/')
  rounded = {k for k in flat if not np.array_equal(stored[k], flat[k])}
  assert rounded == {'clip/text_projection', 'clip/visual/conv1/kernel'}
  assert optim.store(params, 'float32') is params


def test_train_step_stores_official_fp16_and_logs_the_wti_regularizer():
  """The trainer's step wires both in: after one step CLIP's converted weights are fp16 values and the heads are
  not; with WTI the stats carry the KL loss and the regularizer besides the total."""
  from actionclip_jax.model import video
  from actionclip_jax.runs import train
  arch = clip.get_preset('tiny', num_frames=2, vision_layers=1, transformer_layers=1, vocab_size=64)
  config = video.ActionCLIPConfig(arch, sim_header='meanP', interaction='wti')
  module = video.ActionCLIP(config)
  params = video.init_params(config, jax.random.key(0))
  tx = optim.make(_solver(lr=1e-3), _network(), 0, 10, params)
  table = jnp.asarray([[[62, 5, 63, 0], [62, 7, 9, 63], [62, 63, 0, 0], [62, 3, 4, 63]]])  # 1 template, 4 classes
  step = train.make_train_step(module, tx, table, 1, jnp.float32, cdcr_weight=0.001, weight_storage='official_fp16')
  batch = {'frames': jnp.asarray(np.random.default_rng(0).integers(0, 256, (4, 2, 32, 32, 3), dtype=np.uint8)),
           'label': jnp.arange(4, dtype=jnp.int32)}
  state = {'params': params, 'opt': tx.init(params), 'step': jnp.zeros((), jnp.int32)}
  new, stats = jax.jit(step)(state, batch, jax.random.key(1))
  flat = traverse_util.flatten_dict(new['params'], sep='/')
  for name in ('clip/visual/conv1/kernel', 'clip/text_projection', 'clip/transformer/resblocks/c_fc/kernel'):
    np.testing.assert_array_equal(flat[name], flat[name].astype(np.float16).astype(np.float32), err_msg=name)
  for name in ('clip/token_embedding/embedding', 'interaction/video_weight_fc/layers_0/kernel'):
    assert not np.array_equal(flat[name], flat[name].astype(np.float16).astype(np.float32)), name
  np.testing.assert_allclose(stats['loss'], stats['loss_kl'] + 0.001 * stats['cdcr'], rtol=1e-6)
  assert float(stats['cdcr']) > 0
