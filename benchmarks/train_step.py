"""The train step and eval encode of actionclip-jax against a PyTorch twin with the same weights and recipe.

    .venv/bin/python benchmarks/train_step.py                                  # ViT-B/32, 8 frames, B=4 / eval B=8
    .venv/bin/python benchmarks/train_step.py --preset tiny --rounds 1         # seconds; what the tests run
    .venv/bin/python benchmarks/train_step.py --preset ViT-B/16 --batch 32 --eval-batch 64 --dtypes bfloat16  # GPU

The twin is the tests' PyTorch reference (`tests/torch_clip.py`, `tests/torch_heads.py`: OpenAI's CLIP and the
official `visual_prompt`) with the official training step: encode_image per frame, the fusion head, encode_text of
one random template per sample, KL loss both ways, backward, global-norm clipping, AdamW in 3 groups (text,
visual x ratio, fusion x f_ratio). Ours is `train.make_train_step` on the `configs/k400.py` recipe. Both start
from one official-format checkpoint written by this script, so weights are equal. Frames are uint8, normalized
inside each step. bfloat16 is `network.dtype='bfloat16'` for JAX and `torch.autocast(bfloat16)` for PyTorch.

Each (framework, dtype) runs in its own subprocess, so peak RSS (ru_maxrss) is that framework's alone; a
subprocess measures the framework's 2048^2 matmul ceiling in its dtype, then eval (peak RSS read after it), then
train. Rounds interleave the frameworks, reversing the order every round. Times are medians of `--steps` after
`--warmup`; FLOPs are analytic (`model.flops`, matmuls only, backward = 2x forward; the text at the length our step
trims it to, for both), so % of ceiling is comparable across frameworks. Prints JSON lines (also to `--out`), then
a Markdown table.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# ------------------------------------------------------------------------------------------------------------------
# Analytic FLOPs (`actionclip_jax.model.flops`: the matmuls; backward = 2x forward), the same for both frameworks.


def prompt_table(args, context_length: int) -> np.ndarray:
  """[K, C, L] token ids of the 16 templates on `args.classes` class names."""
  return _prompt_table(args.classes, context_length)


@functools.cache
def _prompt_table(classes: int, context_length: int) -> np.ndarray:
  # Cached: a worker's step and its FLOP count both need the table (tokenizing 16 x 400 texts each time).
  from actionclip_jax.model import prompts
  return prompts.class_token_ids([f'action {i}' for i in range(classes)], prompts.TEMPLATES, context_length)


def train_flops(mcfg, args) -> int:
  """A train step's FLOPs with the text at the length our step feeds it (prompts.trim_padding), for both
  frameworks: PyTorch's official step runs all 77 positions, work the loss does not need."""
  from actionclip_jax.model import flops, prompts
  text_length = prompts.trim_padding(prompt_table(args, mcfg.clip.context_length)).shape[-1]
  return flops.train_step(mcfg, args.batch, text_length)


def eval_flops(mcfg, batch: int) -> int:
  """The eval encode's FLOPs: `batch` clips through the image tower and the visual prompt."""
  from actionclip_jax.model import flops
  return flops.forward(mcfg, batch)


# ------------------------------------------------------------------------------------------------------------------
# Workers: one framework and dtype per process.


def _peak_rss() -> int:
  """This process's peak resident memory. VmHWM, not ru_maxrss: ru_maxrss survives execve, so a worker would
  report at least the driver's peak at fork time."""
  try:
    with open('/proc/self/status') as f:
      return next(int(line.split()[1]) * 1024 for line in f if line.startswith('VmHWM:'))
  except (OSError, StopIteration):
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB; macOS: bytes


def _timed(fn, warmup: int, steps: int) -> list[float]:
  times = []
  for i in range(warmup + steps):
    start = time.perf_counter()
    fn()
    if i >= warmup:
      times.append(time.perf_counter() - start)
  return times


def _emit(record: dict) -> None:
  print('RESULT ' + json.dumps(record), flush=True)


def _batch_data(args, resolution):
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (args.batch, args.frames, resolution, resolution, 3), dtype=np.uint8)
  eval_frames = rng.integers(0, 256, (args.eval_batch, args.frames, resolution, resolution, 3), dtype=np.uint8)
  labels = rng.integers(0, args.classes, args.batch).astype(np.int32)
  return frames, eval_frames, labels


def _config(args):
  from configs import k400
  config = k400.get_config(f'arch={args.preset},frames={args.frames}')
  config.data.batch_size = args.batch
  config.network.scan_unroll = args.scan_unroll
  config.network.remat = args.remat
  if args.preset == 'tiny':
    config.data.input_size = 32
  return config


def jax_worker(args) -> None:
  import flax.serialization
  import jax
  import jax.numpy as jnp

  from actionclip_jax.model import video
  from actionclip_jax.runs import builders

  base = dict(framework='jax', dtype=args.dtype, round=args.round, device=jax.devices()[0].device_kind,
              platform=jax.default_backend())
  dtype = jnp.dtype(args.dtype)
  _emit({**base, 'what': 'matmul', 'gflops': jax_matmul_gflops(args.matmul, dtype)})
  if args.ceiling_only:
    return

  config = _config(args)
  config.network.dtype = args.dtype
  mcfg = builders.model_config(config)
  module = video.ActionCLIP(mcfg)
  with open(args.params, 'rb') as f:
    params = flax.serialization.msgpack_restore(f.read())
  params = jax.tree_util.tree_map(jnp.asarray, params)
  frames, eval_frames, labels = _batch_data(args, config.data.input_size)
  platform = jax.default_backend()

  def gpu_peak():
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get('peak_bytes_in_use')

  # --- Eval: encode_video, as evaluation runs it ---
  encode = jax_eval_encode(module, dtype)
  start = time.perf_counter()
  encode_c = encode.lower(params, eval_frames).compile()
  compile_s = time.perf_counter() - start
  eval_frames_d = jax.device_put(eval_frames)
  times = _timed(lambda: encode_c(params, eval_frames_d).block_until_ready(), args.warmup, args.steps)
  flops = eval_flops(mcfg, args.eval_batch)
  _emit({**base, 'what': 'eval', 'batch': args.eval_batch, 'times': times, 'compile_s': compile_s, 'flops': flops,
         'peak_rss': _peak_rss(), 'peak_device_bytes': gpu_peak() if platform != 'cpu' else None})

  # --- Train: the project's step on the k400 recipe ---
  step_fn, state, batch = jax_train_step(args, config, params, frames, labels)
  rng = jax.random.key(0)
  start = time.perf_counter()
  compiled = step_fn.lower(state, batch, rng).compile()
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  times = _timed(stepper(compiled, state, batch, rng), args.warmup, args.steps)
  flops = train_flops(mcfg, args)
  _emit({**base, 'what': 'train', 'batch': args.batch, 'times': times, 'compile_s': compile_s, 'flops': flops,
         'xla_flops': float(cost.get('flops', 0.0)) if cost else None, 'peak_rss': _peak_rss(),
         'peak_device_bytes': gpu_peak() if platform != 'cpu' else None})


def jax_matmul_gflops(size: int, dtype) -> float:
  """XLA's rate on one size x size matmul in `dtype`: the ceiling a step's matmuls are compared with."""
  import jax
  import jax.numpy as jnp

  a = jnp.ones((size, size), dtype)
  dot = jax.jit(lambda x, y: x @ y)
  times = _timed(lambda: dot(a, a).block_until_ready(), 2, 10)
  return 2 * size ** 3 / statistics.median(times) / 1e9


def jax_train_step(args, config, params, frames, labels):
  """The project's train step on `config`'s recipe (jitted, state donated), its first state and its batch."""
  import jax
  import jax.numpy as jnp

  from actionclip_jax.model import video
  from actionclip_jax.runs import builders, optim, train

  mcfg = builders.model_config(config)
  table = prompt_table(args, mcfg.clip.context_length)
  tx = optim.make(config.solver, config.network, 10, 1000, params)
  state = {'params': params, 'opt': tx.init(params), 'step': jnp.zeros((), jnp.int32)}
  step_fn = train.make_train_step(video.ActionCLIP(mcfg), tx, table, 1, jnp.dtype(args.dtype))
  batch = {'frames': jax.device_put(frames), 'label': jax.device_put(labels),
           'video_id': jax.device_put(np.arange(args.batch, dtype=np.int32))}
  return jax.jit(step_fn, donate_argnums=(0,)), state, batch


def jax_eval_encode(module, dtype):
  """The jitted eval encode: uint8 frames normalized, then `encode_video`, as evaluation runs it."""
  import jax

  from data_pipelines import augment

  return jax.jit(lambda p, f: module.apply({'params': p}, augment.normalize(f, dtype), method='encode_video')[0])


def stepper(compiled, state, batch, rng):
  """A call that runs one step of `compiled` from the state the previous call left (it is donated), and waits."""
  import jax

  holder = [state]

  def step():
    holder[0], stats = compiled(holder[0], batch, rng)
    jax.block_until_ready(stats['loss'])

  return step


def attention_worker(args) -> None:
  """The vision tower's attention alone, forward + backward in bfloat16: the plain XLA path (what `clip.py` runs,
  softmax(q k^T) v) against cuDNN's fused flash attention, where the platform has it."""
  import jax
  import jax.numpy as jnp

  from actionclip_jax.model import clip

  c = clip.get_preset(args.preset)
  tokens = (c.image_resolution // c.vision_patch_size) ** 2 + 1
  shape = (args.batch * args.frames, tokens, c.vision_heads, c.vision_width // c.vision_heads)
  q, k, v = (jax.random.normal(key, shape, jnp.bfloat16) for key in jax.random.split(jax.random.key(0), 3))
  impls = ['xla', 'cudnn'] if jax.default_backend() == 'gpu' else ['xla']
  for impl in impls:
    fn = jax.jit(jax.grad(lambda q, k, v, impl=impl: jax.nn.dot_product_attention(
        q, k, v, implementation=impl).astype(jnp.float32).sum(), argnums=(0, 1, 2)))
    times = _timed(lambda: jax.block_until_ready(fn(q, k, v)), args.warmup, args.steps)
    _emit({'framework': 'jax', 'what': 'attention', 'implementation': impl, 'shape': shape, 'dtype': 'bfloat16',
           'round': args.round, 'device': jax.devices()[0].device_kind, 'platform': jax.default_backend(),
           'median_ms': 1e3 * statistics.median(times)})


def torch_worker(args) -> None:
  import torch

  sys.path.insert(0, os.path.join(ROOT, 'tests'))
  import torch_clip
  import torch_heads
  from actionclip_jax.model import clip, video

  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  kind = torch.cuda.get_device_name() if device == 'cuda' else 'cpu'
  base = dict(framework='torch', dtype=args.dtype, round=args.round, device=kind, platform=device)
  sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
  dtype = getattr(torch, args.dtype)
  a = torch.ones((args.matmul, args.matmul), dtype=dtype, device=device)

  def matmul():
    a @ a
    sync()

  times = _timed(matmul, 2, 10)
  _emit({**base, 'what': 'matmul', 'gflops': 2 * args.matmul ** 3 / statistics.median(times) / 1e9})
  if args.ceiling_only:
    return

  config = _config(args)
  clip_config = clip.get_preset(args.preset).replace(image_resolution=config.data.input_size)
  mcfg = video.ActionCLIPConfig(clip_config.replace(num_frames=args.frames), sim_header='Transf')  # for its FLOPs
  model, fusion, _ = _torch_model(torch_clip, torch_heads, clip_config, args.frames)
  ckpt = torch.load(args.checkpoint, map_location='cpu')
  model.load_state_dict({k: v.float() for k, v in ckpt['model_state_dict'].items()})
  fusion.load_state_dict({k.removeprefix('module.'): v for k, v in ckpt['fusion_model_state_dict'].items()})
  del ckpt
  model, fusion = model.to(device), fusion.to(device)
  frames, eval_frames, labels = _batch_data(args, config.data.input_size)
  mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1)
  std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1)
  autocast = lambda: torch.autocast(device, dtype=torch.bfloat16, enabled=args.dtype == 'bfloat16')  # noqa: E731

  def encode_video(f):
    b, t = f.shape[:2]
    x = f.reshape(b * t, *f.shape[2:]).permute(0, 3, 1, 2).float().div(255).sub(mean).div(std)
    image = model.encode_image(x)
    return fusion(image.view(b, t, -1))[0]

  def gpu_peak():
    return torch.cuda.max_memory_allocated() if device == 'cuda' else None

  # --- Eval ---
  model.eval(), fusion.eval()
  eval_t = torch.from_numpy(eval_frames).to(device)

  def eval_step():
    with torch.no_grad(), autocast():
      encode_video(eval_t)
    sync()

  times = _timed(eval_step, args.warmup, args.steps)
  _emit({**base, 'what': 'eval', 'batch': args.eval_batch, 'times': times, 'compile_s': None,
         'flops': eval_flops(mcfg, args.eval_batch), 'peak_rss': _peak_rss(),
         'peak_device_bytes': gpu_peak()})

  # --- Train: the official step ---
  model.train(), fusion.train()
  s = config.solver
  visual = list(model.visual.parameters())
  text = [p for p in model.parameters() if all(p is not v for v in visual)]
  optimizer = torch.optim.AdamW([{'params': text}, {'params': visual, 'lr': s.lr * s.ratio},
                                 {'params': fusion.parameters(), 'lr': s.lr * s.f_ratio}],
                                lr=s.lr, betas=tuple(s.betas), eps=s.eps, weight_decay=s.weight_decay)
  table = prompt_table(args, clip_config.context_length)
  frames_t = torch.from_numpy(frames).to(device)
  labels_t = torch.from_numpy(labels).long()
  rng = np.random.default_rng(0)
  all_params = [*model.parameters(), *fusion.parameters()]

  def train_step():
    ids = torch.from_numpy(table[rng.integers(0, table.shape[0], args.batch), labels]).long().to(device)
    optimizer.zero_grad(set_to_none=True)
    with autocast():
      video_emb = encode_video(frames_t)
      text_emb = model.encode_text(ids)
      loss = torch_heads.actionclip_loss(video_emb.float(), text_emb.float(), labels_t.to(device),
                                         model.logit_scale)
    loss.backward()
    if s.clip_gradient > 0:
      torch.nn.utils.clip_grad_norm_(all_params, s.clip_gradient)
    optimizer.step()
    loss.item()

  times = _timed(train_step, args.warmup, args.steps)
  _emit({**base, 'what': 'train', 'batch': args.batch, 'times': times, 'compile_s': None,
         'flops': train_flops(mcfg, args), 'peak_rss': _peak_rss(),
         'peak_device_bytes': gpu_peak()})


def _torch_model(torch_clip, torch_heads, c, frames):
  arch = dict(embed_dim=c.embed_dim, image_resolution=c.image_resolution, vision_layers=c.vision_layers,
              vision_width=c.vision_width, vision_patch_size=c.vision_patch_size, context_length=c.context_length,
              vocab_size=c.vocab_size, transformer_width=c.transformer_width, transformer_heads=c.transformer_heads,
              transformer_layers=c.transformer_layers)
  model = torch_clip.CLIP(**arch, T=frames)
  fusion = torch_heads.VisualPrompt('Transf', c.embed_dim, frames, max(1, c.transformer_width // 64))
  return model, fusion, arch


# ------------------------------------------------------------------------------------------------------------------
# The driver: one checkpoint, then the workers, interleaved.


def write_weights(args, workdir: str) -> tuple[str, str]:
  """An official-format checkpoint (for PyTorch) and the same weights as our params (msgpack, for JAX)."""
  import flax.serialization
  import jax
  import torch

  sys.path.insert(0, os.path.join(ROOT, 'tests'))
  import torch_clip
  import torch_heads
  from actionclip_jax.model import clip
  from actionclip_jax.weights import pretrained

  config = _config(args)
  c = clip.get_preset(args.preset).replace(image_resolution=config.data.input_size)
  torch.manual_seed(0)
  model, fusion, _ = _torch_model(torch_clip, torch_heads, c, args.frames)
  torch_heads.randomize_(fusion, seed=0)
  torch_clip.convert_weights_to_fp16(model)
  checkpoint = os.path.join(workdir, 'official.pt')
  torch.save({'model_state_dict': model.state_dict(),
              'fusion_model_state_dict': {f'module.{k}': v for k, v in fusion.state_dict().items()},
              'optimizer_state_dict': {'state': {}, 'param_groups': []}, 'epoch': 0}, checkpoint)
  del model, fusion
  loaded = pretrained.load_pretrained(checkpoint, num_frames=args.frames, sim_header='Transf')
  params = os.path.join(workdir, 'params.msgpack')
  with open(params, 'wb') as f:
    f.write(flax.serialization.msgpack_serialize(jax.tree_util.tree_map(np.asarray, loaded.params)))
  return checkpoint, params


def run_worker(args, framework: str, dtype: str, round_: int, checkpoint: str, params: str) -> list[dict]:
  cmd = [sys.executable, os.path.abspath(__file__), '--worker', framework, '--dtype', dtype, '--round', str(round_),
         '--checkpoint', checkpoint, '--params', params, '--preset', args.preset, '--frames', str(args.frames),
         '--batch', str(args.batch), '--eval-batch', str(args.eval_batch), '--steps', str(args.steps),
         '--warmup', str(args.warmup), '--matmul', str(args.matmul), '--classes', str(args.classes),
         '--scan-unroll', str(args.scan_unroll), '--remat', args.remat]
  cmd += ['--ceiling-only'] if args.ceiling_only else []
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
  records = [json.loads(line[len('RESULT '):]) for line in proc.stdout.splitlines() if line.startswith('RESULT ')]
  if proc.returncode != 0:
    raise RuntimeError(f'{framework} {dtype} worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}')
  return records


def summarize(records: list[dict]) -> list[dict]:
  """One row per (what, dtype, framework): medians per round, % of ceiling, clips/s, MFU where the peak is known."""
  ceilings = {(r['framework'], r['dtype'], r['round']): r['gflops'] for r in records if r['what'] == 'matmul'}
  rows = {}
  for r in records:
    if r['what'] in ('matmul', 'attention'):
      continue
    row = rows.setdefault((r['what'], r['dtype'], r['framework']), {
        'what': r['what'], 'dtype': r['dtype'], 'framework': r['framework'], 'batch': r['batch'],
        'device': r['device'], 'median_s': [], 'clips_per_sec': [], 'pct_ceiling': [], 'compile_s': [],
        'peak_rss_gib': [], 'peak_device_gib': [], 'mfu': []})
    t = statistics.median(r['times'])
    row['median_s'].append(t)
    row['clips_per_sec'].append(r['batch'] / t)
    row['pct_ceiling'].append(100 * r['flops'] / t / 1e9 / ceilings[(r['framework'], r['dtype'], r['round'])])
    if r['compile_s'] is not None:
      row['compile_s'].append(r['compile_s'])
    row['peak_rss_gib'].append(r['peak_rss'] / 2 ** 30)
    if r.get('peak_device_bytes'):
      row['peak_device_gib'].append(r['peak_device_bytes'] / 2 ** 30)
    from actionclip_jax.runs import metrics
    peak = metrics.peak_flops(r['device']) if r['platform'] != 'cpu' else None
    if peak:
      row['mfu'].append(100 * r['flops'] / t / peak)
  return list(rows.values())


def _fmt(values, spec='.2f') -> str:
  return ' / '.join(format(v, spec) for v in values) if values else '—'


def markdown(rows: list[dict], records: list[dict]) -> str:
  lines = ['| step | dtype | framework | s / step (per round) | clips/s | % of matmul ceiling | compile s | '
           'peak RSS GiB | peak device GiB | MFU % |', '|---|---|---|---:|---:|---:|---:|---:|---:|---:|']
  for r in sorted(rows, key=lambda r: (r['what'] != 'train', r['dtype'] != 'float32', r['framework'])):
    lines.append(f"| {r['what']} B={r['batch']} | {r['dtype']} | {r['framework']} | {_fmt(r['median_s'])} | "
                 f"{_fmt(r['clips_per_sec'])} | {_fmt(r['pct_ceiling'], '.0f')} | {_fmt(r['compile_s'], '.1f')} | "
                 f"{_fmt(r['peak_rss_gib'])} | {_fmt(r['peak_device_gib'])} | {_fmt(r['mfu'], '.1f')} |")
  by = {(r['what'], r['dtype'], r['framework']): r for r in rows}
  lines += ['', '| ratio (PyTorch time / ours, same round) | per round |', '|---|---:|']
  for what in ('train', 'eval'):
    for dtype in ('float32', 'bfloat16'):
      ours, theirs = by.get((what, dtype, 'jax')), by.get((what, dtype, 'torch'))
      if ours and theirs:
        lines.append(f"| {what} {dtype} | {_fmt([t / o for t, o in zip(theirs['median_s'], ours['median_s'])])} |")
  ceilings = {}
  for r in records:
    if r['what'] == 'matmul':
      ceilings.setdefault((r['framework'], r['dtype']), []).append(r['gflops'])
  lines += ['', '| matmul ceiling GFLOP/s (per round) | float32 | bfloat16 |', '|---|---:|---:|']
  for fw in ('torch', 'jax'):
    lines.append(f"| {fw} | {_fmt(ceilings.get((fw, 'float32'), []), '.0f')} | "
                 f"{_fmt(ceilings.get((fw, 'bfloat16'), []), '.0f')} |")
  attention = [r for r in records if r['what'] == 'attention']
  if attention:
    lines += ['', f"| attention fwd + bwd, bfloat16, q/k/v {attention[0]['shape']} | ms |", '|---|---:|']
    lines += [f"| {r['implementation']} | {r['median_ms']:.2f} |" for r in attention]
  return '\n'.join(lines)


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--preset', default='ViT-B/32')
  parser.add_argument('--frames', type=int, default=8)
  parser.add_argument('--batch', type=int, default=4)
  parser.add_argument('--eval-batch', type=int, default=8)
  parser.add_argument('--steps', type=int, default=5, help='timed steps (median)')
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--dtypes', default='float32,bfloat16')
  parser.add_argument('--frameworks', default='torch,jax')
  parser.add_argument('--matmul', type=int, default=2048, help='side of the square matmul that sets the ceiling')
  parser.add_argument('--out', default='', help='also write the JSON lines here')
  parser.add_argument('--attention', action='store_true', help='also time plain vs cuDNN attention (fwd + bwd)')
  parser.add_argument('--ceiling-only', action='store_true', help='only the matmul ceilings (seconds)')
  parser.add_argument('--classes', type=int, default=400, help='classes of the prompt table')
  parser.add_argument('--scan-unroll', type=int, default=1, help="our towers' network.scan_unroll")
  parser.add_argument('--remat', default='auto', help="our network.remat (auto, none, full, dots)")
  parser.add_argument('--worker', choices=('jax', 'torch', 'attention'), help=argparse.SUPPRESS)
  parser.add_argument('--dtype', default='float32', help=argparse.SUPPRESS)
  parser.add_argument('--round', type=int, default=0, help=argparse.SUPPRESS)
  parser.add_argument('--checkpoint', help=argparse.SUPPRESS)
  parser.add_argument('--params', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    {'jax': jax_worker, 'torch': torch_worker, 'attention': attention_worker}[args.worker](args)
    return []

  records = []
  frameworks = args.frameworks.split(',')
  with tempfile.TemporaryDirectory() as workdir:
    checkpoint, params = ('', '') if args.ceiling_only else write_weights(args, workdir)
    for round_ in range(args.rounds):
      order = frameworks if round_ % 2 == 0 else frameworks[::-1]
      for dtype in args.dtypes.split(','):
        for framework in order:
          for record in run_worker(args, framework, dtype, round_, checkpoint, params):
            records.append(record)
            print(json.dumps(record), flush=True)
    if args.attention and not args.ceiling_only:
      for record in run_worker(args, 'attention', 'bfloat16', 0, checkpoint, params):
        records.append(record)
        print(json.dumps(record), flush=True)
  if args.out:
    with open(args.out, 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in records)
  rows = summarize(records)
  print(markdown(rows, records))
  return rows


if __name__ == '__main__':
  main()
