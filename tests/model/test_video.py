"""The ActionCLIP video model: official checkpoints load and give the official numbers; every sim_header,
joint, TSM and WTI wire up, and gradients reach every trainable parameter.

Tolerance: 1e-5 max abs error in float32 (see test_pretrained.py for why).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_actionclip
from actionclip_jax.model import clip, video
from actionclip_jax import CheckpointError, load_pretrained, tokenize

ARCH = dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=128, vision_patch_size=8,
            context_length=16, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=2)
FRAMES = 4


CASES = [('meanP', False, False), ('Conv_1D', False, False), ('LSTM', False, False), ('Transf', False, False),
         ('Transf_cls', False, False), ('Transf', True, False), ('meanP', False, True)]


@pytest.mark.parametrize('sim_header,tsm,joint', CASES)
def test_official_checkpoint_gives_official_numbers(tmp_path, sim_header, tsm, joint):
  path = tmp_path / 'model_best.pt'
  model, fusion = torch_actionclip.official_checkpoint(ARCH, path, sim_header, tsm, joint)
  loaded = load_pretrained(path, num_frames=FRAMES)
  assert isinstance(loaded, video.PretrainedActionCLIP)
  assert (loaded.config.sim_header, loaded.config.clip.tsm, loaded.config.clip.joint) == (sim_header, tsm, joint)
  rng = np.random.default_rng(0)
  frames = rng.standard_normal((2, FRAMES, 32, 32, 3)).astype(np.float32)
  ids = tokenize(['a video of abseiling', 'The man is juggling balls', 'archery'], context_length=16)
  want_video, want_text, want_logits = torch_actionclip.official_outputs(model, fusion, frames, ids)
  np.testing.assert_allclose(np.asarray(loaded.encode_video(frames)), want_video, atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.asarray(loaded.encode_text(ids)), want_text, atol=1e-5, rtol=0)
  # Logits are exp(logit_scale) x cosine: the 1e-5 bar on the cosines, scaled alike.
  scale = float(np.exp(loaded.params['clip']['logit_scale']))
  np.testing.assert_allclose(np.asarray(loaded.logits(frames, ids)), want_logits, atol=1e-5 * scale, rtol=0)


def test_sim_header_and_frames_must_agree_with_the_checkpoint(tmp_path):
  torch_actionclip.official_checkpoint(ARCH, tmp_path / 'a.pt', 'Transf_cls')
  with pytest.raises(CheckpointError, match="sim_header='LSTM' was asked for, but the fusion weights are 'Transf_cls'"):
    load_pretrained(tmp_path / 'a.pt', sim_header='LSTM')
  with pytest.raises(CheckpointError, match='num_frames=8 was asked for, but the weights are for 4'):
    load_pretrained(tmp_path / 'a.pt', num_frames=8)
  torch_actionclip.official_checkpoint(ARCH, tmp_path / 'tsm.pt', 'meanP', tsm=True)
  with pytest.raises(CheckpointError, match='pass num_frames='):
    load_pretrained(tmp_path / 'tsm.pt')


def test_broken_fusion_weights_name_the_key(tmp_path):
  torch_actionclip.official_checkpoint(ARCH, tmp_path / 'a.pt', 'LSTM')
  ckpt = torch.load(tmp_path / 'a.pt', weights_only=True)
  ckpt['fusion_model_state_dict']['module.lstm_visual.bias_hh_l0'] = torch.zeros(5)
  torch.save(ckpt, tmp_path / 'b.pt')
  with pytest.raises(CheckpointError, match=r'lstm_visual.bias_hh_l0: checkpoint \(5,\), model expects \(128,\)'):
    load_pretrained(tmp_path / 'b.pt', num_frames=FRAMES)


def tiny_config(sim_header, interaction='global', **clip_fields):
  return video.ActionCLIPConfig(clip.get_preset('tiny', num_frames=FRAMES, **clip_fields), sim_header=sim_header,
                                interaction=interaction)


# Heads and WTI have their own per-module gradient tests; these cover the wiring through the whole model, with each
# video option and each interaction. (With joint there is one token per video, so e.g. an LSTM's hidden-to-hidden
# weights rightly get no gradient: joint is paired with a head that has none such.)
@pytest.mark.parametrize('sim_header,interaction,fields', [
    ('Transf', 'wti', dict(tsm=True)), ('Transf_cls', 'global', dict(joint=True)), ('LSTM', 'global', {})])
def test_gradients_reach_every_parameter(sim_header, interaction, fields):
  from actionclip_jax.model import losses
  config = tiny_config(sim_header, interaction, **fields)
  params = video.init_params(config, jax.random.key(0))
  frames = jax.random.normal(jax.random.key(1), (3, FRAMES, 32, 32, 3))
  ids = jnp.asarray(tokenize(['a dog', 'a cat running', 'a bird'], context_length=16))
  labels = jnp.asarray([0, 1, 0])

  def loss(p):
    logits = video.ActionCLIP(config).apply({'params': p}, frames, ids)
    return losses.actionclip_loss_from_logits(logits, labels)

  value, grads = jax.jit(jax.value_and_grad(loss))(params)
  assert np.isfinite(value)
  dead = [jax.tree_util.keystr(path) for path, g in jax.tree_util.tree_leaves_with_path(grads)
          if not np.any(np.asarray(g))]
  assert dead == [], dead
  assert set(params) == {'clip', 'fusion'} | ({'interaction'} if interaction == 'wti' else set())


def test_class_probs_average_templates():
  config = tiny_config('meanP')
  model = video.PretrainedActionCLIP(config, video.init_params(config, jax.random.key(0)))
  from actionclip_jax.model import prompts
  table = prompts.class_token_ids(['abseiling', 'archery', 'juggling'], prompts.TEMPLATES[:3], context_length=16)
  frames = np.random.default_rng(0).standard_normal((2, FRAMES, 32, 32, 3)).astype(np.float32)
  probs = np.asarray(model.class_probs(frames, table))
  video_emb = np.asarray(model.encode_video(frames))
  text_emb = np.asarray(model.encode_text(table.reshape(-1, 16))).reshape(3, 3, -1)
  np.testing.assert_allclose(probs, np.asarray(prompts.zero_shot_probs(video_emb, text_emb)), atol=1e-5)
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_invalid_config_is_refused():
  with pytest.raises(ValueError, match="sim_header 'Transformer' is not one of meanP"):
    tiny_config('Transformer')
  with pytest.raises(ValueError, match="interaction 'token'"):
    tiny_config('meanP', 'token')
  with pytest.raises(ValueError, match='Transf has 77 frame positions'):
    video.ActionCLIPConfig(clip.get_preset('tiny', num_frames=78))
