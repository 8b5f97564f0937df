"""Fault injection: a run killed at any moment, damaged checkpoints, a full disk, an evaluation set of bad videos.

Each fault runs through `launch.py` on the tiny config (`configs/k400.py:runlocal`, 6 steps of 8 synthetic clips, a
checkpoint every 2 steps, an evaluation every 4) and is compared with one uninterrupted run of the same command. A
resumed run must be bit-identical to it: same computation, same order. All launches share XLA's persistent
compilation cache (conftest's `xla_cache`), so only the first compiles.
"""
import errno
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from actionclip_jax.runs import checkpoints, evaluate, metrics
from data_pipelines import bad_videos, synthetic
from launch_helpers import (REPO, assert_same_run, environment, final_params, finished_steps, launch_args, logged,
                            read, run, start, tail, wait_for)

STEPS = 6
CHECKPOINT_EVERY = 2  # launch_args' checkpoint interval


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  return synthetic.make_dataset(str(tmp_path_factory.mktemp('data')))


def fault_args(dataset, workdir, val_list=None):
  return launch_args(dataset, workdir, f'--config.data.val_list={val_list or dataset["val_list"]}',
                     '--config.eval.every_steps=4', steps=STEPS)


@pytest.fixture(scope='module')
def reference(dataset, xla_cache, tmp_path_factory):
  """The uninterrupted run: checkpoints 2, 4, 6, evaluations at steps 4 and 6."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  run(fault_args(dataset, workdir), environment(xla_cache))
  assert finished_steps(workdir) == [2, 4, 6]
  return workdir


def resumed_step(log_path) -> int:
  """The step the run in `log_path` started from (the trainer logs it once)."""
  found = re.findall(r'(?:Resumed|Started) \S+ (?:at|from) step (\d+)', read(log_path))
  assert len(found) == 1, tail(log_path)
  return int(found[0])


def last_logged_step(workdir) -> int:
  steps = [r['step'] for r in metrics.read_metrics(workdir)]
  return steps[-1] if steps else 0


def eval_results(workdir):
  out = {}
  for path in sorted(glob.glob(os.path.join(workdir, 'eval_*.json'))):
    with open(path) as f:
      out[os.path.basename(path)] = json.load(f)
  return out


def test_sigkill_at_any_moment_then_restart_ends_as_the_uninterrupted_run(reference, dataset, xla_cache, tmp_path):
  """SIGKILL after a step (before the first checkpoint), during an evaluation and in the middle of an asynchronous
  checkpoint write, each followed by a restart of the same command; then a line of metrics.jsonl torn as a kill in
  the middle of its append leaves it. Each restart resumes at most one checkpoint interval before the step killed;
  the last one ends with the losses, evaluations and params of the uninterrupted run, bit for bit."""
  workdir = str(tmp_path / 'run')
  args, env = fault_args(dataset, workdir), environment(xla_cache)
  metrics_file = os.path.join(workdir, metrics.METRICS_FILE)
  writing_4 = os.path.join(workdir, 'checkpoints', '4.orbax-checkpoint-tmp')
  moments = [  # (what, when to kill, what must hold right after the kill for it to have landed there)
      ('after step 1, before any checkpoint', lambda log: os.path.isfile(metrics_file) and read(metrics_file),
       lambda: finished_steps(workdir) == []),
      ('during evaluation', lambda log: 'Evaluating step 4' in read(log),
       lambda: not os.path.exists(os.path.join(workdir, 'eval_k400_val_step4.json'))),
      ('in the middle of a checkpoint write', lambda log: os.path.isdir(writing_4),
       lambda: os.path.isdir(writing_4) and 4 not in finished_steps(workdir)),
  ]
  killed = None
  for attempt, (moment, ready, landed) in enumerate(moments):
    log = str(tmp_path / f'attempt{attempt}.log')
    proc = start(args, env, log)
    wait_for(lambda: ready(log), proc, log)
    proc.kill()
    proc.wait()
    assert landed(), f'the kill did not land {moment}\n{tail(log)}'
    if killed is not None:
      assert resumed_step(log) >= killed - CHECKPOINT_EVERY, tail(log)
    killed = last_logged_step(workdir)

  with open(metrics_file, 'a') as f:
    f.write('{"step": 5, "lo')  # a kill in the middle of appending a line
  log = str(tmp_path / 'last.log')
  proc = start(args, env, log)
  assert proc.wait(timeout=300) == 0, tail(log)
  assert resumed_step(log) >= killed - CHECKPOINT_EVERY
  assert_same_run(reference, workdir, atol=0, steps=STEPS)
  assert eval_results(workdir) == eval_results(reference)


HEARTBEAT_S = 10  # --config.heartbeat_timeout_s of the two-process runs below
LOST_HOST_BOUND_S = HEARTBEAT_S + 50  # the survivor's exit: the heartbeat, plus closing the run and shutting down


def two_processes(dataset, workdir, xla_cache, tmp_path, name, steps=12):
  """launch.py as 2 processes of 1 CPU device each over localhost (Gloo collectives), a checkpoint every 2 steps."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  env = environment(xla_cache, JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo')
  return [start(launch_args(dataset, workdir, f'--config.heartbeat_timeout_s={HEARTBEAT_S}',
                            f'--coordinator_address=localhost:{port}', '--num_processes=2', f'--process_id={i}',
                            steps=steps), env, tmp_path / f'{name}{i}.log') for i in range(2)]


def test_a_lost_host_stops_the_survivor_in_bounded_time_and_a_restart_ends_as_the_uninterrupted_run(
    dataset, xla_cache, tmp_path):
  """Process 1 of 2 is SIGKILLed mid-run (its host lost): process 0 exits non-zero within the heartbeat timeout plus
  a margin, naming task 1 as lost; the checkpoints finished before stay intact; the same two commands run again
  resume from the newest and end bit-identical to an uninterrupted two-process run."""
  reference, workdir = tmp_path / 'reference', tmp_path / 'run'
  for i, p in enumerate(two_processes(dataset, reference, xla_cache, tmp_path, 'reference')):
    assert p.wait(timeout=300) == 0, tail(tmp_path / f'reference{i}.log')

  survivor, lost = two_processes(dataset, workdir, xla_cache, tmp_path, 'run')
  log = tmp_path / 'run0.log'
  wait_for(lambda: finished_steps(workdir) and last_logged_step(workdir) >= 5, survivor, log)
  lost.kill()
  killed_at = time.monotonic()
  rc = survivor.wait(timeout=LOST_HOST_BOUND_S + 60)
  exited_after = time.monotonic() - killed_at
  assert rc != 0 and exited_after < LOST_HOST_BOUND_S, (rc, exited_after, tail(log))
  assert re.search(r'[Tt]ask 1\b.*(heartbeat|unhealthy|crashed)|(heartbeat|unhealthy).*task:1\b', read(log)), tail(log)
  kept = finished_steps(workdir)
  assert kept and all(final_params(workdir, step) is not None for step in kept)  # every finished one restores

  restarted = two_processes(dataset, workdir, xla_cache, tmp_path, 'restart')
  for i, p in enumerate(restarted):
    assert p.wait(timeout=300) == 0, tail(tmp_path / f'restart{i}.log')
  assert resumed_step(tmp_path / 'restart0.log') == kept[-1]
  assert_same_run(str(reference), str(workdir), atol=0, steps=12)


def largest_file(directory):
  return max((p for p in glob.glob(os.path.join(directory, '**'), recursive=True) if os.path.isfile(p)),
             key=os.path.getsize)


def test_damaged_newest_checkpoints_are_set_aside_with_a_warning_and_the_run_resumes_from_the_newest_intact_one(
    reference, dataset, xla_cache, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  state_6 = largest_file(os.path.join(workdir, 'checkpoints', '6', 'state'))
  os.truncate(state_6, os.path.getsize(state_6) // 2)
  os.remove(largest_file(os.path.join(workdir, 'checkpoints', '4', 'state')))

  log = str(tmp_path / 'restart.log')
  proc = start(fault_args(dataset, workdir), environment(xla_cache), log)
  assert proc.wait(timeout=300) == 0, tail(log)
  assert resumed_step(log) == 2
  text = read(log)
  for step in (6, 4):
    assert re.search(rf'Checkpoint step {step} in \S+ is damaged .*: moved aside to \S+/{step}\.damaged', text)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '4', '4.damaged', '6', '6.damaged']
  assert_same_run(reference, workdir, atol=0, steps=STEPS)


# A failed read leaves one of Orbax's coroutines unawaited; pytest reports it when it is collected.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_when_no_checkpoint_restores_nothing_is_moved_and_the_run_does_not_start_from_scratch(tmp_path):
  state = {'w': jnp.arange(8, dtype=jnp.float32), 'step': jnp.zeros((), jnp.int32)}
  data = iter(grain.MapDataset.range(4).to_iter_dataset())
  ckpt = checkpoints.Checkpoints(str(tmp_path), keep=3, enable_async=False)
  for step in (2, 4):
    ckpt.save(step, jax.tree.map(lambda x: x + step, state), data, {})
  ckpt.close()
  directory = tmp_path / 'checkpoints'

  other_model = {'w': jax.ShapeDtypeStruct((9,), jnp.float32), 'step': jax.ShapeDtypeStruct((), jnp.int32)}
  ckpt = checkpoints.Checkpoints(str(tmp_path), keep=3, enable_async=False)
  with pytest.raises(checkpoints.NoIntactCheckpointError, match='step 4: .*; step 2: '):
    ckpt.restore_latest(other_model, data)  # a changed config: the files are fine and must stay
  assert sorted(os.listdir(directory)) == ['2', '4']

  for step in (2, 4):
    os.remove(largest_file(directory / str(step) / 'state'))
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  with pytest.raises(checkpoints.NoIntactCheckpointError, match='step 4: .*; step 2: '):
    ckpt.restore_latest(abstract, data)
  assert sorted(os.listdir(directory)) == ['2', '4']
  ckpt.close()


# Run instead of `python launch.py`: every Python-level write into step 4's temporary checkpoint directory (Orbax's
# metadata, the JSON items: the config and the grain iterator state) fails as on a full disk.
FULL_DISK_AT_STEP_4 = '''
import errno, os, runpy, sys
from etils import epath
write_text = epath.gpath.PosixGPath.write_text
def full_disk(self, *args, **kwargs):
  if os.sep + os.path.join('checkpoints', '4.orbax-checkpoint-tmp') + os.sep in os.fspath(self):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(self))
  return write_text(self, *args, **kwargs)
epath.gpath.PosixGPath.write_text = full_disk
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''


def test_disk_full_while_saving_stops_with_a_clear_error_keeping_the_last_checkpoint_and_metrics(
    reference, dataset, xla_cache, tmp_path):
  workdir = str(tmp_path / 'run')
  args, env = fault_args(dataset, workdir), environment(xla_cache)
  done = subprocess.run([sys.executable, '-c', FULL_DISK_AT_STEP_4, *args[1:]], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode != 0
  error = [line for line in done.stderr.splitlines()
           if line.startswith(f'{checkpoints.__name__}.{checkpoints.CheckpointWriteError.__name__}: ')]
  assert len(error) == 1, done.stderr[-4000:]
  assert 'Could not write the checkpoint of step 4' in error[0] and os.strerror(errno.ENOSPC) in error[0]
  assert 'the last complete checkpoint, step 2, is kept' in error[0]
  assert finished_steps(workdir) == [2]
  assert logged(workdir) == logged(reference)[:4]  # every line written before the failure, whole

  log = str(tmp_path / 'restart.log')
  proc = start(args, env, log)
  assert proc.wait(timeout=300) == 0, tail(log)
  assert resumed_step(log) == 2
  assert_same_run(reference, workdir, atol=0, steps=STEPS)


def test_when_every_evaluation_video_is_bad_the_run_stops_with_a_clear_error_and_records_no_result(
    dataset, xla_cache, tmp_path):
  workdir = str(tmp_path / 'run')
  videos = []
  for label in range(3):
    for i in range(2):
      videos.append(str(tmp_path / f'bad_{label}_{i}.mp4'))
      with open(videos[-1], 'wb') as f:
        f.write(b'\x00\x00\x00\x18ftypmp42 not a video')
  val_list = str(tmp_path / 'val.txt')
  with open(val_list, 'w') as f:
    f.writelines(f'{path} 16 {i // 2}\n' for i, path in enumerate(videos))

  done = subprocess.run(fault_args(dataset, workdir, val_list), env=environment(xla_cache), cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode != 0
  message = f'{val_list}: 0 of its 6 videos could be read'
  assert message in done.stderr and os.path.join(workdir, bad_videos.FILENAME) in done.stderr, done.stderr[-4000:]
  assert sorted(bad_videos.read_bad_videos(workdir)) == sorted(videos)
  assert glob.glob(os.path.join(workdir, 'eval_*.json')) == []
  assert finished_steps(workdir) == [2]  # evaluated at step 4 before its checkpoint: the one before stays
  assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(final_params(workdir, 2)))


def test_accuracy_of_zero_videos_is_an_error_not_nan():
  with pytest.raises(ValueError, match='zero videos'):
    evaluate.accuracy(np.zeros((0, 3), np.float32), np.zeros((0,), np.int32))
