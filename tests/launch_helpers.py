"""Running launch.py in subprocesses on the tiny config, and comparing the runs they leave (for the trainer's tests).

Every launch of a test module shares one persistent XLA compilation cache (`environment(cache_dir)`), so only the
first compiles.
"""
import os
import subprocess
import sys
import time

import jax
import numpy as np

from actionclip_jax.runs import checkpoints, metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_KEYS = ('loss', 'grad_norm', 'lr', 'logit_scale')


def launch_args(dataset, workdir, *extra, steps: int, config='configs/k400.py:runlocal'):
  """launch.py on `dataset` (synthetic.make_dataset's dict): batches of 8, `steps` steps, a checkpoint every 2."""
  return [sys.executable, os.path.join(REPO, 'launch.py'), f'--config={os.path.join(REPO, config)}',
          f'--workdir={workdir}', f'--config.data.root={dataset["root"]}',
          f'--config.data.train_list={dataset["train_list"]}', f'--config.data.label_list={dataset["label_list"]}',
          '--config.data.batch_size=8', '--config.eval.batch_size=8', f'--config.solver.total_steps={steps}',
          '--config.checkpoint_every_steps=2', *extra]


def environment(cache_dir, devices=1, **extra):
  # A size limit turns on the cache's file lock: processes of both pytest workers read and write it at once.
  # ALLOW_MULTIPLE_LIBTPU_LOAD: libtpu (--mode=compile's TPU topologies) takes a lock that admits one process at a
  # time; these processes open no TPU, so both pytest workers' may hold it at once.
  env = dict(os.environ, JAX_PLATFORMS='cpu', ALLOW_MULTIPLE_LIBTPU_LOAD='1', JAX_COMPILATION_CACHE_DIR=str(cache_dir),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0', JAX_COMPILATION_CACHE_MAX_SIZE=str(2**31),
             PYTHONPATH=REPO, **extra)
  env['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} --xla_force_host_platform_device_count={devices}'.strip()
  return env


def run(args, env, timeout=300):
  done = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
  assert done.returncode == 0, done.stderr[-4000:]
  return done


def start(args, env, log_path):
  """launch.py in the background, its output to `log_path` (a file: a pipe nobody reads would fill and block)."""
  with open(log_path, 'w') as log:
    return subprocess.Popen(args, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def read(path) -> str:
  with open(path) as f:
    return f.read()


def tail(path, chars=4000) -> str:
  return read(path)[-chars:]


def wait_for(predicate, proc, log_path, timeout=240):
  """Polls `predicate` until it holds; fails if the process ends first or the time runs out."""
  deadline = time.time() + timeout
  while not predicate():
    assert proc.poll() is None, tail(log_path)
    assert time.time() < deadline, f'timed out\n{tail(log_path)}'
    time.sleep(0.02)


def finished_steps(workdir):
  """Checkpoint steps Orbax has finalized (an unfinished save lives in a temporary directory)."""
  directory = os.path.join(workdir, 'checkpoints')
  return sorted(int(s) for s in os.listdir(directory) if s.isdigit()) if os.path.isdir(directory) else []


def final_params(workdir, step):
  return checkpoints.read_params(str(workdir), step)


def logged(workdir, keys=TRAIN_KEYS):
  return [{k: r[k] for k in ('step', *keys)} for r in metrics.read_metrics(workdir)]


# Biases whose gradient vanishes exactly, as softmax ignores a constant shift of its inputs: attention key biases
# and the last bias of WTI's weight MLPs. What is left of their gradient is rounding noise, which Adam divides by its
# own size: they take lr-sized steps in directions set by the summation order, so runs whose reductions sum in
# another order (other device layouts) agree on them only to the total step size.
SHIFT_INVARIANT = ("['attn']['key']['bias']", "_weight_fc']['layers_2']['bias']")


def assert_same_run(a, b, atol, steps, shift_invariant_atol=None):
  """Runs `a` and `b` logged the same metrics for steps 1..`steps` and end with the same params, within atol
  (`shift_invariant_atol` for the SHIFT_INVARIANT biases, default atol)."""
  la, lb = logged(a), logged(b)
  assert [r['step'] for r in la] == [r['step'] for r in lb] == list(range(1, steps + 1))
  for ra, rb in zip(la, lb):
    for k in ra:
      np.testing.assert_allclose(rb[k], ra[k], atol=atol, rtol=atol, err_msg=f'step {ra["step"]} {k}')
  pa, pb = final_params(a, steps), final_params(b, steps)
  assert jax.tree_util.tree_structure(pa) == jax.tree_util.tree_structure(pb)
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(pa), jax.tree_util.tree_leaves(pb)):
    name = jax.tree_util.keystr(path)
    noise = shift_invariant_atol is not None and any(n in name for n in SHIFT_INVARIANT)
    np.testing.assert_allclose(y, x, atol=shift_invariant_atol if noise else atol, rtol=0, err_msg=name)
