"""The pod plan: for a recipe on a TPU target, the largest global batch that fits each mesh and remat mode, found by
compiling (`launch.py --mode=compile`, libtpu, no TPU), with what each fit costs. One JSON line a compile to --out,
then a Markdown table of the largest fitting batch of each (recipe, target, mesh, remat).

    .venv/bin/python benchmarks/pod_plan.py --recipe b16_8f --target v5e-256 --mesh data --remat none,dots
    .venv/bin/python benchmarks/pod_plan.py --recipe b16_8f --target v5e-256 --mesh fsdp16 --remat full --start 16

The search doubles the per-chip batch from --start while it fits, then halves the gap between the largest that fit
and the smallest that did not, down to --resolution clips a chip: every number in a row comes from a compile.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from actionclip_jax.runs import aot  # noqa: E402  pylint: disable=wrong-import-position

RECIPES = {  # name -> configs/k400.py arguments
    'b32_8f': 'arch=ViT-B/32,frames=8', 'b16_8f': 'arch=ViT-B/16,frames=8', 'b16_16f': 'arch=ViT-B/16,frames=16',
    'b16_32f': 'arch=ViT-B/16,frames=32', 'l14_8f': 'arch=ViT-L/14,frames=8',
    'b16_8f_wti': 'arch=ViT-B/16,frames=8,wti',
}
TARGETS = {  # name as Cloud TPU sells it -> (topology, slices); v4 and v5p names count TensorCores, two a chip
    'v5e-64': ('v5e:8x8', 1), 'v5e-256': ('v5e:16x16', 1), 'v5p-128': ('v5p:4x4x4', 1), 'v4-128': ('v4:4x4x4', 1),
    '2x v5e-256': ('v5e:16x16', 2),
}
MESHES = {  # name -> mesh overrides (data fills the rest)
    'data': [], 'fsdp4': ['--config.mesh.fsdp=4'], 'fsdp16': ['--config.mesh.fsdp=16'],
    'fsdp64': ['--config.mesh.fsdp=64'],
}


def compile_once(recipe: str, target: str, mesh: str, remat: str, global_batch: int) -> dict:
  topology, slices = TARGETS[target]
  with tempfile.TemporaryDirectory() as workdir:
    args = [sys.executable, os.path.join(ROOT, 'launch.py'), f'--config={os.path.join(ROOT, "configs/k400.py")}:'
            f'{RECIPES[recipe]}', f'--workdir={workdir}', '--mode=compile', f'--config.compile.topology={topology}',
            f'--config.compile.num_slices={slices}', '--config.compile.num_classes=400',
            f'--config.data.batch_size={global_batch}', f'--config.network.remat={remat}', *MESHES[mesh]]
    start = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                          # libtpu admits one process at a time unless told otherwise; these open no TPU.
                          env=dict(os.environ, JAX_PLATFORMS='cpu', ALLOW_MULTIPLE_LIBTPU_LOAD='1', PYTHONPATH=ROOT))
    seconds = time.perf_counter() - start
    row = {'recipe': recipe, 'target': target, 'mesh': mesh, 'remat': remat, 'global_batch': global_batch,
           'compile_s': round(seconds, 1), 'command': ' '.join(['python', *args[1:]]).replace(workdir, 'W')}
    if done.returncode != 0:
      return {**row, 'error': done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'failed'}
    with open(os.path.join(workdir, 'compile.json')) as f:
      return {**row, 'report': json.load(f)}


def _devices(topology: str, slices: int) -> int:
  """How many devices the target shows, the data-parallel size a batch must divide by: its chips (a v4 chip is one
  device in megacore mode, as `aot.target_devices` describes it), counted from the name."""
  return aot.chips_in(topology, slices)


def _out_of_memory(error: str) -> bool:
  return 'RESOURCE_EXHAUSTED' in error or 'out of memory' in error.lower()


def fits(row: dict) -> bool:
  """Whether the compile fits the chip's HBM; XLA refusing to compile for lack of memory is a no, any other error
  stops the plan."""
  if 'report' in row:
    return bool(row['report']['per_chip_bytes']['fits'])
  if _out_of_memory(row['error']):
    return False
  raise SystemExit(f'{row["command"]}: {row["error"]}')


def search(recipe, target, mesh, remat, chips, start, resolution, emit, largest=512) -> dict | None:
  """The compile of the largest fitting global batch (per-chip batch a multiple of `resolution`, at most `largest`),
  or None."""
  best, worst, per_chip = None, None, start
  while True:  # double while it fits, up to `largest` a chip
    row = emit(compile_once(recipe, target, mesh, remat, per_chip * chips))
    if not fits(row):
      worst = per_chip
      break
    best, per_chip = row, per_chip * 2
    if per_chip > largest:
      return best
  low = best['global_batch'] // chips if best else 0
  while worst - low > resolution:  # then bisect
    mid = (low + worst) // 2 // resolution * resolution
    if mid <= low:
      break
    row = emit(compile_once(recipe, target, mesh, remat, mid * chips))
    if fits(row):
      best, low = row, mid
    else:
      worst = mid
  return best


# Input supply. Clips per second per CPU core of the raw-video and packed pipelines (BENCHMARKS.md, median rows of
# `benchmarks/data_throughput.py`: 340x256 h264 clips, 8 frames of 224^2), and a TPU host's vCPUs per chip (Cloud TPU
# pages: a v5e 8-chip VM ct5lp-hightpu-8t has 224, a v5p 4-chip VM 208; v4 not checked), counting a vCPU as a core.
RAW_PER_CORE, PACKED_PER_CORE = 16.9, 90.5
VCPUS_PER_CHIP = {'TPU v5 lite': 224 / 8, 'TPU v5': 208 / 4}
K400_SCHEDULE_CLIPS = 50 * 240_000  # the official recipe: 50 epochs of Kinetics-400's ~240k training videos


def markdown(rows: list[dict]) -> str:
  lines = ['| recipe | target | mesh | remat | largest batch (a chip) | per chip: state / temporaries / total of HBM | '
           'collectives a step | estimate: step >=, clips/s <= (a chip) | K400 schedule >= chip-hours | '
           'host supply a chip: raw / packed clips/s | compile |', '|---|---|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    rep = r['report']
    m, e = rep['per_chip_bytes'], rep['estimate']
    moved = sum(v['bytes'] for v in rep['collectives'].values())
    per_chip = e['clips_per_s_per_chip_upper_bound']
    hours = K400_SCHEDULE_CLIPS / e['clips_per_s_upper_bound'] * rep['chips'] / 3600
    vcpus = VCPUS_PER_CHIP.get(rep['device_kind'])
    supply = '-' if vcpus is None else f'{RAW_PER_CORE * vcpus:.0f} / {PACKED_PER_CORE * vcpus:.0f}'
    lines.append(
        f'| {r["recipe"]} | {r["target"]} | {", ".join(f"{k} {v}" for k, v in rep["mesh"].items() if v != 1)} | '
        f'{r["remat"]} | {">= " if r.get("capped") else ""}{r["global_batch"]} ({rep["per_chip_batch"]:g}) | '
        f'{m["arguments"] / 2**30:.2f} / '
        f'{m["temporaries"] / 2**30:.2f} / {m["total"] / 2**30:.2f} of {m["hbm_bytes"] / 2**30:.0f} GiB | '
        f'{moved / 2**30:.2f} GiB | {e["step_s_lower_bound"] * 1e3:.0f} ms, {e["clips_per_s_upper_bound"]:.0f} '
        f'({per_chip:.0f}) | {hours:.0f} | {supply} | {r["compile_s"]:.0f} s |')
  return '\n'.join(lines)


def largest_fits(rows: list[dict]) -> list[dict]:
  """Of compiles in JSON lines, the largest fitting batch of each (recipe, target, mesh, remat), in first-seen order;
  `capped` where no larger batch was found not to fit (the search stopped at --largest, or the compiler crashed)."""
  best, failed = {}, {}
  for r in rows:
    key = (r['recipe'], r['target'], r['mesh'], r['remat'])
    if 'report' in r and r['report']['per_chip_bytes']['fits']:
      if key not in best or r['global_batch'] > best[key]['global_batch']:
        best[key] = r
    elif 'report' in r or _out_of_memory(r['error']):  # not a compiler crash: a batch that does not fit
      failed.setdefault(key, []).append(r['global_batch'])
  return [{**r, 'capped': not any(b > r['global_batch'] for b in failed.get(key, []))} for key, r in best.items()]


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--recipe', default='b16_8f', help=f'one or more of {", ".join(RECIPES)}')
  p.add_argument('--target', default='v5e-256', help=f'one or more of {", ".join(TARGETS)}')
  p.add_argument('--mesh', default='data', help=f'one or more of {", ".join(MESHES)}')
  p.add_argument('--remat', default='none', help='one or more of none, dots, full')
  p.add_argument('--start', type=int, default=1, help='first per-chip batch tried')
  p.add_argument('--resolution', type=int, default=1, help='per-chip batch granularity of the bisection')
  p.add_argument('--largest', type=int, default=512, help='per-chip batch the search stops at even if it fits')
  p.add_argument('--out', default=os.path.join(ROOT, 'workdirs', 'pod_plan.jsonl'))
  p.add_argument('--table', action='store_true', help='only print the table of the compiles already in --out')
  args = p.parse_args(argv)
  if args.table:
    with open(args.out) as f:
      print(markdown(largest_fits([json.loads(line) for line in f])))
    return
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)

  rows = []

  def emit(row):
    with open(args.out, 'a') as f:
      f.write(json.dumps(row) + '\n')
    print(json.dumps({k: v for k, v in row.items() if k != 'report'}), flush=True)
    rows.append(row)
    return row

  for recipe in args.recipe.split(','):
    for target in args.target.split(','):
      devices = _devices(*TARGETS[target])
      for mesh in args.mesh.split(','):
        for remat in args.remat.split(','):
          search(recipe, target, mesh, remat, devices, args.start, args.resolution, emit, args.largest)
  print(markdown(largest_fits(rows)))


if __name__ == '__main__':
  main()
