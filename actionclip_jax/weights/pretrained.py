"""Loading CLIP weights from PyTorch files into a ready-to-run model, and exporting them back.

Accepted inputs (the architecture is read off the tensor shapes, or off `config.json` for Hugging Face):
  * OpenAI CLIP: a released TorchScript archive (`ViT-B-32.pt`, ...), or a plain `state_dict` file
    (`.pt`/`.pth`/`.bin` via `torch.load(weights_only=True)`, or `.safetensors`);
  * a Hugging Face CLIP directory: `config.json` + `model.safetensors` (numpy, no torch) or `pytorch_model.bin`;
  * an official ActionCLIP checkpoint: {'model_state_dict', 'fusion_model_state_dict', 'optimizer_state_dict',
    'epoch'}, whose CLIP part is OpenAI-layout (fp16) and whose fusion keys carry DataParallel's `module.`.

A file is recognised by its first bytes before any parser sees it. One that is none of these, or whose pickle names
anything beyond tensors and plain containers (unpickling it could run code), is refused with one line: the path,
what the file looks like (kind, size, first bytes) and what is accepted. Torch's own messages are never passed on.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import pickle
import re
import zipfile
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from actionclip_jax.model import clip, video
from actionclip_jax.weights import convert
from actionclip_jax.weights.convert import CheckpointError

ACCEPTED = ('an OpenAI CLIP TorchScript archive (e.g. ViT-B-32.pt), an OpenAI-layout state_dict '
            '(.pt/.pth/.bin/.safetensors), a Hugging Face CLIP directory (config.json with model.safetensors '
            'or pytorch_model.bin), or an official ActionCLIP checkpoint (model_state_dict + fusion_model_state_dict)')
# Entries of OpenAI's TorchScript archives that are architecture metadata rather than weights, and the config
# field each must agree with.
OPENAI_METADATA = {'input_resolution': 'image_resolution', 'context_length': 'context_length',
                   'vocab_size': 'vocab_size'}


def _torch():
  try:
    import torch
  except ImportError as e:
    raise ImportError('Reading PyTorch .pt/.bin files needs torch: pip install "actionclip-jax[torch]"') from e
  return torch


def _to_numpy(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
  out = {}
  for key, value in state_dict.items():
    if hasattr(value, 'detach'):
      value = value.detach().cpu()
      # numpy has no bfloat16; float32 holds bfloat16 (and float16) values exactly.
      value = value.float().numpy() if value.is_floating_point() else value.numpy()
    out[key] = np.asarray(value)
  return out


# Every kind of file `sniff` tells apart, as a message describes it; only the first four can be read.
KINDS = {
    'torchscript': 'a TorchScript archive',
    'torch zip': 'a torch.save zip archive',
    'pickle': "a pickle (torch.save's legacy format)",
    'safetensors': 'a safetensors file',
    'empty': 'an empty file',
    'zip': 'a zip archive that is not a PyTorch file (no data.pkl)',
    'damaged zip': 'the start of a zip archive without its directory (truncated or damaged)',
    'unknown': 'not a zip, pickle, safetensors or TorchScript file',
}
READABLE = ('torchscript', 'torch zip', 'pickle', 'safetensors')
_HEAD_BYTES = 16


@dataclasses.dataclass(frozen=True)
class FileKind:
  """What a file is by its first bytes (and a zip's member names), found without parsing its contents."""
  name: str  # a key of KINDS
  size: int
  head: bytes

  def __str__(self):
    return f'{KINDS[self.name]}, {self.size} bytes, starting {self.head!r}'


def sniff(path: str) -> FileKind:
  size = os.path.getsize(path)
  with open(path, 'rb') as f:
    head = f.read(_HEAD_BYTES)
  return FileKind(_kind(path, head, size), size, head)


def _kind(path: str, head: bytes, size: int) -> str:
  if size == 0:
    return 'empty'
  if zipfile.is_zipfile(path):
    try:
      with zipfile.ZipFile(path) as z:
        names = z.namelist()
    except zipfile.BadZipFile:  # an end record that points at no valid directory
      return 'damaged zip'
    if any(name.endswith('constants.pkl') for name in names):  # only TorchScript archives have code constants
      return 'torchscript'
    return 'torch zip' if any(name.endswith('data.pkl') for name in names) else 'zip'
  if head.startswith(b'PK\x03\x04'):
    return 'damaged zip'
  if len(head) > 1 and head[0] == pickle.PROTO[0] and 2 <= head[1] <= pickle.HIGHEST_PROTOCOL:
    return 'pickle'
  # safetensors: a little-endian u64 header length, then that many bytes of JSON, which must begin with '{'.
  if len(head) > 8 and head[8:9] == b'{' and 8 + int.from_bytes(head[:8], 'little') <= size:
    return 'safetensors'
  return 'unknown'


def _unreadable(path: str, kind: FileKind, why: str = '') -> CheckpointError:
  return CheckpointError(f'{path} is not a readable checkpoint: {kind}{why}. Accepted: {ACCEPTED}.')


def _refused(path: str, kind: FileKind, names: list[str]) -> CheckpointError:
  found = f'names {", ".join(sorted(names))}' if names else 'holds instructions beyond those of tensors and containers'
  return CheckpointError(f'{path} is refused: {kind}, whose pickle {found}: unpickling it could run code, and a '
                         f'checkpoint needs only tensors and plain containers. Accepted: {ACCEPTED}.')


def _torch_failure(path: str, kind: FileKind, error: Exception) -> CheckpointError:
  """Our message for torch's failure to read a file. Torch's own text is never shown: its weights_only refusals
  advise loading the file unsafely, advice that must not come with an untrusted file."""
  if isinstance(error, pickle.UnpicklingError):  # the safe unpickler met something other than weights
    return _refused(path, kind, re.findall(r'GLOBAL ([\w.]+)', str(error)))
  error_type = type(error).__name__ if type(error).__module__ == 'builtins' else (
      f'{type(error).__module__}.{type(error).__name__}')  # struct.error, not a bare 'error'
  return _unreadable(path, kind, f', which torch cannot read (truncated or damaged: {error_type})')


def check_readable(path: str) -> FileKind:
  """The file's kind; raises CheckpointError, reading no weights, for a file no loader here accepts and for a
  torch.save archive whose pickle names anything beyond tensors and plain containers."""
  kind = sniff(path)
  if kind.name not in READABLE:
    raise _unreadable(path, kind)
  if kind.name == 'torch zip':
    torch = _torch()
    try:
      unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)  # reads data.pkl's opcodes, runs none
    except Exception as e:  # of any type, it means the pickle cannot be read; torch's text is not for the user
      raise _torch_failure(path, kind, e) from None
    if unsafe:
      raise _refused(path, kind, unsafe)
  return kind


def read_torch_file(path: str, kind: FileKind) -> Any:
  """The object saved in a PyTorch file: a TorchScript archive's state dict, or what `torch.load` returns.

  Plain files load with `weights_only=True` (no arbitrary unpickling). TorchScript archives hold code that only
  `torch.jit.load` reads; it runs in the TorchScript interpreter, never as Python, and only its state dict is kept.
  """
  torch = _torch()
  try:
    if kind.name != 'torchscript':
      return torch.load(path, map_location='cpu', weights_only=True)
    archive = torch.jit.load(path, map_location='cpu')
  except Exception as e:  # torch raises many types for a bad file (UnpicklingError, EOFError, RuntimeError, ...)
    raise _torch_failure(path, kind, e) from None
  return _to_numpy(archive.state_dict())


def read_safetensors(path: str, kind: FileKind) -> dict[str, np.ndarray]:
  from safetensors import SafetensorError
  from safetensors.numpy import load_file
  try:
    return load_file(path)
  except SafetensorError as e:
    raise _unreadable(path, kind, f', whose header or data cannot be read ({e})') from None


def read_checkpoint(path: str) -> Any:
  """What a checkpoint file holds: a flat state dict, or a torch file's saved object (e.g. ActionCLIP's dict)."""
  kind = check_readable(path)
  if kind.name == 'safetensors':
    return read_safetensors(path, kind)
  return read_torch_file(path, kind)


def as_state_dict(obj: Any, path: str) -> dict[str, np.ndarray]:
  """A flat {key: numpy array} from a loaded checkpoint object (a state dict, or a dict with 'state_dict')."""
  if isinstance(obj, Mapping) and 'state_dict' in obj and isinstance(obj['state_dict'], Mapping):
    obj = obj['state_dict']
  if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
    raise CheckpointError(f'{path} holds a {type(obj).__name__}, not a state dict. Accepted: {ACCEPTED}.')
  return _to_numpy(obj)


def _count_blocks(state_dict: Mapping[str, Any], prefix: str) -> int:
  pattern = re.compile(re.escape(prefix) + r'\.(\d+)\.')
  return len({m.group(1) for k in state_dict if (m := pattern.match(k))})


def _require(state_dict: Mapping[str, np.ndarray], keys: list[str], path: str, layout: str) -> None:
  missing = [k for k in keys if k not in state_dict]
  if missing:
    raise CheckpointError(f'{path}: not an {layout} CLIP checkpoint, missing {", ".join(missing)}. '
                          f'Accepted: {ACCEPTED}.')


def openai_config(state_dict: Mapping[str, np.ndarray], path: str = '<state_dict>', **overrides) -> clip.CLIPConfig:
  """Infers the architecture from tensor shapes, as OpenAI's `build_model` does (heads = width // 64)."""
  if 'visual.layer1.0.conv1.weight' in state_dict:
    raise CheckpointError(f'{path}: ResNet CLIP checkpoints are not supported; only ViT CLIP models are.')
  _require(state_dict, ['visual.conv1.weight', 'visual.positional_embedding', 'text_projection',
                        'positional_embedding', 'token_embedding.weight', 'ln_final.weight'], path, 'OpenAI-layout')
  conv = state_dict['visual.conv1.weight']
  patch = conv.shape[-1]
  grid = round((state_dict['visual.positional_embedding'].shape[0] - 1) ** 0.5)
  width = state_dict['ln_final.weight'].shape[0]
  fields = dict(
      embed_dim=state_dict['text_projection'].shape[1],
      image_resolution=patch * grid,
      vision_layers=_count_blocks(state_dict, 'visual.transformer.resblocks'),
      vision_width=conv.shape[0],
      vision_patch_size=patch,
      context_length=state_dict['positional_embedding'].shape[0],
      vocab_size=state_dict['token_embedding.weight'].shape[0],
      transformer_width=width,
      transformer_heads=max(1, width // 64),
      transformer_layers=_count_blocks(state_dict, 'transformer.resblocks'),
      # ActionCLIP's video options leave traces in the keys: TSM wraps blocks as `.net`, joint adds a time table.
      tsm=any(k.startswith('visual.transformer.resblocks.0.net.') for k in state_dict),
      joint='visual.time_embedding' in state_dict,
  )
  if fields['joint']:
    fields['num_frames'] = state_dict['visual.time_embedding'].shape[0]
  return clip.CLIPConfig(**{**fields, **overrides})


def _check_openai_metadata(state_dict: Mapping[str, np.ndarray], config: clip.CLIPConfig, path: str) -> list[str]:
  """OpenAI's archives carry their own input_resolution/context_length/vocab_size: they must agree."""
  present = [k for k in OPENAI_METADATA if k in state_dict]
  wrong = [f'{k}={int(state_dict[k])} but the weights say {getattr(config, field)}'
           for k, field in OPENAI_METADATA.items()
           if k in state_dict and int(state_dict[k]) != getattr(config, field)]
  if wrong:
    raise CheckpointError(f'{path}: inconsistent metadata: {"; ".join(wrong)}')
  return present


def hf_config(hf: Mapping[str, Any], path: str, **overrides) -> clip.CLIPConfig:
  """Our config from a Hugging Face `CLIPConfig` dict (config.json)."""
  if 'vision_config' not in hf or 'text_config' not in hf:
    raise CheckpointError(f'{path}/config.json is not a CLIP config (no vision_config/text_config). '
                          f'Accepted: {ACCEPTED}.')
  v, t = hf['vision_config'], hf['text_config']
  acts = {v.get('hidden_act', 'quick_gelu'), t.get('hidden_act', 'quick_gelu')}
  eps = {v.get('layer_norm_eps', 1e-5), t.get('layer_norm_eps', 1e-5)}
  if len(acts) != 1 or eps != {1e-5}:
    raise CheckpointError(f'{path}: unsupported Hugging Face CLIP variant: hidden_act {sorted(acts)} (must be one '
                          f'for both towers), layer_norm_eps {sorted(eps)} (must be 1e-5).')
  fields = dict(
      embed_dim=hf.get('projection_dim', 512),
      image_resolution=v['image_size'],
      vision_layers=v['num_hidden_layers'],
      vision_width=v['hidden_size'],
      vision_patch_size=v['patch_size'],
      vision_heads=v['num_attention_heads'],
      context_length=t['max_position_embeddings'],
      vocab_size=t['vocab_size'],
      transformer_width=t['hidden_size'],
      transformer_heads=t['num_attention_heads'],
      transformer_layers=t['num_hidden_layers'],
      act=acts.pop(),
  )
  if v.get('intermediate_size', 4 * v['hidden_size']) != 4 * v['hidden_size'] or t.get(
      'intermediate_size', 4 * t['hidden_size']) != 4 * t['hidden_size']:
    raise CheckpointError(f'{path}: unsupported Hugging Face CLIP variant: intermediate_size must be 4 x hidden_size')
  return clip.CLIPConfig(**{**fields, **overrides})


def _hf_derived_buffers(state_dict: Mapping[str, np.ndarray], path: str) -> list[str]:
  """Older Hugging Face saves carry `position_ids` buffers: accepted only when they hold arange, as derived."""
  keys = [k for k in state_dict if k.endswith('embeddings.position_ids')]
  for k in keys:
    ids = np.asarray(state_dict[k]).reshape(-1)
    if not np.array_equal(ids, np.arange(ids.size)):
      raise CheckpointError(f'{path}: {k} is not 0..N-1; position ids other than arange are not supported')
  return keys


def target_shapes(config: clip.CLIPConfig):
  """The params pytree of shapes for `config`, without allocating anything."""
  return jax.eval_shape(lambda: clip.init_params(config, jax.random.key(0)))


def read_clip(path: str, **overrides) -> tuple[clip.CLIPConfig, dict]:
  """(config, float32 numpy params) from any accepted CLIP checkpoint; see the module docstring."""
  return _read_clip(path, _open(path), **overrides)


def _open(path: str) -> Any:
  """The loaded checkpoint file, or None for a (Hugging Face) directory."""
  if os.path.isdir(path):
    return None
  if not os.path.exists(path):
    raise FileNotFoundError(f'No checkpoint at {path}')
  return read_checkpoint(path)


def _read_clip(path: str, obj: Any, **overrides) -> tuple[clip.CLIPConfig, dict]:
  if obj is None:
    config_file = os.path.join(path, 'config.json')
    if not os.path.exists(config_file):
      raise CheckpointError(f'{path} is a directory without config.json. Accepted: {ACCEPTED}.')
    with open(config_file) as f:
      config = hf_config(json.load(f), path, **overrides)
    weights = [os.path.join(path, n) for n in ('model.safetensors', 'pytorch_model.bin')]
    weights = [w for w in weights if os.path.exists(w)]
    if not weights:
      raise CheckpointError(f'{path} has config.json but neither model.safetensors nor pytorch_model.bin.')
    state_dict = as_state_dict(read_checkpoint(weights[0]), weights[0])
    extra = _hf_derived_buffers(state_dict, path)
    return config, convert.to_flax(state_dict, convert.HF_CLIP, target_shapes(config), extra_keys=extra)
  state_dict = as_state_dict(obj, path)
  if any(k.startswith('vision_model.') for k in state_dict):
    raise CheckpointError(f'{path} holds Hugging Face CLIP weights: pass the directory with its config.json.')
  return _openai_clip(state_dict, path, **overrides)


def _openai_clip(state_dict: Mapping[str, np.ndarray], path: str, **overrides) -> tuple[clip.CLIPConfig, dict]:
  config = openai_config(state_dict, path, **overrides)
  extra = _check_openai_metadata(state_dict, config, path)
  rules = convert.openai_clip(tsm=config.tsm, joint=config.joint)
  return config, convert.to_flax(state_dict, rules, target_shapes(config), extra_keys=extra)


def is_actionclip_checkpoint(obj: Any) -> bool:
  return isinstance(obj, Mapping) and 'model_state_dict' in obj and 'fusion_model_state_dict' in obj


def official_sim_header(path: str) -> str | None:
  """The visual prompt of the official ActionCLIP checkpoint at `path`; None for anything else (a directory, a CLIP,
  an unreadable file). Reads only the fusion keys' names: a torch.save archive is memory-mapped, not loaded."""
  if not path or not os.path.isfile(path):
    return None
  try:
    kind = check_readable(path)
    if kind.name not in ('torch zip', 'pickle'):
      return None
    torch = _torch()
    obj = torch.load(path, map_location='cpu', weights_only=True, mmap=kind.name == 'torch zip')
  except Exception:  # not ours to report here: loading it later names the problem
    return None
  if not is_actionclip_checkpoint(obj):
    return None
  return infer_sim_header(_strip_data_parallel(dict.fromkeys(obj['fusion_model_state_dict'])))


def _strip_data_parallel(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Drops DataParallel's `module.` prefix when every key has it."""
  if state_dict and all(k.startswith('module.') for k in state_dict):
    return {k[len('module.'):]: v for k, v in state_dict.items()}
  return dict(state_dict)


def infer_sim_header(fusion_state_dict: Mapping[str, Any]) -> str:
  """The official `visual_prompt` head that produced these keys."""
  if any(k.startswith('transformer.cls_token') for k in fusion_state_dict):
    return 'Transf_cls'
  if any(k.startswith('transformer.resblocks.') for k in fusion_state_dict):
    return 'Transf'
  if any(k.startswith('lstm_visual.') for k in fusion_state_dict):
    return 'LSTM'
  if 'shift.weight' in fusion_state_dict:
    return 'Conv_1D'
  return 'meanP'


def read_actionclip(obj: Mapping[str, Any], path: str, sim_header: str | None = None,
                    num_frames: int | None = None, **overrides) -> tuple[video.ActionCLIPConfig, dict]:
  """(config, params) from an official ActionCLIP checkpoint: {'model_state_dict': OpenAI-layout CLIP (TSM and
  joint variants included), 'fusion_model_state_dict': the visual prompt, maybe `module.`-prefixed, ...}.

  sim_header is read off the fusion keys (a given one must agree); num_frames off joint's time embedding or
  Transf_cls's position table, else it is required for TSM and defaults to ActionCLIP's 8.
  Optimizer state and epoch are not model weights and are left alone.
  """
  model_sd = _strip_data_parallel(_to_numpy(obj['model_state_dict']))
  fusion_sd = _strip_data_parallel(_to_numpy(obj['fusion_model_state_dict']))
  found = infer_sim_header(fusion_sd)
  if sim_header is not None and sim_header != found:
    raise CheckpointError(f'{path}: sim_header={sim_header!r} was asked for, but the fusion weights are {found!r}')
  inferred_frames = None
  if 'visual.time_embedding' in model_sd:
    inferred_frames = model_sd['visual.time_embedding'].shape[0]
  elif found == 'Transf_cls':
    inferred_frames = fusion_sd['transformer.pos_embed'].shape[1] - 1
  if num_frames is not None and inferred_frames is not None and num_frames != inferred_frames:
    raise CheckpointError(f'{path}: num_frames={num_frames} was asked for, but the weights are for {inferred_frames}')
  num_frames = num_frames or inferred_frames
  if num_frames is None:
    if any(k.startswith('visual.transformer.resblocks.0.net.') for k in model_sd):
      raise CheckpointError(f'{path}: a TSM model shifts across a fixed number of frames: pass num_frames=')
    num_frames = 8
  clip_config, clip_params = _openai_clip(model_sd, path, num_frames=num_frames, **overrides)
  config = video.ActionCLIPConfig(clip_config, sim_header=found, conv_official_reshape=found == 'Conv_1D')
  fusion_frames = 1 if clip_config.joint else num_frames
  fusion = convert.heads_params_from_torch(fusion_sd, found, embed_dim=clip_config.embed_dim, num_frames=fusion_frames,
                                         text_heads=max(1, clip_config.transformer_width // 64))
  params = {'clip': clip_params}
  if fusion:
    params['fusion'] = fusion
  return config, params


@dataclasses.dataclass
class PretrainedCLIP:
  """A CLIP config with its params, and jitted encoders. Embeddings are returned un-normalized."""
  config: clip.CLIPConfig
  params: Any

  @functools.cached_property
  def module(self) -> clip.CLIP:
    return clip.CLIP(self.config)

  @functools.cached_property
  def _encode_image(self):
    return jax.jit(lambda p, x: self.module.apply({'params': p}, x, method=clip.CLIP.encode_image))

  @functools.cached_property
  def _encode_text(self):
    return jax.jit(lambda p, x: self.module.apply({'params': p}, x, method=clip.CLIP.encode_text))

  def encode_image(self, images) -> jax.Array:
    """images: float32 [N, H, W, 3], already normalized with CLIP's mean/std -> [N, embed_dim]."""
    return self._encode_image(self.params, jnp.asarray(images, jnp.float32))

  def encode_text(self, token_ids) -> jax.Array:
    """token_ids: int [N, L] (see `actionclip_jax.tokenize`) -> [N, embed_dim]."""
    return self._encode_text(self.params, jnp.asarray(token_ids, jnp.int32))

  def logits(self, images, token_ids) -> jax.Array:
    """exp(logit_scale) * cos: [N_images, N_texts]."""
    return clip.logits(self.encode_image(images), self.encode_text(token_ids), self.params['logit_scale'])


def load_pretrained(path: str, **overrides) -> PretrainedCLIP | video.PretrainedActionCLIP:
  """Loads any accepted checkpoint (see the module docstring).

  CLIP checkpoints give a `PretrainedCLIP`; official ActionCLIP checkpoints a `video.PretrainedActionCLIP`
  (`sim_header=` and `num_frames=` may be given; see `read_actionclip`). `overrides` replace inferred config fields
  (e.g. `dtype='bfloat16'`, `remat='dots'`, or `vision_heads` for a model not using width // 64 heads).
  """
  path = os.fspath(path)
  obj = _open(path)
  if is_actionclip_checkpoint(obj):
    config, params = read_actionclip(obj, path, **overrides)
    return video.PretrainedActionCLIP(config, jax.tree_util.tree_map(jnp.asarray, params))
  config, params = _read_clip(path, obj, **overrides)
  return PretrainedCLIP(config, jax.tree_util.tree_map(jnp.asarray, params))


def export_openai(params, path: str | None = None) -> dict[str, np.ndarray]:
  """OpenAI-layout state dict of `params` (float32); saved as a torch `.pt` state_dict when `path` is given.

  A joint model's time embedding is exported as ActionCLIP names it (`visual.time_embedding`).
  """
  params = nn.unbox(params)
  state_dict = convert.to_torch(params, convert.openai_clip(joint='time_embedding' in params['visual']))
  if path is not None:
    torch = _torch()
    torch.save({k: torch.from_numpy(np.array(v, order='C')) for k, v in state_dict.items()}, path)
  return state_dict
