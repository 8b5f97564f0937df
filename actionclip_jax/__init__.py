"""ActionCLIP in JAX/Flax: CLIP towers, conversion of PyTorch checkpoints, the CLIP tokenizer."""
from actionclip_jax.clip import CLIP, CLIPConfig, PRESETS, get_preset, init_params
from actionclip_jax.convert import CheckpointError
from actionclip_jax.pretrained import PretrainedCLIP, export_openai, load_pretrained
from actionclip_jax.tokenizer import tokenize

__all__ = ['CLIP', 'CLIPConfig', 'CheckpointError', 'PRESETS', 'PretrainedCLIP', 'export_openai', 'get_preset',
           'init_params', 'load_pretrained', 'tokenize']
