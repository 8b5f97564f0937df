"""ActionCLIP in JAX/Flax: CLIP towers, conversion of PyTorch checkpoints, the CLIP tokenizer, prediction."""
from actionclip_jax.model.clip import CLIP, CLIPConfig, PRESETS, get_preset, init_params
from actionclip_jax.weights.convert import CheckpointError
from actionclip_jax.weights.pretrained import PretrainedCLIP, export_openai, load_pretrained
from actionclip_jax.model.tokenizer import tokenize
# `actionclip_jax.predict` is the function (this import rebinds the name the subpackage's import bound).
from actionclip_jax.predict import Prediction, predict

__all__ = ['CLIP', 'CLIPConfig', 'CheckpointError', 'PRESETS', 'Prediction', 'PretrainedCLIP', 'export_openai',
           'get_preset', 'init_params', 'load_pretrained', 'predict', 'tokenize']
