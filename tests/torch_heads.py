"""PyTorch references for the head-side modules, written from the official ActionCLIP code's behaviour.

`VisualPrompt` has the official `modules/Visual_Prompt.py` `visual_prompt` state-dict keys (so it can build an
official-format `fusion_model_state_dict`) and the same forward; it also returns the per-frame tokens before pooling,
which the official forward computes but does not return. `kl_loss` / `actionclip_loss` are the official
`utils/KLLoss.py` + `train.py` formula; `wti_scores` / `cdcr_loss` are the WTI formulas with DRL's indexing style.
"""
from collections import OrderedDict
import warnings

import torch
from torch import nn
import torch.nn.functional as F

SIM_HEADERS = ('meanP', 'Conv_1D', 'LSTM', 'Transf', 'Transf_cls')


class QuickGELU(nn.Module):

  def forward(self, x):
    return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
  """OpenAI-style pre-LN block; the official head's LayerNorm is TF-style with eps 1e-12 (same keys, same math)."""

  def __init__(self, width, heads):
    super().__init__()
    self.attn = nn.MultiheadAttention(width, heads)
    self.ln_1 = nn.LayerNorm(width, eps=1e-12)
    self.mlp = nn.Sequential(OrderedDict([('c_fc', nn.Linear(width, 4 * width)), ('gelu', QuickGELU()),
                                          ('c_proj', nn.Linear(4 * width, width))]))
    self.ln_2 = nn.LayerNorm(width, eps=1e-12)

  def forward(self, x):  # x: [L, N, D]
    h = self.ln_1(x)
    x = x + self.attn(h, h, h, need_weights=False)[0]
    return x + self.mlp(self.ln_2(x))


class TemporalTransformer(nn.Module):

  def __init__(self, width, layers, heads):
    super().__init__()
    self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])

  def forward(self, x):
    return self.resblocks(x)


class TAggregate(nn.Module):
  """Class token + positional embedding + nn.TransformerEncoder (8 heads, post-LN) + final LayerNorm."""

  def __init__(self, clip_length, embed_dim, n_layers=6):
    super().__init__()
    layer = nn.TransformerEncoderLayer(d_model=embed_dim, nhead=8)
    # Nested tensors only matter with a padding mask; turning them off just silences torch's warning.
    self.transformer_enc = nn.TransformerEncoder(layer, num_layers=n_layers, norm=nn.LayerNorm(embed_dim),
                                                 enable_nested_tensor=False)
    self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
    self.pos_embed = nn.Parameter(torch.zeros(1, clip_length + 1, embed_dim))

  def forward(self, x):  # x: [B, T, D] -> all outputs [B, T + 1, D]
    x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
    return self.transformer_enc(x.transpose(0, 1)).transpose(0, 1)


class VisualPrompt(nn.Module):
  """The official `visual_prompt(sim_head, clip_state_dict, T)` with the CLIP sizes passed in directly.

  official_view: Conv_1D reshapes [b, t, c] to [b, c, t] with `view`, as the official forward does; False
  transposes instead (the temporal conv the head is meant to be).
  """

  def __init__(self, sim_header, embed_dim, num_frames, text_heads, context_length=77, official_view=True):
    super().__init__()
    assert sim_header in SIM_HEADERS
    self.sim_header = sim_header
    self.official_view = official_view
    d = embed_dim
    if sim_header != 'meanP':
      self.frame_position_embeddings = nn.Embedding(context_length, d)
    if sim_header == 'Transf':
      self.transformer = TemporalTransformer(d, 6, text_heads)
    if sim_header == 'LSTM':
      self.lstm_visual = nn.LSTM(input_size=d, hidden_size=d, batch_first=True, bidirectional=False, num_layers=1)
    if sim_header == 'Transf_cls':
      self.transformer = TAggregate(num_frames, d, 6)
    if sim_header == 'Conv_1D':
      self.shift = nn.Conv1d(d, d, 3, padding=1, groups=d, bias=False)
      weight = torch.zeros(d, 1, 3)
      weight[:d // 4, 0, 0] = 1.0
      weight[d // 4:d // 4 + d // 2, 0, 1] = 1.0
      weight[-d // 4:, 0, 2] = 1.0
      self.shift.weight = nn.Parameter(weight)

  def forward(self, x):
    """x: [B, T, D] -> (pooled [B, D], frame tokens [B, T, D])."""
    b, t, c = x.shape
    if self.sim_header == 'meanP':
      tokens = x
    elif self.sim_header == 'Conv_1D':
      h = x.contiguous().view(-1, c, t) if self.official_view else x.transpose(1, 2)
      tokens = self.shift(h).permute(0, 2, 1) + x
    elif self.sim_header == 'LSTM':
      tokens = self.lstm_visual(x)[0] + x
    elif self.sim_header == 'Transf':
      h = x + self.frame_position_embeddings(torch.arange(t))[None]
      tokens = self.transformer(h.permute(1, 0, 2)).permute(1, 0, 2) + x
    else:
      out = self.transformer(x)
      return out[:, 0], out[:, 1:]
    return tokens.mean(dim=1), tokens


def randomize_(module, scale=0.05, seed=0):
  """Give every parameter random values (norm weights near 1) so a parity test exercises every mapping."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      noise = torch.randn(p.shape, generator=g)
      is_norm_weight = p.dim() == 1 and name.endswith('weight')
      p.copy_(1 + 0.1 * noise if is_norm_weight else scale * noise)
  return module


def gen_label(labels):
  """G[i, k] = 1 when labels i and k are equal (official utils/tools.py)."""
  labels = torch.as_tensor(labels)
  return (labels[:, None] == labels[None, :]).to(torch.float32)


def kl_loss(prediction, label):
  """Official KLLoss: KLDivLoss(size_average=True, reduce=True), i.e. reduction 'mean', times the batch size."""
  batch_size = prediction.shape[0]
  with warnings.catch_warnings():  # torch warns that 'mean' is not 'batchmean'; 'mean' is what the official code uses
    warnings.simplefilter('ignore', UserWarning)
    return nn.KLDivLoss(reduction='mean')(F.log_softmax(prediction, 1), F.softmax(label * 10, 1)) * batch_size


def actionclip_loss(video_emb, text_emb, labels, logit_scale):
  """train.py: create_logits with exp(logit_scale), KLLoss on both directions, mean of the two."""
  video_emb = video_emb / video_emb.norm(dim=-1, keepdim=True)
  text_emb = text_emb / text_emb.norm(dim=-1, keepdim=True)
  scale = logit_scale.exp()
  ground_truth = gen_label(labels)
  return (kl_loss(scale * video_emb @ text_emb.t(), ground_truth)
          + kl_loss(scale * text_emb @ video_emb.t(), ground_truth)) / 2


def weight_mlp(d):
  return nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 1))


def token_weights(mlp, tokens, mask):
  logits = mlp(tokens).squeeze(-1).masked_fill(~mask, float('-inf'))
  return torch.softmax(logits, dim=-1)


def wti_scores(text_weight_fc, video_weight_fc, video_tokens, text_tokens, text_mask):
  """[B, T, D], [N, L, D], bool [N, L] -> [B, N]."""
  text_w = token_weights(text_weight_fc, text_tokens, text_mask)
  video_w = token_weights(video_weight_fc, video_tokens, torch.ones(video_tokens.shape[:2], dtype=torch.bool))
  t = F.normalize(text_tokens, dim=-1)
  v = F.normalize(video_tokens, dim=-1)
  s = torch.einsum('nld,bfd->bnlf', t, v).masked_fill(~text_mask[None, :, :, None], float('-inf'))
  t2v = torch.nan_to_num(s.max(dim=-1).values, neginf=0.0)  # masked tokens have weight 0
  t2v = torch.einsum('bnl,nl->bn', t2v, text_w)
  v2t = torch.einsum('bnf,bf->bn', s.max(dim=-2).values, video_w)
  return (t2v + v2t) / 2


def cdcr_loss(video_tokens, video_w, text_tokens, text_w, text_mask, alpha1=1.0, alpha2=0.06):
  """DRL's 'cdcr 3' regularizer for paired (video i, text i), with boolean indexing over the valid tokens."""
  t = F.normalize(text_tokens, dim=-1)
  v = F.normalize(video_tokens, dim=-1)
  b, _, d = t.shape
  s = torch.einsum('bld,bfd->blf', t, v).masked_fill(~text_mask[:, :, None], float('-inf'))
  rows = torch.arange(b)
  best_frame = s.argmax(dim=2)  # [B, L]
  best_token = s.argmax(dim=1)  # [B, T]
  frame_for_token = v[rows[:, None], best_frame]  # [B, L, D]
  token_for_frame = t[rows[:, None], best_token]  # [B, T, D]
  mask = text_mask.reshape(-1)
  t_valid = t.reshape(-1, d)[mask]
  matched_v = frame_for_token.reshape(-1, d)[mask]
  v_all = v.reshape(-1, d)
  matched_t = token_for_frame.reshape(-1, d)

  def standardize(x):
    return (x - x.mean(0)) / x.std(0)

  c1 = torch.einsum('rc,rd,r->cd', standardize(t_valid), standardize(matched_v), text_w.reshape(-1)[mask]) / b
  c2 = torch.einsum('rc,rd,r->cd', standardize(v_all), standardize(matched_t), video_w.reshape(-1)) / b
  c = (c1 + c2) / 2
  on_diag = (torch.diagonal(c) - 1).pow(2).sum()
  off_diag = c.flatten()[1:].view(d - 1, d + 1)[:, :-1].pow(2).sum()
  return alpha1 * on_diag + alpha2 * off_diag
