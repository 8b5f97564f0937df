"""`--mode=compile`: the train step `train()` runs, compiled ahead of time for a TPU topology (or this host's own
devices) and sized, without running it: WORKDIR/compile.json, also printed as a table.

    python launch.py --config=configs/k400.py:arch=ViT-B/16,frames=8 --mode=compile --workdir=W \\
        --config.compile.topology=v5e:16x16 [--config.compile.num_slices=2] [--config.data.batch_size=4096]

A TPU topology needs libtpu (`pip install -e '.[tpu]'`), not a TPU: `jax.experimental.topologies` describes the
chips and XLA's TPU compiler runs on this host (maxtext's train_compile.py, axlearn's run_aot_compilation.py). The
step is `train.build_step`'s, the one `train()` compiles: the same builders, shardings, donation, and the dtype and
remat that `network.dtype` and `network.remat` resolve to on the target platform. No data is read beyond a label
list (or `compile.num_classes` classes) and, when given, the train list, whose length sets the schedule.

compile.json (every byte count per chip):
- `per_chip_bytes` from XLA's memory analysis of the compiled step: `arguments` (the state and the batch),
  `outputs` (the new state and the stats), `aliased` (outputs written into a donated argument's buffers: the
  state), `temporaries`, `generated_code`; `total` = arguments + outputs - aliased + temporaries + generated code,
  what must be resident at the step's peak (the runtime's own buffers and the input pipeline's prefetched batches come
  on top); `hbm_bytes` (the chip's HBM, HBM below; per device where a chip shows as several), `fits`, `headroom_bytes`.
- `flops_per_chip`: `model.flops.train_step` over the chips; `xla_flops_per_chip`: XLA's cost analysis, which
  counts a scanned layer once (about 1/12 of the towers' work at ViT-B), for comparison only.
- `collectives`: per kind, count and bytes a step, ops in loops counted by their trip count (`collectives.count`).
- `estimate` (an estimate, labelled so): a lower bound on the step time, the larger of the FLOPs at the chip's
  peak bf16 rate and the state's bytes read and written once at its HBM bandwidth; the clips/s a chip and the slice
  that bound allows; XLA's own estimate where it reports one that is not negative.
"""
from __future__ import annotations

import json
import math
import os
import re

import jax
from absl import logging

from actionclip_jax.runs import builders, collectives, executables, inputs, metrics, sharding, train
from data_pipelines import annotations

# HBM capacity (bytes) and bandwidth (bytes/s) of one chip, by `device_kind`, from Google Cloud's TPU pages
# (cloud.google.com/tpu/docs/v4, v5e, v5p-training, v6e): v4 32 GiB and 1,200 GB/s; v5e 16 GB and 819 GB/s; v5p 95 GB
# and 2,765 GB/s; v6e 32 GB and 1,640 GB/s. The capacities are taken as GiB (HBM stacks come in powers of two);
# the order matters: 'TPU v5' (v5p) is a substring of 'TPU v5 lite' (v5e).
HBM = {'TPU v5 lite': (16 * 2**30, 819e9), 'TPU v6 lite': (32 * 2**30, 1640e9), 'TPU v4': (32 * 2**30, 1200e9),
       'TPU v5': (95 * 2**30, 2765e9)}


def _chip(device_kind: str) -> tuple[float | None, float | None, float | None]:
  """(HBM bytes, HBM bytes/s, peak bf16 FLOP/s) of one chip of this kind; None where unknown (CPUs)."""
  for name, (capacity, bandwidth) in HBM.items():
    if name.lower() in device_kind.lower():
      return capacity, bandwidth, metrics.peak_flops(device_kind)
  return None, None, metrics.peak_flops(device_kind)


def target_devices(config) -> list:
  """The devices the step is compiled for: `compile.topology`'s chips (times `compile.num_slices`), else this
  host's. Raises ValueError naming the topology when libtpu is missing or does not know it."""
  c = config.compile
  if not c.topology:
    return jax.devices()
  from jax.experimental import topologies
  # A v4 chip's two TensorCores are one device in megacore mode, which is what a mesh on v4 needs (jax refuses one
  # device per core); libtpu describes v4 per core unless asked.
  options = {'chip_config_name': 'megacore'} if c.topology.startswith('v4') else {}
  try:
    found = topologies.get_topology_desc(topology_name=c.topology, platform='tpu', num_slices=c.num_slices,
                                         **options)
  except Exception as e:  # libtpu missing or a topology it rejects; jaxlib raises several types
    raise ValueError(f'compile.topology={c.topology!r} (compile.num_slices={c.num_slices}) cannot be described '
                     f'here: {str(e).splitlines()[0]}. A TPU topology needs libtpu: pip install -e ".[tpu]"') from e
  return list(found.devices)


def chips_in(topology: str, num_slices: int) -> int | None:
  """The chip count a topology name gives ('v5e:16x16' -> 256), times the slices; None for this host."""
  dims = re.findall(r'\d+', topology.partition(':')[2])
  return math.prod(map(int, dims)) * num_slices if dims else None


def compile_for(config, workdir: str) -> dict:
  """Compiles the train step for the target, writes WORKDIR/compile.json (and compile.save), returns the report."""
  devices = target_devices(config)
  platform = devices[0].platform
  mcfg = builders.model_config(config, platform=platform)
  mesh = sharding.make_mesh(config.mesh, devices)
  data = config.data
  names = (inputs.label_names(data) if data.label_list
           else [f'class {i}' for i in range(config.compile.num_classes)])
  examples = len(annotations.read_video_list(data.train_list, names, data.root or None)) if data.train_list else 0
  total_steps, warmup_steps = builders.schedule_steps(config.solver, examples, data.batch_size)
  program = train.build_step(config, mcfg, names, mesh, warmup_steps, total_steps)
  logging.info('Compiling the train step for %d %s devices, mesh %s', len(devices), devices[0].device_kind,
               dict(mesh.shape))
  compiled = builders.compile_step(program.fn, program.layout, program.batch, program.rng, mesh)
  report = _report(config, devices, mesh, mcfg, program, compiled)
  if config.compile.save:
    executables.save(compiled, config.compile.save, program.signature(config, devices))
    report['saved'] = config.compile.save
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'compile.json'), 'w') as f:
      json.dump(report, f, indent=2)
    print(table(report), flush=True)
  return report


def _report(config, devices, mesh, mcfg, program, compiled) -> dict:
  count = len(devices)
  chips = chips_in(config.compile.topology, config.compile.num_slices) or count
  per_chip = count // chips  # devices a chip shows as (1: v4 is described in megacore mode)
  capacity, bandwidth, peak = _chip(devices[0].device_kind)
  hbm = capacity / per_chip if capacity else None
  bandwidth = bandwidth / per_chip if bandwidth else None
  peak = peak / per_chip if peak else None

  memory = compiled.memory_analysis()
  sizes = {name: int(getattr(memory, f'{field}_size_in_bytes', 0) or 0) for name, field in (
      ('arguments', 'argument'), ('outputs', 'output'), ('aliased', 'alias'), ('temporaries', 'temp'),
      ('generated_code', 'generated_code'))}
  total = sizes['arguments'] + sizes['outputs'] - sizes['aliased'] + sizes['temporaries'] + sizes['generated_code']
  per_chip_bytes = {**sizes, 'total': total, 'hbm_bytes': hbm, 'fits': None if hbm is None else total <= hbm,
                    'headroom_bytes': None if hbm is None else hbm - total}

  cost = compiled.cost_analysis()
  cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
  global_batch = config.data.batch_size
  flops_per_chip = program.flops / count
  estimate = {'label': 'estimates: a lower bound from peak rates, not a measurement'}
  if peak and bandwidth:
    compute_s = flops_per_chip / peak
    memory_s = (sizes['arguments'] + sizes['outputs']) / bandwidth
    step_s = max(compute_s, memory_s)
    estimate.update(peak_bf16_flops_per_chip=peak, hbm_bytes_per_s=bandwidth, compute_bound_s=compute_s,
                    memory_bound_s=memory_s, step_s_lower_bound=step_s,
                    clips_per_s_per_chip_upper_bound=global_batch / count / step_s,
                    clips_per_s_upper_bound=global_batch / step_s)
  xla_seconds = cost.get('optimal_seconds')
  estimate['xla_optimal_seconds'] = xla_seconds if xla_seconds is not None and xla_seconds >= 0 else None

  slices = len({getattr(d, 'slice_index', 0) for d in devices})
  return {
      'topology': config.compile.topology or f'this host ({_host(devices)})',
      'num_slices': slices, 'chips': count, 'device_kind': devices[0].device_kind,
      'devices_per_chip': per_chip,
      'mesh': {**{axis: int(size) for axis, size in mesh.shape.items()}, 'slices (within data)': slices},
      'global_batch': global_batch, 'per_chip_batch': global_batch / count,
      'dtype': mcfg.clip.dtype, 'remat': mcfg.clip.remat, 'model': {
          'arch': config.network.arch, 'frames': mcfg.num_frames, 'sim_header': mcfg.sim_header,
          'interaction': mcfg.interaction, 'prompt_table': list(program.table_shape)},
      'per_chip_bytes': per_chip_bytes,
      'flops_per_chip': flops_per_chip, 'xla_flops_per_chip': cost.get('flops'),
      'collectives': collectives.count(compiled.as_text()),
      'estimate': estimate,
      'jax': f'{jax.__version__}',
  }


def _host(devices) -> str:
  return f'{len(devices)} {devices[0].platform} device{"s" if len(devices) > 1 else ""}'


def _gib(x) -> str:
  return '-' if x is None else f'{x / 2**30:.2f} GiB'


def table(report: dict) -> str:
  """The report as a short Markdown table."""
  m, e = report['per_chip_bytes'], report['estimate']
  rows = [
      ('target', f'{report["topology"]}: {report["chips"]} x {report["device_kind"]}, {report["num_slices"]} slice(s)'),
      ('mesh', ', '.join(f'{k} {v}' for k, v in report['mesh'].items())),
      ('batch', f'{report["global_batch"]} global, {report["per_chip_batch"]:g} a chip; {report["dtype"]}, '
                f'remat {report["remat"]}'),
      ('per chip', f'arguments {_gib(m["arguments"])}, outputs {_gib(m["outputs"])} (aliased {_gib(m["aliased"])}), '
                   f'temporaries {_gib(m["temporaries"])}; total {_gib(m["total"])} of {_gib(m["hbm_bytes"])}'),
      ('fits', '-' if m['fits'] is None else f'{"yes" if m["fits"] else "NO"}, headroom {_gib(m["headroom_bytes"])}'),
      ('FLOPs a chip', f'{report["flops_per_chip"]:.4g} (XLA counts {report["xla_flops_per_chip"] or 0:.4g})'),
      ('collectives', ', '.join(f'{k} {v["count"]} ({v["bytes"] / 2**20:.1f} MiB)'
                                for k, v in report['collectives'].items() if v['count']) or 'none'),
  ]
  if 'step_s_lower_bound' in e:
    rows.append(('estimate', f'step >= {e["step_s_lower_bound"] * 1e3:.1f} ms, <= '
                             f'{e["clips_per_s_upper_bound"]:.0f} clips/s ({e["clips_per_s_per_chip_upper_bound"]:.1f} '
                             'a chip)'))
  return '\n'.join(['| compile | |', '|---|---|', *(f'| {k} | {v} |' for k, v in rows)])
