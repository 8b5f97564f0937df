"""The trainer end to end, through `launch.py` in subprocesses: sharded over 8 simulated devices and over two
processes it matches one device; a killed run resumes exactly; SIGTERM leaves a checkpoint; NaN stops the run.

Runs are tiny (`configs/k400.py:runlocal`, 6 steps of 8 clips of a synthetic dataset) and share XLA's persistent
compilation cache, so most of them skip compiling. Tolerance across device layouts: 1e-5 in float32 (sharded
reductions sum in another order); a resumed run must be bit-identical (same computation, same order).
"""
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from actionclip_jax import checkpoints, clip, metrics, tokenize, train, video
from data_pipelines import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 6


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  return synthetic.make_dataset(str(tmp_path_factory.mktemp('data')))


@pytest.fixture(scope='module')
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('xla_cache'))


def launch_args(dataset, workdir, *extra, config='configs/k400.py:runlocal'):
  return [sys.executable, os.path.join(REPO, 'launch.py'), f'--config={os.path.join(REPO, config)}',
          f'--workdir={workdir}', f'--config.data.root={dataset["root"]}',
          f'--config.data.train_list={dataset["train_list"]}', f'--config.data.label_list={dataset["label_list"]}',
          '--config.data.batch_size=8', '--config.eval.batch_size=8', f'--config.solver.total_steps={STEPS}',
          '--config.checkpoint_every_steps=2',
          *extra]


def environment(cache_dir, devices=1, **extra):
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=cache_dir,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0', PYTHONPATH=REPO, **extra)
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  return env


def run(args, env, timeout=300):
  done = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
  assert done.returncode == 0, done.stderr[-4000:]
  return done


def final_params(workdir, step=STEPS):
  return checkpoints.read_params(str(workdir), step)


def logged(workdir, keys=('loss', 'grad_norm', 'lr', 'logit_scale')):
  return [{k: r[k] for k in ('step', *keys)} for r in metrics.read_metrics(workdir)]


def assert_same_run(a, b, atol):
  la, lb = logged(a), logged(b)
  assert [r['step'] for r in la] == [r['step'] for r in lb] == list(range(1, STEPS + 1))
  for ra, rb in zip(la, lb):
    for k in ra:
      np.testing.assert_allclose(rb[k], ra[k], atol=atol, rtol=atol, err_msg=f'step {ra["step"]} {k}')
  pa, pb = final_params(a), final_params(b)
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(pa), jax.tree_util.tree_leaves(pb)):
    np.testing.assert_allclose(y, x, atol=atol, rtol=0, err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope='module')
def reference(dataset, cache_dir, tmp_path_factory):
  """One process, one device, 6 steps: the run the others must reproduce."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  run(launch_args(dataset, workdir), environment(cache_dir))
  return workdir


def test_reference_run_writes_everything(reference):
  assert os.path.exists(os.path.join(reference, 'config.json'))
  assert os.listdir(os.path.join(reference, 'tensorboard'))
  steps = sorted(int(s) for s in os.listdir(os.path.join(reference, 'checkpoints')) if s.isdigit())
  assert steps[-1] == STEPS and len(steps) <= 3  # keep_checkpoints
  records = metrics.read_metrics(reference)
  assert all({'step', 'loss', 'lr', 'clips_per_sec'} <= set(r) for r in records)
  assert records[-1]['lr'] == 0.0  # cosine to zero at the last step


def test_eight_devices_data_by_fsdp_match_one_device(reference, dataset, cache_dir, tmp_path):
  run(launch_args(dataset, tmp_path, '--config.mesh.data=2', '--config.mesh.fsdp=4'),
      environment(cache_dir, devices=8))
  assert_same_run(reference, str(tmp_path), atol=1e-5)


def free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_match_one(reference, dataset, cache_dir, tmp_path):
  port = free_port()
  env = environment(cache_dir, JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo')
  procs = [subprocess.Popen(
      launch_args(dataset, tmp_path, f'--coordinator_address=localhost:{port}', '--num_processes=2',
                  f'--process_id={i}'), env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-4000:]
  assert_same_run(reference, str(tmp_path), atol=1e-5)


def wait_for(predicate, proc, timeout=240):
  deadline = time.time() + timeout
  while not predicate():
    assert proc.poll() is None, proc.communicate()[1][-4000:]
    assert time.time() < deadline, 'timed out'
    time.sleep(0.2)


def finished_steps(workdir):
  """Checkpoint steps Orbax has finalized (an unfinished save lives in a temporary directory)."""
  directory = os.path.join(workdir, 'checkpoints')
  return sorted(int(s) for s in os.listdir(directory) if s.isdigit()) if os.path.isdir(directory) else []


def test_sigkill_then_restart_is_the_same_run(reference, dataset, cache_dir, tmp_path):
  args, env = launch_args(dataset, tmp_path), environment(cache_dir)
  proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  wait_for(lambda: finished_steps(tmp_path), proc)
  proc.kill()
  proc.wait()
  assert finished_steps(tmp_path)[-1] < STEPS
  run(args, env)
  assert_same_run(reference, str(tmp_path), atol=0)


def test_sigterm_checkpoints_the_current_step(dataset, cache_dir, tmp_path):
  args = launch_args(dataset, tmp_path, '--config.solver.total_steps=1000', '--config.checkpoint_every_steps=1000')
  proc = subprocess.Popen(args, env=environment(cache_dir), cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  wait_for(lambda: len(metrics.read_metrics(tmp_path)) >= 2, proc)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-4000:]
  last = metrics.read_metrics(tmp_path)[-1]['step']
  assert finished_steps(tmp_path) == [last] and last < 1000


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(dataset, cache_dir, tmp_path):
  args = launch_args(dataset, tmp_path, '--config.solver.lr=1e30', '--config.solver.clip_gradient=0',
                     '--config.checkpoint_every_steps=1', '--config.solver.lr_warmup_step=0')
  done = subprocess.run(args, env=environment(cache_dir), cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode != 0
  assert 'FloatingPointError' in done.stderr and 'stopping the run' in done.stderr
  bad_step = int(done.stderr.split('Loss is ')[1].split(' at step ')[1].split(':')[0])
  assert finished_steps(tmp_path) and finished_steps(tmp_path)[-1] == bad_step - 1
  for x in jax.tree_util.tree_leaves(final_params(tmp_path, bad_step - 1)):
    assert np.isfinite(x).all()


def test_gradient_accumulation_is_the_whole_batch_gradient():
  """GradCache: 4 chunks give the loss and gradient of the unchunked batch (dropout off)."""
  config = video.ActionCLIPConfig(clip.get_preset('tiny', num_frames=2), sim_header='Transf', interaction='wti')
  module = video.ActionCLIP(config)
  params = video.init_params(config, jax.random.key(0))
  frames = jax.random.normal(jax.random.key(1), (8, 2, 32, 32, 3))
  ids = jax.numpy.asarray(tokenize(['a dog', 'a cat', 'archery', 'juggling'] * 2, context_length=16))
  labels = jax.numpy.asarray([0, 1, 2, 3, 0, 1, 2, 0])
  grads = jax.jit(lambda p, k: train.loss_and_grads(module, p, frames, ids, labels, jax.random.key(2), k),
                  static_argnums=1)
  (loss1, g1), (loss4, g4) = grads(params, 1), grads(params, 4)
  np.testing.assert_allclose(loss4, loss1, rtol=1e-6)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g1), jax.tree_util.tree_leaves(g4)):
    np.testing.assert_allclose(b, a, atol=1e-6, rtol=1e-4, err_msg=jax.tree_util.keystr(path))
