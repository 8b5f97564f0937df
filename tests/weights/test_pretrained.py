"""Loading PyTorch CLIPs (OpenAI state dict, OpenAI TorchScript archive, Hugging Face directory) gives the PyTorch
numbers; exporting back is bit-exact; broken or foreign checkpoints fail with messages naming the problem.

Tolerance: 1e-5 max abs error in float32. Both sides run the same float32 math in a different order (fused vs
split attention projections, XLA vs ATen reductions), which leaves ~1e-6 differences on O(1) embeddings; 1e-5
is an order above that and far below what any wrong weight, transpose or mask produces (>1e-2).
"""
import json
import pickle
import traceback
import zipfile

import numpy as np
import pytest
import torch
import transformers

import torch_clip
from untrusted import CreatesFileOnLoad
from actionclip_jax.weights import pretrained
from actionclip_jax import CheckpointError, export_openai, load_pretrained

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
  # Logits are cosines scaled by exp(logit_scale) = 1/0.07: the same 1e-5 bar on the cosines, scaled alike (a
  # relative bar would fail on any logit near zero).
  scale = float(np.exp(loaded.params['logit_scale']))
  np.testing.assert_allclose(np.asarray(loaded.logits(images, ids)), want_logits, atol=TOL * scale, rtol=0)


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
  assert pretrained.sniff(str(path)).name == 'torchscript'
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
  loaded = load_pretrained(tmp_path / 'clip.pt', dtype='bfloat16', remat='full')
  assert loaded.config.dtype == 'bfloat16' and loaded.config.remat == 'full'
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


def test_foreign_checkpoints_say_what_they_hold(tmp_path):
  archive = tmp_path / 'random.zip'
  with zipfile.ZipFile(archive, 'w') as z:
    z.writestr('hello.txt', 'hi')
  with pytest.raises(CheckpointError, match='a zip archive that is not a PyTorch file'):
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


def test_legacy_torch_save_format_still_loads(tmp_path, good_state_dict):
  path = tmp_path / 'legacy.pt'
  torch.save(good_state_dict, path, _use_new_zipfile_serialization=False)
  assert pretrained.sniff(str(path)).name == 'pickle'
  loaded = pretrained.read_checkpoint(str(path))
  assert set(loaded) == set(good_state_dict)
  assert all(torch.equal(loaded[k], v) for k, v in good_state_dict.items())


def write_bytes(path, data: bytes):
  path.write_bytes(data)
  return path


def truncated(path, save):
  save(path)
  data = path.read_bytes()
  return write_bytes(path, data[:len(data) // 2])


def broken_safetensors_header(path):
  """A real safetensors file whose JSON header is cut off inside a string (same length, so the sizes agree)."""
  from safetensors.numpy import save_file
  save_file({'w': np.zeros(4, np.float32)}, str(path))
  data = bytearray(path.read_bytes())
  size = int.from_bytes(data[:8], 'little')
  data[9:8 + size] = b'"' + b' ' * (size - 2)
  return write_bytes(path, bytes(data))


# name -> (writes the file into a folder and returns its path, the kind `sniff` must find, what the message adds).
UNREADABLE = {
    'random 4 KiB': (lambda d: write_bytes(d / 'random.pt', np.random.default_rng(0).bytes(4096)), 'unknown', ''),
    'empty': (lambda d: write_bytes(d / 'empty.pt', b''), 'empty', ''),
    'text': (lambda d: write_bytes(d / 'notes.pt', b'not a checkpoint, just notes\n'), 'unknown', ''),
    'truncated checkpoint': (lambda d: truncated(d / 'cut.pt', lambda p: torch.save({'w': torch.ones(64)}, p)),
                             'damaged zip', ''),
    'truncated legacy checkpoint': (
        lambda d: truncated(d / 'cut_legacy.pt', lambda p: torch.save(
            {'w': torch.ones(64)}, p, _use_new_zipfile_serialization=False)),
        'pickle', ', which torch cannot read (truncated or damaged: '),
    'safetensors with a broken header': (lambda d: broken_safetensors_header(d / 'w.safetensors'), 'safetensors',
                                         ', whose header or data cannot be read'),
    'safetensors header longer than the file': (
        lambda d: write_bytes(d / 'long.safetensors', (10**6).to_bytes(8, 'little') + b'{"w": {}}'), 'unknown', ''),
}


def assert_never_advises_unsafe_loading(error):
  shown = ''.join(traceback.format_exception(error))  # what a user sees, causes and contexts included
  assert 'weights_only' not in shown and 'trust' not in shown, shown


@pytest.mark.parametrize('case', sorted(UNREADABLE))
def test_unreadable_file_gets_one_line_naming_it_what_it_looks_like_and_the_accepted_formats(tmp_path, case):
  write, kind, detail = UNREADABLE[case]
  path = write(tmp_path)
  data = path.read_bytes()
  with pytest.raises(CheckpointError) as error:
    load_pretrained(path)
  message = str(error.value)
  looks_like = f'{pretrained.KINDS[kind]}, {len(data)} bytes, starting {data[:16]!r}'
  start, end = f'{path} is not a readable checkpoint: {looks_like}{detail}', f'. Accepted: {pretrained.ACCEPTED}.'
  assert message.startswith(start) and message.endswith(end) and '\n' not in message, message
  if not detail:  # the kind says it all
    assert message == start + end
  assert_never_advises_unsafe_loading(error.value)


def torch_save_payload(path, marker):
  torch.save(CreatesFileOnLoad(marker), path)
  with zipfile.ZipFile(path) as z:
    return next(z.read(n) for n in z.namelist() if n.endswith('data.pkl'))


def pickle_payload(protocol):
  def write(path, marker):
    path.write_bytes(pickle.dumps(CreatesFileOnLoad(marker), protocol=protocol))
    return path.read_bytes()
  return write


# name -> (writes the file and returns its pickle, the global the message must name or None).
MALICIOUS = {
    'torch.save': (torch_save_payload, 'io.open'),
    'pickle protocol 2': (pickle_payload(2), 'io.open'),
    'pickle protocol 4': (pickle_payload(4), None),  # framed: torch refuses the opcode before reaching the global
    'pickle protocol 0': (pickle_payload(0), None),  # text pickle: torch never writes one; not even handed to torch
}


@pytest.mark.parametrize('case', sorted(MALICIOUS))
def test_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path, case):
  write, global_name = MALICIOUS[case]
  marker, path = tmp_path / 'marker', tmp_path / 'evil.pt'
  payload = write(path, marker)
  pickle.loads(payload)  # the payload is live: plain unpickling creates the marker
  assert marker.exists()
  marker.unlink()
  with pytest.raises(CheckpointError) as error:
    load_pretrained(path)
  assert not marker.exists()
  message = str(error.value)
  if case == 'pickle protocol 0':
    assert message.startswith(f'{path} is not a readable checkpoint: {pretrained.KINDS["unknown"]}')
  else:
    assert message.startswith(f'{path} is refused: ') and 'unpickling it could run code' in message
    if global_name:
      assert f'whose pickle names {global_name}:' in message
  assert_never_advises_unsafe_loading(error.value)


def test_foreign_directories(tmp_path):
  with pytest.raises(CheckpointError, match='without config.json'):
    load_pretrained(tmp_path)
  (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'bert', 'hidden_size': 8}))
  with pytest.raises(CheckpointError, match='not a CLIP config'):
    load_pretrained(tmp_path)


def test_resnet_clip_is_refused_clearly(tmp_path):
  with pytest.raises(CheckpointError, match='ResNet CLIP checkpoints are not supported'):
    save_and_load(tmp_path / 'rn50.pt', {'visual.layer1.0.conv1.weight': torch.zeros(1)})


@pytest.mark.parametrize('sim_header', ['meanP', 'Conv_1D', 'LSTM', 'Transf', 'Transf_cls'])
def test_official_sim_header_names_an_official_checkpoints_prompt_and_nothing_else(tmp_path, good_state_dict,
                                                                                  sim_header):
  """What `launch.py` resolves `network.conv_reshape='auto'` with, before any weights are read."""
  import torch_actionclip
  torch_actionclip.official_checkpoint(ARCHS['p8'], tmp_path / 'official.pt', sim_header)
  assert pretrained.official_sim_header(str(tmp_path / 'official.pt')) == sim_header
  torch.save(good_state_dict, tmp_path / 'clip.pt')
  for other in (tmp_path / 'clip.pt', write_bytes(tmp_path / 'random.pt', b'not a checkpoint'), tmp_path,
                tmp_path / 'missing.pt', ''):
    assert pretrained.official_sim_header(str(other) if other != '' else '') is None
