"""`--mode=compile` through launch.py: compile.json on this host and on TPU topologies (libtpu, no TPU), a compiled
step saved and run by `compile.load` as the run that compiles its own, and every mismatch refused in one line."""
import importlib.util
import json
import os
import subprocess
import zipfile

import ml_collections
import pytest

from actionclip_jax.model import flops
from actionclip_jax.runs import builders, collectives
from data_pipelines import synthetic
from launch_helpers import environment, launch_args, logged, run

STEPS = 2
COMPILE_KEYS = {'topology', 'num_slices', 'chips', 'device_kind', 'mesh', 'global_batch', 'per_chip_batch', 'dtype',
                'remat', 'per_chip_bytes', 'flops_per_chip', 'xla_flops_per_chip', 'collectives', 'estimate'}


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  return synthetic.make_dataset(str(tmp_path_factory.mktemp('data')))


def _compile(dataset, workdir, *extra, env, batch=8):
  args = [a if not a.startswith('--config.data.batch_size') else f'--config.data.batch_size={batch}'
          for a in launch_args(dataset, workdir, '--mode=compile', *extra, steps=STEPS)]
  run(args, env)
  with open(os.path.join(workdir, 'compile.json')) as f:
    return json.load(f)


def _check_bytes(m):
  assert m['total'] == (m['arguments'] + m['outputs'] - m['aliased'] + m['temporaries'] + m['generated_code'])
  assert m['arguments'] > 0 and m['aliased'] > 0  # the donated state is written in place


@pytest.fixture(scope='module')
def saved(dataset, xla_cache, tmp_path_factory):
  """A compile on this host's one CPU device, its step saved."""
  workdir = tmp_path_factory.mktemp('compile')
  path = str(workdir / 'step.bin')
  report = _compile(dataset, str(workdir), f'--config.compile.save={path}', env=environment(xla_cache))
  return report, path, str(workdir)


def test_compile_on_this_host_writes_the_report(saved):
  report, path, workdir = saved
  assert COMPILE_KEYS <= set(report) and report['saved'] == path
  assert report['chips'] == 1 and report['device_kind'] == 'cpu' and report['per_chip_batch'] == 8
  assert report['mesh'] == {'data': 1, 'fsdp': 1, 'tensor': 1, 'slices (within data)': 1}
  _check_bytes(report['per_chip_bytes'])
  assert report['per_chip_bytes']['hbm_bytes'] is None and report['per_chip_bytes']['fits'] is None  # a CPU
  assert all(v == {'count': 0, 'bytes': 0} for v in report['collectives'].values())  # one device
  with open(os.path.join(workdir, 'config.json')) as f:
    mcfg = builders.model_config(ml_collections.ConfigDict(json.load(f)))
  assert report['flops_per_chip'] == flops.train_step(mcfg, 8, report['model']['prompt_table'][-1])
  assert 'step_s_lower_bound' not in report['estimate']  # no peak rate known for a CPU


def test_a_loaded_step_trains_as_the_compiled_one(saved, dataset, xla_cache, tmp_path):
  _, path, _ = saved
  env = environment(xla_cache)
  run(launch_args(dataset, str(tmp_path / 'loaded'), f'--config.compile.load={path}', steps=STEPS), env)
  run(launch_args(dataset, str(tmp_path / 'compiled'), steps=STEPS), env)
  assert logged(tmp_path / 'loaded') == logged(tmp_path / 'compiled')


@pytest.mark.parametrize('change, refusal', [
    (['--config.data.batch_size=16', '--config.eval.batch_size=16'], 'config: data.batch_size: 8 there, 16 here'),
    (['--config.network.sim_header=meanP'], 'config: network.sim_header: Transf there, meanP here'),
    ('jax', 'jax version: jax 0.0.1'),
    ('devices', 'topology (device count): 1 there, 2 here'),
])
def test_a_step_compiled_for_something_else_is_refused_in_one_line(saved, dataset, xla_cache, tmp_path, change,
                                                                     refusal):
  _, path, _ = saved
  devices = 1
  if change == 'jax':  # the same file, as if written by another jax version
    with zipfile.ZipFile(path) as f:
      signature, payload = json.loads(f.read('signature.json')), f.read('executable.bin')
    signature['jax'] = 'jax 0.0.1, jaxlib 0.0.1'
    path = str(tmp_path / 'other_jax.bin')
    with zipfile.ZipFile(path, 'w') as f:
      f.writestr('signature.json', json.dumps(signature))
      f.writestr('executable.bin', payload)
    change = []
  elif change == 'devices':
    devices, change = 2, []
  args = launch_args(dataset, str(tmp_path / 'run'), f'--config.compile.load={path}', *change, steps=STEPS)
  done = subprocess.run(args, env=environment(xla_cache, devices=devices), capture_output=True, text=True,
                        timeout=300)
  assert done.returncode != 0
  last = done.stderr.strip().splitlines()[-1]
  assert refusal in last and last.startswith(f'compile.load={path} was compiled for another'), last
  assert 'Traceback' not in done.stderr
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')  # refused before any step


def test_collectives_are_counted_by_their_loops_trip_counts():
  hlo = """HloModule m

%body (p: (s32[], f32[8,64])) -> (s32[], f32[8,64]) {
  %ar = f32[8,64]{1,0} all-reduce(f32[8,64]{1,0} %x), replica_groups={{0,1}}, to_apply=%add
  %inner = (s32[], f32[4]) while(%t), condition=%c2, body=%body2, backend_config={"known_trip_count":{"n":"3"}}
}

%body2 (q: (s32[], f32[4])) -> (s32[], f32[4]) {
  %cp = bf16[4,2]{1,0} collective-permute(bf16[4,2]{1,0} %y), source_target_pairs={{0,1}}
}

%cond (c: (s32[], f32[2])) -> pred[] {
  %n = s32[]{:T(128)} constant(7)
  %i = s32[]{:T(128)} get-tuple-element(%c), index=0
  ROOT %lt = pred[]{:T(512)} compare(%i, %n), direction=LT
}

%body3 (r: (s32[], f32[2])) -> (s32[], f32[2]) {
  %rs = f32[2]{0} reduce-scatter(f32[8]{0} %z), dimensions={0}, to_apply=%add
}

ENTRY %main (a: f32[16]) -> f32[16] {
  %w = (s32[], f32[8,64]) while(%t0), condition=%c, body=%body, backend_config={"known_trip_count":{"n":"12"}}
  %tpu = (s32[], f32[2]) while(%t3), condition=%cond, body=%body3
  %ags = (f32[16]{0}, f32[64]{0}) all-gather-start(f32[16]{0} %a), dimensions={0}
  %agd = f32[64]{0} all-gather-done((f32[16]{0}, f32[64]{0}) %ags)
}
"""
  out = collectives.count(hlo)
  assert out['all-reduce'] == {'count': 12, 'bytes': 12 * 8 * 64 * 4}
  assert out['collective-permute'] == {'count': 36, 'bytes': 36 * 4 * 2 * 2}  # 3 a body, 12 bodies
  assert out['all-gather'] == {'count': 1, 'bytes': 64 * 4}  # an async pair once, its result's size
  # The TPU compiler writes no known_trip_count: the bound comes from the condition, counter < 7.
  assert out['reduce-scatter'] == {'count': 7, 'bytes': 7 * 2 * 4}
  assert out['all-to-all'] == {'count': 0, 'bytes': 0}


LIBTPU = importlib.util.find_spec('libtpu') is not None


@pytest.mark.skipif(not LIBTPU, reason='libtpu is not installed (pip install -e ".[tpu]"): no TPU topology to '
                                       'compile for')
@pytest.mark.parametrize('slices', [1, 2])
def test_compile_for_a_tpu_topology_without_a_tpu(dataset, xla_cache, tmp_path, slices):
  report = _compile(dataset, str(tmp_path), '--config.compile.topology=v5e:2x2',
                    f'--config.compile.num_slices={slices}', env=environment(xla_cache), batch=16)
  chips = 4 * slices
  assert report['chips'] == chips and report['num_slices'] == slices and report['device_kind'] == 'TPU v5 lite'
  assert report['mesh'] == {'data': chips, 'fsdp': 1, 'tensor': 1, 'slices (within data)': slices}
  assert report['per_chip_batch'] == 16 / chips and report['remat'] == 'none'  # 'auto' resolved for the TPU
  m = report['per_chip_bytes']
  _check_bytes(m)
  assert m['hbm_bytes'] == 16 * 2**30 and m['fits'] and m['headroom_bytes'] == m['hbm_bytes'] - m['total']
  # Data parallel: the gradients are reduced across chips every step.
  assert sum(v['count'] for v in report['collectives'].values()) > 0
  e = report['estimate']
  assert e['step_s_lower_bound'] == max(e['compute_bound_s'], e['memory_bound_s']) > 0
  assert e['clips_per_s_upper_bound'] == pytest.approx(16 / e['step_s_lower_bound'])


def test_a_topology_libtpu_cannot_describe_is_one_line(dataset, xla_cache, tmp_path):
  args = launch_args(dataset, str(tmp_path), '--mode=compile', '--config.compile.topology=v5e:3x7', steps=STEPS)
  done = subprocess.run(args, env=environment(xla_cache), capture_output=True, text=True, timeout=300)
  assert done.returncode != 0 and 'Traceback' not in done.stderr
  assert "compile.topology='v5e:3x7'" in done.stderr.strip().splitlines()[-1]
