"""A step's FLOPs from the model's shapes: the matmuls (multiply-add = 2) of the towers, the visual prompt and the
similarity. LayerNorm, softmax, activations, the loss and the optimizer are left out; a train step is 3x its forward
pass (the backward pass computes two matmuls for each forward one), whatever remat or GradCache recompute: these are
model FLOPs, the numerator of MFU.

Why analytic: XLA's `cost_analysis()` counts the body of a `lax.scan` once, so a 12-layer scanned tower reports about
1/12 of its work (checked on CPU and TPU). `tests/model/test_flops.py` holds this count to XLA's for the same step
compiled with every scan unrolled.
"""
from __future__ import annotations

from actionclip_jax.model import clip, heads, video


def transformer(tokens: int, width: int, layers: int, mlp_width: int | None = None) -> int:
  """Residual attention blocks: q, k, v, out projections (8 N w^2), the MLP w -> m -> w (4 N w m, m = 4w by
  default), the scores and the weighted sum (4 N^2 w)."""
  mlp_width = 4 * width if mlp_width is None else mlp_width
  return layers * (8 * tokens * width ** 2 + 4 * tokens * width * mlp_width + 4 * tokens ** 2 * width)


def video_tower(c: clip.CLIPConfig, frames: int) -> int:
  """A clip's frames through the image tower: patch embedding, the blocks over patches + class token, the projection;
  frame by frame, or with `joint` all frames' patches in one sequence behind one class token."""
  patches = (c.image_resolution // c.vision_patch_size) ** 2
  embed = 2 * patches * 3 * c.vision_patch_size ** 2 * c.vision_width
  project = 2 * c.vision_width * c.embed_dim
  if c.joint:
    return frames * embed + transformer(frames * patches + 1, c.vision_width, c.vision_layers) + project
  return frames * (embed + transformer(patches + 1, c.vision_width, c.vision_layers) + project)


def text(c: clip.CLIPConfig, length: int) -> int:
  """One text of `length` tokens through the text tower, and the projection of its end token."""
  return transformer(length, c.transformer_width, c.transformer_layers) + 2 * c.transformer_width * c.embed_dim


def visual_prompt(sim_header: str, frames: int, width: int) -> int:
  """One video's frame features [T, D] through the visual prompt."""
  if sim_header == 'meanP':
    return 0
  if sim_header == 'Conv_1D':  # depthwise, kernel 3
    return 2 * 3 * frames * width
  if sim_header == 'LSTM':  # x W_ih and h W_hh, each D -> 4D, every frame
    return frames * 2 * 2 * width * 4 * width
  if sim_header == 'Transf':
    return transformer(frames, width, heads.TemporalTransformer.layers)
  if sim_header == 'Transf_cls':
    return transformer(frames + 1, width, heads.PostLNEncoder.layers, heads.EncoderLayer.mlp_dim)
  raise ValueError(f'Unknown sim_header {sim_header!r}; valid: {", ".join(heads.SIM_HEADERS)}')


def similarity(config: video.ActionCLIPConfig, videos: int, texts: int, text_length: int) -> int:
  """Every video against every text: cosines of the embeddings, or WTI (token cosines and the two weight MLPs)."""
  d = config.clip.embed_dim
  if config.interaction != 'wti':
    return 2 * videos * texts * d
  frames = 1 if config.clip.joint else config.num_frames
  weight_mlps = (videos * frames + texts * text_length) * (2 * d * d + 2 * d)
  return 2 * videos * texts * frames * text_length * d + weight_mlps


def forward(config: video.ActionCLIPConfig, videos: int, texts: int = 0, text_length: int = 0) -> int:
  """`videos` clips encoded (frames, then the visual prompt) and, with `texts`, that many texts encoded and scored
  against every clip."""
  c = config.clip
  fused = 1 if c.joint else config.num_frames  # the frame features the visual prompt sees
  per_video = video_tower(c, config.num_frames) + visual_prompt(config.sim_header, fused, c.embed_dim)
  if not texts:
    return videos * per_video
  return videos * per_video + texts * text(c, text_length) + similarity(config, videos, texts, text_length)


def train_step(config: video.ActionCLIPConfig, batch: int, text_length: int, texts: int | None = None) -> int:
  """A training step on `batch` clips and their `batch` sampled texts (or `texts` texts: the sigmoid loss's one a
  class) of `text_length` tokens (the length the step feeds the text tower: `prompts.trim_padding` of the class
  table)."""
  return 3 * forward(config, batch, batch if texts is None else texts, text_length)
