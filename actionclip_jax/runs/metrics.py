"""What a run reports: a JSONL log and TensorBoard scalars, evaluation JSON, a progress bar, a parameter table.

    with metrics.MetricWriter(workdir) as writer:          # writes only on process 0
      writer.truncate_after(resumed_step)                   # on resume: drop what was logged after the checkpoint
      writer.write(step, {'loss': l, 'lr': lr, 'clips_per_sec': cps})
      writer.write_eval('k400_val', {'top1': 81.1, 'top5': 95.5})

Files under the work dir:
- `metrics.jsonl`: one JSON object per logged step, `{"step": ..., "loss": ..., "lr": ..., "clips_per_sec": ...}`,
  appended (a resumed run continues the file) and flushed line by line (a killed run keeps what it logged).
  Non-finite values are written as `null` (strict JSON). No wall-clock field, so a resumed run's lines equal an
  uninterrupted run's.
- `tensorboard/`: event files written by tensorboardX (no TensorFlow); train scalars as `train/<name>`, evaluation
  scalars as `<eval name>/<key>`. After `truncate_after(step)` the next event file starts with a purge marker at
  step + 1, so TensorBoard hides the events the previous attempt wrote after the checkpoint.
- `eval_<name>.json`: the evaluation results, rewritten atomically.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import math
import numbers
import os
import sys
import time
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging

METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_DIR = 'tensorboard'
_writer_ids = itertools.count()


def _to_python(value):
  """JSON-ready value: numpy/JAX scalars to Python numbers, non-finite floats to None, arrays to lists."""
  if isinstance(value, Mapping):
    return {str(k): _to_python(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_to_python(v) for v in value]
  if isinstance(value, (jax.Array, np.ndarray, np.generic)):
    value = np.asarray(value)
    return _to_python(value.item() if value.ndim == 0 else value.tolist())
  if isinstance(value, bool) or value is None or isinstance(value, str):
    return value
  if isinstance(value, numbers.Integral):
    return int(value)
  if isinstance(value, numbers.Real):
    value = float(value)
    return value if math.isfinite(value) else None
  return value


def _atomic_write(path: str, text: str):
  tmp = f'{path}.tmp.{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_json(path: str, value) -> None:
  """`value` as indented JSON, written whole or not at all (numpy numbers as Python's)."""
  _atomic_write(path, json.dumps(_to_python(value), indent=2, allow_nan=False) + '\n')


class MetricWriter:
  """JSONL + TensorBoard metrics of one work dir; every method is a no-op unless `enabled` (process 0 by default)."""

  def __init__(self, workdir: str, enabled: bool | None = None, tensorboard: bool = True):
    self.workdir = os.fspath(workdir)
    self.enabled = jax.process_index() == 0 if enabled is None else bool(enabled)
    self.path = os.path.join(self.workdir, METRICS_FILE)
    self.tensorboard_dir = os.path.join(self.workdir, TENSORBOARD_DIR)
    self._use_tensorboard = tensorboard
    self._jsonl = None
    self._summary = None  # tensorboardX.SummaryWriter, opened on first use so truncate_after can set purge_step
    self._purge_step = None
    self._closed = False
    if self.enabled:
      os.makedirs(self.workdir, exist_ok=True)

  # --- training scalars -------------------------------------------------------------------------------------------

  def write(self, step: int, scalars: Mapping[str, Any], prefix: str = 'train'):
    """Appends `{"step": step, **scalars}` to metrics.jsonl and adds each finite number to TensorBoard."""
    if not self.enabled:
      return
    self._check_open()
    step = int(step)
    record = {'step': step, **_to_python(dict(scalars))}
    if self._jsonl is None:
      self._jsonl = open(self.path, 'a')
    self._jsonl.write(json.dumps(record, allow_nan=False) + '\n')
    self._jsonl.flush()
    self._add_tensorboard(step, {f'{prefix}/{k}' if prefix else k: v for k, v in record.items() if k != 'step'})

  def truncate_after(self, step: int):
    """Drops metrics.jsonl lines logged after `step` (the checkpoint being resumed), and any torn last line.

    Call it before the first write of a resumed run. TensorBoard event files are append-only: the next one opened
    carries a purge marker at step + 1 instead, which TensorBoard honours when it reads the directory.
    """
    if not self.enabled:
      return
    self._check_open()
    step = int(step)
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None
    if os.path.exists(self.path):
      kept = []
      with open(self.path) as f:
        for line in f:
          try:
            record = json.loads(line)
          except json.JSONDecodeError:
            continue  # a line torn by a kill mid-write
          if isinstance(record, dict) and isinstance(record.get('step'), int) and record['step'] <= step:
            kept.append(json.dumps(record, allow_nan=False) + '\n')
      _atomic_write(self.path, ''.join(kept))
    self._purge_step = step + 1
    if self._summary is not None:  # reopen, so the new event file starts with the purge marker
      self._summary.close()
      self._summary = None

  # --- evaluation -------------------------------------------------------------------------------------------------

  def write_eval(self, name: str, results: Mapping[str, Any], step: int | None = None) -> str | None:
    """Writes `WORKDIR/eval_{name}.json` and the numeric top-level results as TensorBoard scalars `{name}/{key}`.

    `step` (or `results['step']`, else 0) is the TensorBoard step. Returns the JSON path (None when disabled).
    """
    if not self.enabled:
      return None
    self._check_open()
    if not name or os.sep in name or name.startswith('.'):
      raise ValueError(f'eval name {name!r} must be a plain file-name part')
    results = _to_python(dict(results))
    path = os.path.join(self.workdir, f'eval_{name}.json')
    write_json(path, results)
    if step is None:
      step = results.get('step') if isinstance(results.get('step'), int) else 0
    self._add_tensorboard(int(step), {f'{name}/{k}': v for k, v in results.items() if k != 'step'})
    return path

  # --- plumbing ---------------------------------------------------------------------------------------------------

  def _add_tensorboard(self, step: int, scalars: Mapping[str, Any]):
    if not self._use_tensorboard:
      return
    numbers_only = {k: v for k, v in scalars.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None}
    if not numbers_only:
      return
    if self._summary is None:
      SummaryWriter = _tensorboardx_writer()  # imported lazily: only process 0 needs it
      # A unique suffix: two writers opened within one second would otherwise share (and clobber) a file name.
      self._summary = SummaryWriter(self.tensorboard_dir, purge_step=self._purge_step, flush_secs=30,
                                    filename_suffix=f'.{os.getpid()}.{next(_writer_ids)}')
      self._purge_step = None
    for tag, value in numbers_only.items():
      self._summary.add_scalar(tag, value, global_step=step)

  def _check_open(self):
    if self._closed:
      raise RuntimeError(f'MetricWriter({self.workdir!r}) is closed')

  def flush(self):
    """Pushes everything written so far to disk (call it beside a checkpoint save)."""
    if self._jsonl is not None:
      self._jsonl.flush()
      os.fsync(self._jsonl.fileno())
    if self._summary is not None:
      self._summary.flush()

  def close(self):
    if self._closed:
      return
    if self._jsonl is not None:
      self.flush()
      self._jsonl.close()
      self._jsonl = None
    if self._summary is not None:
      self._summary.close()
      self._summary = None
    self._closed = True

  def __enter__(self) -> 'MetricWriter':
    return self

  def __exit__(self, *exc):
    self.close()
    return False


def _tensorboardx_writer():
  """tensorboardX's SummaryWriter, imported without torch when torch is not loaded yet.

  tensorboardX imports torch whenever it is installed, only to accept torch tensors; that costs ~2 s in every
  process that writes metrics, and this module writes Python floats. A `None` in sys.modules makes that one import
  fail as if torch were absent; it is removed again, so later imports of torch work as usual.
  """
  if 'torch' in sys.modules:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  sys.modules['torch'] = None
  try:
    from tensorboardX import SummaryWriter
  finally:
    del sys.modules['torch']
  return SummaryWriter


def read_metrics(workdir: str) -> list[dict]:
  """The records of `WORKDIR/metrics.jsonl` (for tests and notebooks)."""
  path = os.path.join(os.fspath(workdir), METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


# Dense bfloat16 peak FLOP/s of one chip (no structured sparsity), matched as a substring of `device_kind`;
# a platform not listed (every CPU) gets no MFU. Vendors' data sheets.
PEAK_BF16_FLOPS = {'H200': 989e12, 'H100': 989e12, 'A100': 312e12, 'L40S': 362e12, 'L4': 121e12, 'A10G': 70e12,
                   'TPU v4': 275e12, 'TPU v5 lite': 197e12, 'TPU v5e': 197e12, 'TPU v5p': 459e12, 'TPU v6': 918e12,
                   'TPU v5': 459e12}  # last: libtpu calls v5p 'TPU v5', a substring of v5e's 'TPU v5 lite'
STARVED_FRACTION = 0.3  # data_wait_s / step_s above this: the run is bound by its input pipeline


def peak_flops(device_kind: str) -> float | None:
  """The chip's dense bf16 peak FLOP/s, or None when unknown (CPUs)."""
  for name, peak in PEAK_BF16_FLOPS.items():
    if name.lower() in device_kind.lower():
      return peak
  return None


class StepTimer:
  """Where the time goes between two logged steps: the loop wraps its `next(batch)` in `data_wait()` and calls
  `lap(step)` when it logs (after fetching the step's stats, so the device work is done).

  `lap` returns per-step means since the previous lap: `data_wait_s` (host blocked on the input pipeline),
  `step_s` (wall time), `clips_per_sec`, and `mfu` (flops_per_step / step_s / (devices x peak)) when both are known,
  plus `eta_s` (remaining steps x step_s, for the progress line). `flops_per_step` is the whole step's model FLOPs
  on the global batch (`model.flops`), given once in the first lap. It logs a warning when the input pipeline takes
  more than STARVED_FRACTION of the step time.
  """

  def __init__(self, batch_size: int, total_steps: int, start_step: int = 0, flops_per_step: float | None = None,
               peak: float | None = None, devices: int = 1, clock=time.perf_counter):
    self.batch_size, self.total_steps = batch_size, total_steps
    self.flops_per_step, self.peak, self.devices, self._clock = flops_per_step, peak, devices, clock
    self._tick, self._last_step, self._waited, self._first = clock(), start_step, 0.0, True

  @contextlib.contextmanager
  def _adding_time_to(self, attr: str):
    start = self._clock()
    try:
      yield
    finally:
      setattr(self, attr, getattr(self, attr) + self._clock() - start)

  def data_wait(self):
    """Time spent inside is the host blocked on the input pipeline."""
    return self._adding_time_to('_waited')

  def excluded(self):
    """Time spent inside (an evaluation) counts neither as step nor as data wait: the lap's start moves by it."""
    return self._adding_time_to('_tick')

  def lap(self, step: int) -> dict[str, float]:
    now = self._clock()
    steps = max(step - self._last_step, 1)
    step_s = (now - self._tick) / steps
    out = {'data_wait_s': self._waited / steps, 'step_s': step_s,
           'clips_per_sec': self.batch_size / step_s if step_s > 0 else float('inf')}
    if self.flops_per_step and self._first:
      out['flops_per_step'] = float(self.flops_per_step)
    if self.flops_per_step and self.peak and step_s > 0:
      out['mfu'] = self.flops_per_step / step_s / (self.devices * self.peak)
    out['eta_s'] = max(self.total_steps - step, 0) * step_s
    if step_s > 0 and out['data_wait_s'] > STARVED_FRACTION * step_s:
      logging.warning('Step %d: input-bound, %.0f%% of the step time (%.3f of %.3f s) is waiting for the input '
                      'pipeline; more data workers or packed data would speed this run up', step,
                      100 * out['data_wait_s'] / step_s, out['data_wait_s'], step_s)
    self._tick, self._last_step, self._waited, self._first = now, step, 0.0, False
    return out


def log_step(step: int, stats, lr: float, timer: StepTimer, writer: 'MetricWriter', progress: 'Progress') -> float:
  """A logged step: its stats fetched (the device work is done) and checked finite, its time lapped, the line
  written and the progress bar moved. Returns the loss."""
  stats = jax.device_get(stats)
  check_finite(step, stats['loss'])
  timing = timer.lap(step)
  eta_s = timing.pop('eta_s')
  writer.write(step, {**{k: float(v) for k, v in stats.items()}, 'lr': float(lr), **timing})
  progress.update(step, loss=float(stats['loss']), clips_per_sec=timing['clips_per_sec'], eta_s=eta_s)
  return float(stats['loss'])


def format_duration(seconds: float) -> str:
  seconds = int(round(seconds))
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


class Progress:
  """A tqdm bar on stderr: step of total, loss, clips/s and the projected time to finish (`eta_s`, from the
  measured step time, which excludes compilation; tqdm's own ETA is shown too).

  On by default only on process 0 with stderr a terminal (a batch job's log would fill with carriage returns);
  `enabled=True` forces it on. `update(step, ...)` takes the absolute step; `initial` is where a resumed run
  starts.
  """

  def __init__(self, total_steps: int, initial: int = 0, enabled: bool | None = None, desc: str = 'train'):
    if enabled is None:
      enabled = jax.process_index() == 0 and sys.stderr.isatty()
    self.step = int(initial)
    self._bar = None
    if enabled:
      import tqdm
      self._bar = tqdm.tqdm(total=int(total_steps), initial=self.step, desc=desc, unit='step', file=sys.stderr,
                            dynamic_ncols=True, mininterval=0.5, smoothing=0.1)

  @property
  def enabled(self) -> bool:
    return self._bar is not None

  def update(self, step: int, loss=None, clips_per_sec=None, eta_s=None, **extra):
    step = int(step)
    if self._bar is not None:
      postfix = {}
      if loss is not None:
        postfix['loss'] = f'{float(loss):.4f}'
      if clips_per_sec is not None:
        postfix['clips/s'] = f'{float(clips_per_sec):.1f}'
      if eta_s is not None:
        postfix['finish in'] = format_duration(eta_s)
      postfix.update({k: f'{float(v):.4g}' if isinstance(v, numbers.Real) else str(v) for k, v in extra.items()})
      if postfix:
        self._bar.set_postfix(postfix, refresh=False)
      self._bar.update(step - self.step)
    self.step = step

  def close(self):
    if self._bar is not None:
      self._bar.close()
      self._bar = None

  def __enter__(self) -> 'Progress':
    return self

  def __exit__(self, *exc):
    self.close()
    return False


def _path_name(path) -> str:
  parts = []
  for key in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return '/'.join(parts)


def param_table(params, depth: int | None = None) -> str:
  """A table of parameter paths, shapes and counts, with the total at the bottom.

  `params`: a pytree of arrays, `jax.ShapeDtypeStruct`s (from `jax.eval_shape`) or boxed Flax params.
  `depth=None` lists every array; `depth=k` sums the arrays under each path prefix of k parts (`clip/visual`).
  """
  try:
    from flax.core import meta
    params = meta.unbox(params)
  except ImportError:
    pass
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  rows = []  # (name, shape text, count)
  if depth is None:
    for path, leaf in leaves:
      shape = tuple(np.shape(leaf))
      rows.append((_path_name(path), str(shape), math.prod(shape)))
  else:
    groups: dict[str, list] = {}
    for path, leaf in leaves:
      name = '/'.join(_path_name(path).split('/')[:depth])
      groups.setdefault(name, []).append(tuple(np.shape(leaf)))
    for name, shapes in groups.items():
      text = str(shapes[0]) if len(shapes) == 1 else f'{len(shapes)} arrays'
      rows.append((name, text, sum(math.prod(s) for s in shapes)))
  total = sum(count for _, _, count in rows)
  footer = ('Total', f'{len(leaves)} arrays', total)
  width_name = max([len('Parameter'), len(footer[0])] + [len(r[0]) for r in rows])
  width_shape = max([len('Shape'), len(footer[1])] + [len(r[1]) for r in rows])
  width_count = max(len('Count'), len(f'{total:,}'))

  def line(name, shape, count):
    count = f'{count:,}' if isinstance(count, int) else count
    return f'{name:<{width_name}}  {shape:<{width_shape}}  {count:>{width_count}}'

  rule = '-' * (width_name + width_shape + width_count + 4)
  out = [line('Parameter', 'Shape', 'Count'), rule] + [line(*r) for r in rows] + [rule, line(*footer)]
  return '\n'.join(out) + f'\n({total / 1e6:.2f}M parameters)'


def check_finite(step: int, loss, last_checkpoint_step: int | None = None):
  """Raises FloatingPointError when `loss` is NaN or infinite (fetching it from the device)."""
  value = float(np.asarray(loss))
  if math.isfinite(value):
    return
  kept = (f'the last good checkpoint (step {last_checkpoint_step})' if last_checkpoint_step is not None
          else 'the last good checkpoint')
  raise FloatingPointError(
      f'Loss is {value} at step {int(step)}: stopping the run. No checkpoint is written for this step, so {kept} '
      f'in the work dir is kept; restarting resumes from it. Usual causes: a learning rate too high '
      f'(solver.lr), gradient clipping off (solver.clip_gradient), float16 compute, or a bad batch.')
