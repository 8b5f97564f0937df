"""Official-format ActionCLIP checkpoints and the official forward pass, built from the PyTorch references
(`torch_clip`, `torch_heads`), for the tests."""
import torch

import torch_clip
import torch_heads


def official_checkpoint(arch, path, sim_header, tsm=False, joint=False, seed=0, frames=4):
  """An official-format checkpoint (fp16 CLIP as `convert_weights` leaves it, `module.`-prefixed fusion keys)."""
  torch.manual_seed(seed)
  model = torch_clip.CLIP(**arch, T=frames, tsm=tsm, joint=joint).eval()
  torch_clip.convert_weights_to_fp16(model)
  fusion = torch_heads.VisualPrompt(sim_header, arch['embed_dim'], 1 if joint else frames,
                                    arch['transformer_width'] // 64).eval()
  if sim_header != 'Conv_1D':  # keep Conv_1D's shift initialization: it is what the official model starts from
    torch_heads.randomize_(fusion, seed=seed)
  torch.save({'model_state_dict': model.state_dict(),
              'fusion_model_state_dict': {f'module.{k}': v for k, v in fusion.state_dict().items()},
              'optimizer_state_dict': {'state': {}, 'param_groups': []}, 'epoch': 3}, path)
  return model.float(), fusion


def official_outputs(model, fusion, frames, ids):
  """As the official test.py: encode_image per frame, view(b, t, -1), fusion, then encode_text and logits."""
  b, t = frames.shape[:2]
  with torch.no_grad():
    image = model.encode_image(torch.from_numpy(frames.reshape(b * t, *frames.shape[2:])).permute(0, 3, 1, 2))
    pooled = fusion(image.view(b, -1, image.shape[-1]))[0]
    text = model.encode_text(torch.from_numpy(ids).long())
    logits = model.logit_scale.exp() * (pooled / pooled.norm(dim=-1, keepdim=True)) @ (
        text / text.norm(dim=-1, keepdim=True)).T
  return pooled.numpy(), text.numpy(), logits.numpy()
