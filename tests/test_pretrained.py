"""Loading PyTorch CLIPs (OpenAI state dict, OpenAI TorchScript archive, Hugging Face directory) gives the PyTorch
numbers; exporting back is bit-exact; broken or foreign checkpoints fail with messages naming the problem.

Tolerance: 1e-5 max abs error in float32. Both sides run the same float32 math in a different order (fused vs
split attention projections, XLA vs ATen reductions), which leaves ~1e-6 differences on O(1) embeddings; 1e-5
is an order above that and far below what any wrong weight, transpose or mask produces (>1e-2).
"""
import json
import pickle
import zipfile

import numpy as np
import pytest
import torch
import transformers

import torch_clip
from actionclip_jax import CheckpointError, export_openai, load_pretrained, pretrained

TOL = 1e-5

# Two architectures that differ in patch size, resolution, widths, heads, depth and context length.
ARCHS = {
    'p8': dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=128, vision_patch_size=8,
               context_length=16, vocab_size=300, transformer_width=64, transformer_heads=1, transformer_layers=2),
    'p16': dict(embed_dim=48, image_resolution=48, vision_layers=3, vision_width=192, vision_patch_size=16,
                context_length=24, vocab_size=500, transformer_width=128, transformer_heads=2, transformer_layers=2),
}


def random_inputs(arch, n=3, seed=0):
  rng = np.random.default_rng(seed)
  res, ctx, vocab = arch['image_resolution'], arch['context_length'], arch['vocab_size']
  images = rng.standard_normal((n, res, res, 3)).astype(np.float32)
  ids = np.zeros((n, ctx), np.int64)
  for row, length in enumerate([ctx, 3, ctx // 2][:n]):  # full length, short, middle
    ids[row, :length] = rng.integers(1, vocab - 1, length)
    ids[row, length - 1] = vocab - 1  # the end-of-text token: the largest id
  return images, ids


def torch_outputs(model, images, ids):
  with torch.no_grad():
    image_t = torch.from_numpy(images).permute(0, 3, 1, 2)
    ids_t = torch.from_numpy(ids)
    if isinstance(model, transformers.CLIPModel):
      out = model(input_ids=ids_t, pixel_values=image_t)
      return out.image_embeds.numpy(), out.text_embeds.numpy(), out.logits_per_image.numpy()
    img, txt = model.encode_image(image_t), model.encode_text(ids_t)
    return img.numpy(), txt.numpy(), model(image_t, ids_t)[0].numpy()


def assert_parity(loaded, model, arch, normalized=False):
  images, ids = random_inputs(arch)
  want_img, want_txt, want_logits = torch_outputs(model, images, ids)
  got_img, got_txt = np.asarray(loaded.encode_image(images)), np.asarray(loaded.encode_text(ids))
  if normalized:  # Hugging Face returns normalized embeddings
    got_img = got_img / np.linalg.norm(got_img, axis=-1, keepdims=True)
    got_txt = got_txt / np.linalg.norm(got_txt, axis=-1, keepdims=True)
  np.testing.assert_allclose(got_img, want_img, atol=TOL, rtol=0)
  np.testing.assert_allclose(got_txt, want_txt, atol=TOL, rtol=0)
  # Logits are scaled by exp(logit_scale) = 1/0.07; relative 1e-5 is the same precision.
  np.testing.assert_allclose(np.asarray(loaded.logits(images, ids)), want_logits, atol=0, rtol=TOL * 10)


def openai_model(arch, seed=0):
  torch.manual_seed(seed)
  return torch_clip.CLIP(**arch).eval()


@pytest.mark.parametrize('name', sorted(ARCHS))
def test_openai_state_dict_parity(tmp_path, name):
  arch = ARCHS[name]
  model = openai_model(arch)
  path = tmp_path / 'clip.pt'
  torch.save(model.state_dict(), path)
  loaded = load_pretrained(path)
  assert loaded.config.vision_patch_size == arch['vision_patch_size']
  assert loaded.config.vision_heads == arch['vision_width'] // 64
  assert loaded.config.transformer_heads == arch['transformer_heads']
  assert loaded.config.context_length == arch['context_length']
  assert_parity(loaded, model, arch)


@pytest.mark.parametrize('name', sorted(ARCHS))
def test_openai_torchscript_archive_parity(tmp_path, name):
  """Emulates a released archive: traced, mixed fp16/fp32 weights, metadata entries."""
  arch = ARCHS[name]
  model = torch_clip.convert_weights_to_fp16(openai_model(arch, seed=1))
  model.register_buffer('input_resolution', torch.tensor(arch['image_resolution']))
  model.register_buffer('context_length', torch.tensor(arch['context_length']))
  model.register_buffer('vocab_size', torch.tensor(arch['vocab_size']))
  dtypes = {p.dtype for p in model.parameters()}
  assert dtypes == {torch.float16, torch.float32}
  images, ids = random_inputs(arch)
  traced = torch.jit.trace(model.float(), (torch.zeros(1, 3, arch['image_resolution'], arch['image_resolution']),
                                            torch.from_numpy(ids[:1])))
  # Tracing needed float32 for CPU math; put the fp16 tensors back as OpenAI ships them.
  with torch.no_grad():
    for name_, p in traced.named_parameters():
      if name_.endswith(('in_proj_weight', 'conv1.weight', 'proj', 'text_projection')):
        p.data = p.data.half()
  path = tmp_path / 'ViT-tiny.pt'
  torch.jit.save(traced, str(path))
  assert pretrained._is_torchscript(str(path))
  loaded = load_pretrained(path)
  # The reference is the archive's weights upcast to float32, which is what loading promises.
  reference = openai_model(arch)
  reference.load_state_dict({k: v.float() for k, v in torch.jit.load(str(path)).state_dict().items()
                             if k not in pretrained.OPENAI_METADATA})
  assert_parity(loaded, reference.eval(), arch)


def hf_model(arch, seed=0):
  torch.manual_seed(seed)
  config = transformers.CLIPConfig(
      text_config=dict(vocab_size=arch['vocab_size'], hidden_size=arch['transformer_width'],
                       intermediate_size=4 * arch['transformer_width'], num_hidden_layers=arch['transformer_layers'],
                       num_attention_heads=arch['transformer_heads'], max_position_embeddings=arch['context_length'],
                       hidden_act='quick_gelu', bos_token_id=1, eos_token_id=2),
      vision_config=dict(hidden_size=arch['vision_width'], intermediate_size=4 * arch['vision_width'],
                         num_hidden_layers=arch['vision_layers'], num_attention_heads=arch['vision_width'] // 64,
                         image_size=arch['image_resolution'], patch_size=arch['vision_patch_size'],
                         hidden_act='quick_gelu'),
      projection_dim=arch['embed_dim'])
  model = transformers.CLIPModel(config).eval()
  with torch.no_grad():
    for p in model.parameters():  # HF initializes LayerNorms to 1/0 and biases to 0: make every tensor count
      p.add_(0.05 * torch.randn_like(p))
  return model


@pytest.mark.parametrize('name', sorted(ARCHS))
def test_hugging_face_safetensors_parity(tmp_path, name):
  arch = ARCHS[name]
  model = hf_model(arch)
  model.save_pretrained(tmp_path)
  assert (tmp_path / 'model.safetensors').exists()
  loaded = load_pretrained(tmp_path)
  assert loaded.config.vision_heads == arch['vision_width'] // 64
  assert_parity(loaded, model, arch, normalized=True)


def test_hugging_face_pytorch_bin_with_position_ids(tmp_path):
  arch = ARCHS['p8']
  model = hf_model(arch, seed=3)
  model.config.to_json_file(tmp_path / 'config.json')
  state_dict = dict(model.state_dict())
  # Older transformers saved these buffers; they are derived data and must be accepted when they are arange.
  state_dict['text_model.embeddings.position_ids'] = torch.arange(arch['context_length'])[None]
  torch.save(state_dict, tmp_path / 'pytorch_model.bin')
  assert_parity(load_pretrained(tmp_path), model, arch, normalized=True)
  state_dict['text_model.embeddings.position_ids'] = torch.zeros(1, arch['context_length'], dtype=torch.long)
  torch.save(state_dict, tmp_path / 'pytorch_model.bin')
  with pytest.raises(CheckpointError, match='text_model.embeddings.position_ids'):
    load_pretrained(tmp_path)


def test_export_round_trip_is_bit_exact(tmp_path):
  arch = ARCHS['p16']
  model = openai_model(arch, seed=2)
  torch.save(model.state_dict(), tmp_path / 'a.pt')
  loaded = load_pretrained(tmp_path / 'a.pt')
  export_openai(loaded.params, tmp_path / 'b.pt')
  exported = torch.load(tmp_path / 'b.pt', weights_only=True)
  original = model.state_dict()
  assert set(exported) == set(original)
  for k, v in original.items():
    assert torch.equal(exported[k], v), k
  reloaded = load_pretrained(tmp_path / 'b.pt')
  for a, b in zip(*(pretrained.jax.tree_util.tree_leaves(m.params) for m in (loaded, reloaded))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The exported file runs in PyTorch and gives our numbers.
  torch_model = openai_model(arch, seed=9)
  torch_model.load_state_dict(exported)
  assert_parity(reloaded, torch_model.eval(), arch)


def test_safetensors_openai_layout(tmp_path):
  from safetensors.torch import save_file
  arch = ARCHS['p8']
  model = openai_model(arch, seed=4)
  save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / 'clip.safetensors')
  assert_parity(load_pretrained(tmp_path / 'clip.safetensors'), model, arch)


def test_overrides_replace_inferred_fields(tmp_path):
  model = openai_model(ARCHS['p8'])
  torch.save(model.state_dict(), tmp_path / 'clip.pt')
  loaded = load_pretrained(tmp_path / 'clip.pt', dtype='bfloat16', remat=True)
  assert loaded.config.dtype == 'bfloat16' and loaded.config.remat
  images, _ = random_inputs(ARCHS['p8'])
  assert loaded.encode_image(images).dtype == np.dtype('bfloat16')


# --- broken and foreign checkpoints ---


@pytest.fixture(scope='module')
def good_state_dict():
  return openai_model(ARCHS['p8']).state_dict()


def save_and_load(path, state_dict):
  torch.save(state_dict, path)
  return load_pretrained(path)


def test_missing_unexpected_and_mis_shaped_keys_are_all_named(tmp_path, good_state_dict):
  sd = dict(good_state_dict)
  del sd['visual.ln_post.bias']
  del sd['transformer.resblocks.1.mlp.c_fc.weight']
  sd['visual.extra_head.weight'] = torch.zeros(3)
  sd['visual.transformer.resblocks.0.attn.in_proj_bias'] = torch.zeros(7)
  with pytest.raises(CheckpointError) as info:
    save_and_load(tmp_path / 'broken.pt', sd)
  message = str(info.value)
  for key in ('visual.ln_post.bias', 'transformer.resblocks.1.mlp.c_fc.weight', 'visual.extra_head.weight',
              'visual.transformer.resblocks.0.attn.in_proj_bias: checkpoint (7,), model expects (384,)'):
    assert key in message


def test_inconsistent_metadata_is_an_error(tmp_path, good_state_dict):
  sd = dict(good_state_dict, context_length=torch.tensor(99))
  with pytest.raises(CheckpointError, match='context_length=99'):
    save_and_load(tmp_path / 'meta.pt', sd)


def test_foreign_files_say_what_is_accepted(tmp_path):
  text = tmp_path / 'notes.pt'
  text.write_text('not a checkpoint')
  with pytest.raises(CheckpointError, match='Accepted: an OpenAI CLIP TorchScript archive'):
    load_pretrained(text)
  # A pickle that would run code on load is refused by weights_only=True, never executed.
  evil = tmp_path / 'evil.pt'
  with open(evil, 'wb') as f:
    pickle.dump(ExecutesOnLoad(), f)
  with pytest.raises(CheckpointError, match='not a readable PyTorch checkpoint'):
    load_pretrained(evil)
  archive = tmp_path / 'random.zip'
  with zipfile.ZipFile(archive, 'w') as z:
    z.writestr('hello.txt', 'hi')
  with pytest.raises(CheckpointError, match='not a readable PyTorch checkpoint'):
    load_pretrained(archive)
  not_dict = tmp_path / 'list.pt'
  torch.save([torch.zeros(2)], not_dict)
  with pytest.raises(CheckpointError, match='holds a list, not a state dict'):
    load_pretrained(not_dict)
  other_model = tmp_path / 'other.pt'
  torch.save({'fc.weight': torch.zeros(2, 2)}, other_model)
  with pytest.raises(CheckpointError, match='missing visual.conv1.weight'):
    load_pretrained(other_model)
  with pytest.raises(FileNotFoundError):
    load_pretrained(tmp_path / 'nothing.pt')


def test_foreign_directories(tmp_path):
  with pytest.raises(CheckpointError, match='without config.json'):
    load_pretrained(tmp_path)
  (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'bert', 'hidden_size': 8}))
  with pytest.raises(CheckpointError, match='not a CLIP config'):
    load_pretrained(tmp_path)


def test_resnet_clip_is_refused_clearly(tmp_path):
  with pytest.raises(CheckpointError, match='ResNet CLIP checkpoints are not supported'):
    save_and_load(tmp_path / 'rn50.pt', {'visual.layer1.0.conv1.weight': torch.zeros(1)})


class ExecutesOnLoad:

  def __reduce__(self):
    return (print, ('this must never run',))
