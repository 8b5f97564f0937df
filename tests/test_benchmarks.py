"""benchmarks/: the FLOP counter, and gpu_check.sh end to end on the CPU with a tiny model (train_step.py's every
path but cuDNN: both frameworks' workers, the matmul ceiling, train, eval, attention, the tables)."""
import argparse
import json
import os
import subprocess
import sys

import pytest

from actionclip_jax.model import clip, flops, video

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'benchmarks'))
import train_step  # noqa: E402  pylint: disable=wrong-import-position


def test_train_flops_counts_the_text_at_the_length_the_step_feeds_it():
  mcfg = video.ActionCLIPConfig(clip.get_preset('ViT-B/32', num_frames=8), sim_header='Transf')
  # 'Can you recognize the action of action 399?' is 13 tokens: both frameworks are credited with 13, not 77.
  args = argparse.Namespace(classes=400, frames=8, batch=4)
  assert train_step.train_flops(mcfg, args) == flops.train_step(mcfg, 4, 13)
  assert train_step.eval_flops(mcfg, 8) == flops.forward(mcfg, 8)


def test_gpu_check_runs_on_cpu_with_a_tiny_model(tmp_path, xla_cache):
  env = {**os.environ, 'GPU_CHECK_TINY': '1', 'GPU_CHECK_OUT': str(tmp_path), 'PYTHON': sys.executable,
         'JAX_COMPILATION_CACHE_DIR': xla_cache, 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
         'JAX_PLATFORMS': 'cpu'}
  proc = subprocess.run(['bash', os.path.join(REPO, 'benchmarks', 'gpu_check.sh')], env=env, capture_output=True,
                        text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(tmp_path / 'b16.jsonl') as f:
    records = [json.loads(line) for line in f]
  kinds = {(r['framework'], r['what']) for r in records}
  assert kinds == {(fw, what) for fw in ('jax', 'torch') for what in ('matmul', 'train', 'eval')} | {
      ('jax', 'attention')}
  assert all(r['dtype'] == 'bfloat16' for r in records)
  assert [r['implementation'] for r in records if r['what'] == 'attention'] == ['xla']  # no cuDNN on a CPU
  train = [r for r in records if r['what'] == 'train']
  assert all(r['peak_rss'] > 0 and r['times'][0] > 0 and r['flops'] > 0 for r in train)
  assert '| train B=2 | bfloat16 | jax |' in proc.stdout and '| ratio' in proc.stdout and '| xla |' in proc.stdout


def test_profile_attributes_a_traced_steps_time_to_its_ops_kinds_and_phases():
  """profile_step.py's breakdown on a small jitted gradient: a scanned stack of matmul + tanh layers."""
  import jax
  import jax.numpy as jnp
  import profile_step

  def loss(w, x):
    h, _ = jax.lax.scan(lambda h, wi: (jnp.tanh(h @ wi), None), x, w)
    return h.sum()

  w, x = jnp.full((3, 128, 128), 0.01), jnp.ones((64, 128))
  compiled = jax.jit(jax.grad(loss)).lower(w, x).compile()
  per_op, ops, wall = profile_step.profile(compiled, lambda: compiled(w, x).block_until_ready(), steps=2)
  assert per_op and set(per_op) <= set(ops) and wall > 0
  assert all(ops[name]['opcode'] not in profile_step.CONTAINERS for name in per_op)  # loops counted once
  kinds = {ops[name]['kind'] for name in per_op}
  assert 'matmul' in kinds  # the layer's dot and its two transposes in the backward
  phases = {profile_step.phase_and_module(ops[name]['op_name'])[0] for name in per_op}
  assert {'forward', 'backward'} <= phases


@pytest.mark.parametrize('mode', [[], ['--eval']])
def test_profile_step_breaks_down_the_train_step_and_the_eval_encode(mode, capsys):
  import profile_step
  result = profile_step.main(['--preset', 'tiny', '--frames', '2', '--batch', '2', '--steps', '1', *mode])
  phases = {row['phase'] for row in result['by_phase_kind']}
  # The eval encode has no backward pass; the train step has one.
  assert ('backward' in phases) == (not mode)
  assert result['setting']['eval'] == bool(mode) and result['ops_s'] > 0
  assert 'matmul' in {row['kind'] for row in result['by_kind']}
  assert capsys.readouterr().out.startswith('eval encode' if mode else 'train step')


def test_pod_plan_finds_the_largest_batch_by_doubling_then_bisecting(monkeypatch):
  """pod_plan.search on a stand-in compile that fits up to 44 clips a chip on 8 devices (and fails like XLA above
  60): every probe is a compile, the answer is the largest fitting batch at the resolution."""
  import pod_plan
  probes = []

  def compile_once(recipe, target, mesh, remat, global_batch):
    probes.append(global_batch // 8)
    if global_batch // 8 > 60:
      return {'global_batch': global_batch, 'command': 'c', 'error': 'RESOURCE_EXHAUSTED: Ran out of memory'}
    return {'global_batch': global_batch, 'report': {'per_chip_bytes': {'fits': global_batch // 8 <= 44}}}

  monkeypatch.setattr(pod_plan, 'compile_once', compile_once)
  best = pod_plan.search('b16_8f', 'v5e-64', 'data', 'none', 8, start=4, resolution=4, emit=lambda r: r)
  assert best['global_batch'] == 44 * 8
  assert probes == [4, 8, 16, 32, 64, 48, 40, 44]
  with pytest.raises(SystemExit, match='bad topology'):  # any other error stops the plan
    pod_plan.fits({'command': 'c', 'error': 'bad topology'})
