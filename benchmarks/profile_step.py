"""Where a train step's (or the eval encode's) time goes: a `jax.profiler` trace, broken down per XLA op.

    .venv/bin/python benchmarks/profile_step.py                    # ViT-B/32, 8 frames, B=4, float32 (~1 min on CPU)
    .venv/bin/python benchmarks/profile_step.py --preset tiny --frames 2 --batch 2 --steps 1   # seconds
    .venv/bin/python benchmarks/profile_step.py --eval --batch 8   # the eval encode (encode_video) instead

The step is `train_step.py`'s (`train.make_train_step` on the `configs/k400.py` recipe, random weights: timing
does not depend on their values). After one warm-up step, `--steps` steps run under `jax.profiler.trace` with a
Perfetto trace; every event the XLA runtime records for an HLO op (`args.hlo_op`) is matched to that op in the
compiled module's text, which gives its kind (a dot, a fusion and what it fuses, a copy, ...) and the JAX name
stack it came from (`metadata.op_name`): forward or backward (`transpose(jvp(...))`), and the module path. Prints
Markdown tables: time by kind, by phase and kind, by phase and module, and the costliest ops; `--out` writes them
and every op's time as JSON.

Op times are summed over the runtime's threads, so on a machine whose runtime runs independent ops concurrently
they can add up to more than the wall time of a step; both are printed.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_step  # noqa: E402  pylint: disable=wrong-import-position

_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%([\w.\-]+) = (.+?) ([\w\-]+)\((.*)$')
_COMPUTATION = re.compile(r'^(?:ENTRY )?%([\w.\-]+) ')
_CALLS = re.compile(r'calls=%([\w.\-]+)')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
# What a fused computation's body decides about its kind, strongest first.
_FUSED_KINDS = (('dot', 'matmul'), ('convolution', 'conv'), ('reduce', 'reduction'), ('transpose', 'layout'),
                ('scatter', 'scatter/gather'), ('gather', 'scatter/gather'))


CONTAINERS = ('while', 'conditional', 'call')


def hlo_ops(hlo_text: str) -> dict[str, dict]:
  """{instruction name: {'opcode', 'kind', 'op_name'}} of a compiled module's text."""
  bodies: dict[str, list[str]] = collections.defaultdict(list)  # computation -> opcodes in it
  instructions = {}
  computation = None
  for line in hlo_text.splitlines():
    header = _COMPUTATION.match(line)
    if header and line.rstrip().endswith('{'):
      computation = header.group(1)
      continue
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    name, _, opcode, rest = m.groups()
    bodies[computation].append(opcode)
    calls = _CALLS.search(rest)
    op_name = _OP_NAME.search(rest)
    instructions[name] = {'opcode': opcode, 'calls': calls.group(1) if calls else None,
                          'op_name': op_name.group(1) if op_name else ''}
  for op in instructions.values():
    op['kind'] = _kind(op['opcode'], bodies.get(op.pop('calls'), []))
  return instructions


def _kind(opcode: str, body: list[str]) -> str:
  if opcode == 'fusion':
    return next((kind for key, kind in _FUSED_KINDS if key in body), 'elementwise')
  return {'dot': 'matmul', 'convolution': 'conv', 'copy': 'layout', 'transpose': 'layout',
          'reduce': 'reduction'}.get(opcode, opcode)


def phase_and_module(op_name: str) -> tuple[str, str]:
  """('backward' | 'forward' | 'optimizer and the rest', module path) from a JAX name stack such as
  `jit(step)/transpose(jvp(ActionCLIP))/clip/visual/transformer/resblocks/attn/dot_general`."""
  if 'transpose(' in op_name:
    phase = 'backward'
  elif 'jvp(' in op_name:
    phase = 'forward'
  else:
    phase = 'optimizer and the rest'
  # The name stack between the jit and the primitive, without transforms (`jvp(...)`) and scan plumbing.
  parts = [p for p in op_name.split('/')[1:-1]
           if not re.match(r'^\w+\(.*\)$', p) and p not in ('while', 'body', 'closed_call', 'clip', 'resblocks')]
  module = '/'.join(parts)
  for depth_cut in ('attn', 'mlp', 'ln_1', 'ln_2', 'c_fc', 'c_proj'):
    if f'/{depth_cut}' in f'/{module}':  # one row per block part, not per projection
      module = module[:f'/{module}'.index(f'/{depth_cut}') + len(depth_cut)].lstrip('/')
      break
  return phase, module or '(top level)'


def op_times(trace_dir: str, module_prefix: str) -> dict[str, float]:
  """Microseconds per HLO op over the trace's events of modules named `module_prefix*`."""
  paths = glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True)
  if not paths:
    raise FileNotFoundError(f'no Perfetto trace under {trace_dir}')
  with gzip.open(max(paths, key=os.path.getmtime)) as f:
    trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  totals: dict[str, float] = collections.Counter()
  for e in events:
    args = e.get('args') or {}
    if e.get('ph') == 'X' and 'hlo_op' in args and args.get('hlo_module', '').startswith(module_prefix):
      totals[args['hlo_op']] += e.get('dur', 0.0)
  return totals


def profile(compiled, call, steps: int) -> tuple[dict[str, float], dict[str, dict], float]:
  """Runs `call` (which runs `compiled`) once, then `steps` times under a trace: (seconds a call of each leaf op,
  `hlo_ops` of the module, wall seconds a call)."""
  import jax

  text = compiled.as_text()
  ops = hlo_ops(text)
  module_name = text.split('\n', 1)[0].split()[1].rstrip(',')
  call()  # warm-up
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    start = time.perf_counter()
    for _ in range(steps):
      call()
    wall = (time.perf_counter() - start) / steps
    jax.profiler.stop_trace()
    traced = op_times(trace_dir, module_name)
  unknown = sorted(set(traced) - set(ops))
  if unknown:
    raise ValueError(f'trace ops missing from the compiled module {module_name}: {unknown[:5]}')
  # A loop's or call's event spans the events of the ops in its body: counting both would count them twice.
  per_op = {name: us / steps / 1e6 for name, us in traced.items() if ops[name]['opcode'] not in CONTAINERS}
  return per_op, ops, wall


def table(rows, headers) -> str:
  lines = ['| ' + ' | '.join(headers) + ' |', '|' + '---|' * len(headers)]
  lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
  return '\n'.join(lines)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--preset', default='ViT-B/32')
  parser.add_argument('--frames', type=int, default=8)
  parser.add_argument('--batch', type=int, default=4)
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--classes', type=int, default=400, help='classes of the prompt table')
  parser.add_argument('--scan-unroll', type=int, default=1, help='network.scan_unroll')
  parser.add_argument('--remat', default='auto', help='network.remat (auto, none, full, dots)')
  parser.add_argument('--steps', type=int, default=2, help='traced steps')
  parser.add_argument('--eval', action='store_true', help="the eval encode (encode_video of --batch clips) instead")
  parser.add_argument('--top', type=int, default=15, help='rows of the costliest-ops table')
  parser.add_argument('--out', default='', help='also write the tables as JSON here')
  args = parser.parse_args(argv)
  args.eval_batch = 1

  import jax

  import jax.numpy as jnp

  from actionclip_jax.model import video
  from actionclip_jax.runs import builders

  config = train_step._config(args)  # pylint: disable=protected-access
  config.network.dtype = args.dtype
  mcfg = builders.model_config(config)
  params = video.init_params(mcfg, jax.random.key(0))
  frames, _, labels = train_step._batch_data(args, config.data.input_size)  # pylint: disable=protected-access
  start = time.perf_counter()
  if args.eval:
    compiled = train_step.jax_eval_encode(video.ActionCLIP(mcfg), jnp.dtype(args.dtype)).lower(params, frames).compile()
    frames = jax.device_put(frames)
    run = lambda: compiled(params, frames).block_until_ready()  # noqa: E731
    flops = train_step.eval_flops(mcfg, args.batch)
  else:
    step_fn, state, batch = train_step.jax_train_step(args, config, params, frames, labels)
    rng = jax.random.key(0)
    compiled = step_fn.lower(state, batch, rng).compile()
    run = train_step.stepper(compiled, state, batch, rng)
    flops = train_step.train_flops(mcfg, args)
  compile_s = time.perf_counter() - start
  per_op, ops, wall = profile(compiled, run, args.steps)
  ceiling = train_step.jax_matmul_gflops(2048, args.dtype)
  total = sum(per_op.values())
  by_kind, by_module, by_phase_kind = collections.Counter(), collections.Counter(), collections.Counter()
  for name, seconds in per_op.items():
    phase, module = phase_and_module(ops[name]['op_name'])
    by_kind[ops[name]['kind']] += seconds
    by_module[phase, module] += seconds
    by_phase_kind[phase, ops[name]['kind']] += seconds

  dots = by_kind['matmul'] + by_kind['conv']  # the patch embedding is a convolution

  def pct(seconds):
    return round(100 * seconds / total, 1)

  result = {
      'setting': {k: getattr(args, k) for k in ('preset', 'frames', 'batch', 'dtype', 'classes', 'scan_unroll',
                                                'remat', 'steps', 'eval')},
      'platform': jax.default_backend(), 'device': jax.devices()[0].device_kind,
      'compile_s': compile_s, 'step_wall_s': wall, 'ops_s': total, 'model_gflop': flops / 1e9,
      'matmul_ceiling_gflops': ceiling, 'matmul_gflops': flops / 1e9 / dots if dots else None,
      'by_kind': [{'kind': k, 's': s, 'pct': pct(s)} for k, s in by_kind.most_common()],
      'by_phase_kind': [{'phase': p, 'kind': k, 's': s, 'pct': pct(s)}
                        for (p, k), s in by_phase_kind.most_common()],
      'by_module': [{'phase': p, 'module': m, 's': s, 'pct': pct(s)} for (p, m), s in by_module.most_common()],
      'ops': [{'op': n, 'kind': ops[n]['kind'], 'opcode': ops[n]['opcode'], 's': s, 'pct': pct(s),
               'op_name': ops[n]['op_name']} for n, s in collections.Counter(per_op).most_common()],
  }
  print(f'{"eval encode" if args.eval else "train step"}: {args.preset}, {args.frames} frames, B={args.batch}, '
        f'{args.dtype}, scan_unroll {args.scan_unroll}, '
        f'remat {args.remat}, {jax.devices()[0].device_kind}: compiled in {compile_s:.1f} s, {wall:.3f} s a step '
        f'(wall), {total:.3f} s in {len(per_op)} ops (summed over threads); the analytic '
        f'{flops / 1e9:.0f} GFLOP of matmuls in {dots:.3f} s of matmul and conv ops: '
        f'{result["matmul_gflops"] or 0:.0f} GFLOP/s, against {ceiling:.0f} GFLOP/s on one 2048² matmul\n')
  print(table([(r['kind'], f'{r["s"]:.3f}', r['pct']) for r in result['by_kind']], ('kind', 's / step', '%')))
  print()
  print(table([(r['phase'], r['kind'], f'{r["s"]:.3f}', r['pct']) for r in result['by_phase_kind'][:args.top]],
              ('phase', 'kind', 's / step', '%')))
  print()
  print(table([(r['phase'], r['module'], f'{r["s"]:.3f}', r['pct']) for r in result['by_module'][:args.top]],
              ('phase', 'module', 's / step', '%')))
  print()
  print(table([(r['op'], r['kind'], f'{r["s"]:.3f}', r['pct'], r['op_name'][-90:])
               for r in result['ops'][:args.top]], ('op', 'kind', 's / step', '%', 'from (JAX name stack, end)')))
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == '__main__':
  main()
