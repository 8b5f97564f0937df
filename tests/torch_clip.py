"""OpenAI's CLIP (ViT) in PyTorch, following openai/CLIP `clip/model.py`, with ActionCLIP's video options
(`tsm`: TemporalShift_VIT wrappers, `joint`: space-time tokens): the reference for parity tests.

State-dict keys are exactly OpenAI's (and ActionCLIP's: `resblocks.N.net.` under TSM, `visual.time_embedding`
with joint). Weights are random, so tests need no downloads. ActionCLIP's `joint` crashes as released (it reads
an undefined `T`); here it runs as that code intends.
"""
from collections import OrderedDict

import torch
from torch import nn


class LayerNorm(nn.LayerNorm):
  """As OpenAI: compute in float32 whatever the input dtype."""

  def forward(self, x):
    return super().forward(x.float()).type(x.dtype)


class QuickGELU(nn.Module):

  def forward(self, x):
    return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):

  def __init__(self, d_model, n_head, attn_mask=None):
    super().__init__()
    self.attn = nn.MultiheadAttention(d_model, n_head)
    self.ln_1 = LayerNorm(d_model)
    self.mlp = nn.Sequential(OrderedDict([
        ('c_fc', nn.Linear(d_model, d_model * 4)), ('gelu', QuickGELU()), ('c_proj', nn.Linear(d_model * 4, d_model))]))
    self.ln_2 = LayerNorm(d_model)
    self.attn_mask = attn_mask

  def attention(self, x):
    mask = self.attn_mask.to(dtype=x.dtype, device=x.device) if self.attn_mask is not None else None
    return self.attn(x, x, x, need_weights=False, attn_mask=mask)[0]

  def forward(self, x):
    x = x + self.attention(self.ln_1(x))
    return x + self.mlp(self.ln_2(x))


class TemporalShiftVIT(nn.Module):
  """ActionCLIP's `TemporalShift_VIT` (fold_div 8) on [1 + HW, N*T, C] tokens, wrapping a block as `.net`."""

  def __init__(self, net, n_segment):
    super().__init__()
    self.net = net
    self.n_segment = n_segment

  def forward(self, x):
    cls, x = x[:1], x[1:]
    hw, nt, c = x.shape
    x = x.permute(1, 2, 0).reshape(nt // self.n_segment, self.n_segment, c, hw)
    fold = c // 8
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]
    out[:, 1:, fold:2 * fold] = x[:, :-1, fold:2 * fold]
    out[:, :, 2 * fold:] = x[:, :, 2 * fold:]
    out = out.reshape(nt, c, hw).permute(2, 0, 1)
    return self.net(torch.cat([cls, out], dim=0))


class Transformer(nn.Module):

  def __init__(self, width, layers, heads, attn_mask=None, tsm_frames=0):
    super().__init__()
    blocks = [ResidualAttentionBlock(width, heads, attn_mask) for _ in range(layers)]
    if tsm_frames:
      blocks = [TemporalShiftVIT(b, tsm_frames) for b in blocks]
    self.resblocks = nn.Sequential(*blocks)

  def forward(self, x):
    return self.resblocks(x)


class VisionTransformer(nn.Module):

  def __init__(self, input_resolution, patch_size, width, layers, heads, output_dim, T=1, joint=False, tsm=False):
    super().__init__()
    self.T, self.joint = T, joint
    self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
    scale = width ** -0.5
    self.class_embedding = nn.Parameter(scale * torch.randn(width))
    self.positional_embedding = nn.Parameter(scale * torch.randn((input_resolution // patch_size) ** 2 + 1, width))
    if joint:
      self.time_embedding = nn.Parameter(scale * torch.randn(T, width))
    self.ln_pre = LayerNorm(width)
    self.transformer = Transformer(width, layers, heads, tsm_frames=T if tsm else 0)
    self.ln_post = LayerNorm(width)
    self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

  def forward(self, x):
    x = self.conv1(x)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype)
    x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
    if self.joint:
      b = x.shape[0] // self.T
      cls, x = x[::self.T, :1], x[:, 1:]
      n, m = x.shape[1], x.shape[2]
      x = x.reshape(b, self.T, n, m) + self.time_embedding[:, None].to(x.dtype)
      x = torch.cat([cls, x.permute(0, 2, 1, 3).reshape(b, n * self.T, m)], dim=1)
    x = self.ln_pre(x).permute(1, 0, 2)
    x = self.transformer(x).permute(1, 0, 2)
    return self.ln_post(x[:, 0, :]) @ self.proj


class CLIP(nn.Module):

  def __init__(self, embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size, context_length,
               vocab_size, transformer_width, transformer_heads, transformer_layers, vision_heads=None, T=1,
               joint=False, tsm=False):
    super().__init__()
    self.visual = VisionTransformer(image_resolution, vision_patch_size, vision_width, vision_layers,
                                    vision_heads or vision_width // 64, embed_dim, T, joint, tsm)
    mask = torch.empty(context_length, context_length).fill_(float('-inf')).triu_(1)
    self.transformer = Transformer(transformer_width, transformer_layers, transformer_heads, mask)
    self.token_embedding = nn.Embedding(vocab_size, transformer_width)
    self.positional_embedding = nn.Parameter(torch.empty(context_length, transformer_width))
    self.ln_final = LayerNorm(transformer_width)
    self.text_projection = nn.Parameter(torch.empty(transformer_width, embed_dim))
    self.logit_scale = nn.Parameter(torch.ones([]) * torch.log(torch.tensor(1 / 0.07)))
    nn.init.normal_(self.token_embedding.weight, std=0.02)
    nn.init.normal_(self.positional_embedding, std=0.01)
    nn.init.normal_(self.text_projection, std=transformer_width ** -0.5)
    # Random non-trivial LayerNorm and bias values, so that a transposed or swapped tensor cannot go unnoticed.
    for name, p in self.named_parameters():
      if name.endswith('bias') or 'ln_' in name:
        with torch.no_grad():
          p.add_(0.1 * torch.randn_like(p))

  def encode_image(self, image):
    return self.visual(image)

  def encode_text(self, text):
    x = self.token_embedding(text) + self.positional_embedding
    x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
    x = self.ln_final(x)
    return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection

  def forward(self, image, text):
    image_features = self.encode_image(image)
    text_features = self.encode_text(text)
    image_features = image_features / image_features.norm(dim=1, keepdim=True)
    text_features = text_features / text_features.norm(dim=1, keepdim=True)
    logits_per_image = self.logit_scale.exp() * image_features @ text_features.t()
    return logits_per_image, logits_per_image.t()


def convert_weights_to_fp16(model):
  """As OpenAI's `convert_weights`: conv/linear/attention weights and the projections in fp16, the rest fp32."""

  def to_fp16(layer):
    if isinstance(layer, (nn.Conv2d, nn.Linear)):
      layer.weight.data = layer.weight.data.half()
      if layer.bias is not None:
        layer.bias.data = layer.bias.data.half()
    if isinstance(layer, nn.MultiheadAttention):
      for attr in ('in_proj_weight', 'in_proj_bias', 'out_proj.weight', 'out_proj.bias'):
        tensor = layer.get_parameter(attr)
        tensor.data = tensor.data.half()
    for name in ('text_projection', 'proj'):
      if hasattr(layer, name) and getattr(layer, name) is not None:
        getattr(layer, name).data = getattr(layer, name).data.half()

  model.apply(to_fp16)
  return model
