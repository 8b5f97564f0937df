"""The trainer end to end, through `launch.py` in subprocesses: sharded over 8 simulated devices in two processes
it matches one device; SIGTERM leaves a checkpoint; NaN stops the run. (Faults — SIGKILL at any moment,
damaged checkpoints, a full disk — are in test_faults.py.)

Runs are tiny (`configs/k400.py:runlocal`, 4 steps of 8 clips of a synthetic dataset) and share XLA's persistent
compilation cache, so most of them skip compiling.
"""
import json
import os
import signal
import socket
import subprocess

import jax
import ml_collections
import numpy as np
import pytest

from actionclip_jax.model import clip, flops, prompts, video
from actionclip_jax.runs import builders, inputs, metrics, train
from actionclip_jax import tokenize
from data_pipelines import synthetic
from launch_helpers import (REPO, assert_same_run, environment, final_params, finished_steps, launch_args, run,
                            start, wait_for)
from tolerance import assert_trees_close, rounding

STEPS = 4
# Large enough that a lost or doubled gradient shard moves params by ~1e-3 per step, far above the 1e-5 bar across
# device layouts; rounding differences between layouts (sharded reductions sum in another order) change Adam's
# normalized update only relatively, ~1e-6 of it, i.e. ~1e-9 here.
LR = '--config.solver.lr=1e-3'
# Adam moves a param by at most about lr a step (x10 for the head group): the SHIFT_INVARIANT biases' bound.
SHIFT_INVARIANT_ATOL = 2 * STEPS * 1e-3 * 10


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  return synthetic.make_dataset(str(tmp_path_factory.mktemp('data')))


@pytest.fixture(scope='module')
def reference(dataset, xla_cache, tmp_path_factory):
  """One process, one device: the run the others must reproduce."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  run(launch_args(dataset, workdir, LR, steps=STEPS), environment(xla_cache))
  return workdir


def test_reference_run_writes_everything(reference):
  assert os.path.exists(os.path.join(reference, 'config.json'))
  assert os.listdir(os.path.join(reference, 'tensorboard'))
  steps = sorted(int(s) for s in os.listdir(os.path.join(reference, 'checkpoints')) if s.isdigit())
  assert steps[-1] == STEPS and len(steps) <= 3  # keep_checkpoints
  records = metrics.read_metrics(reference)
  assert all({'step', 'loss', 'lr', 'clips_per_sec', 'data_wait_s', 'step_s'} <= set(r) for r in records)
  assert all(0 <= r['data_wait_s'] <= r['step_s'] and 'mfu' not in r for r in records)  # no known peak on a CPU
  assert records[-1]['lr'] == 0.0  # cosine to zero at the last step
  # The step's analytic FLOPs, once: the model of the saved config, on its batch and its trimmed prompt table.
  with open(os.path.join(reference, 'config.json')) as f:
    config = ml_collections.ConfigDict(json.load(f))
  mcfg = builders.model_config(config)
  table = builders.class_table(config, inputs.label_names(config.data), mcfg.clip.context_length)
  want = flops.train_step(mcfg, config.data.batch_size, prompts.trim_padding(table).shape[-1])
  assert [r.get('flops_per_step') for r in records] == [want] + [None] * (len(records) - 1)


def free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_of_four_devices_data_by_fsdp_match_one_device(reference, dataset, xla_cache, tmp_path):
  """8 devices over 2 processes, the batch split 2 ways over `data` and params 4 ways over `fsdp`: every
  collective the trainer uses crosses devices of one process and the process boundary."""
  port = free_port()
  env = environment(xla_cache, devices=4, JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo')
  procs = [start(launch_args(dataset, tmp_path, LR, '--config.mesh.data=2', '--config.mesh.fsdp=4',
                             f'--coordinator_address=localhost:{port}', '--num_processes=2', f'--process_id={i}',
                             steps=STEPS), env, tmp_path / f'process{i}.log')
           for i in range(2)]
  for i, p in enumerate(procs):
    assert p.wait(timeout=300) == 0, (tmp_path / f'process{i}.log').read_text()[-4000:]
  assert_same_run(reference, str(tmp_path), atol=1e-5, steps=STEPS, shift_invariant_atol=SHIFT_INVARIANT_ATOL)


def test_sigterm_checkpoints_the_current_step(dataset, xla_cache, tmp_path):
  workdir, log = tmp_path / 'run', tmp_path / 'log'
  args = launch_args(dataset, workdir, '--config.checkpoint_every_steps=1000', steps=1000)
  proc = start(args, environment(xla_cache), log)
  wait_for(lambda: len(metrics.read_metrics(workdir)) >= 2, proc, log)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 0, log.read_text()[-4000:]
  last = metrics.read_metrics(workdir)[-1]['step']
  assert finished_steps(workdir) == [last] and last < 1000


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(dataset, xla_cache, tmp_path):
  args = launch_args(dataset, tmp_path, '--config.solver.lr=1e30', '--config.solver.clip_gradient=0',
                     '--config.checkpoint_every_steps=1', '--config.solver.lr_warmup_step=0', steps=STEPS)
  done = subprocess.run(args, env=environment(xla_cache), cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode != 0
  assert 'FloatingPointError' in done.stderr and 'stopping the run' in done.stderr
  bad_step = int(done.stderr.split('Loss is ')[1].split(' at step ')[1].split(':')[0])
  assert finished_steps(tmp_path) and finished_steps(tmp_path)[-1] == bad_step - 1
  for x in jax.tree_util.tree_leaves(final_params(tmp_path, bad_step - 1)):
    assert np.isfinite(x).all()


def test_gradient_accumulation_is_the_whole_batch_gradient():
  """GradCache: 4 chunks give the loss and gradient of the unchunked batch (dropout off)."""
  # One block a tower: chunking acts on the batch, not on depth, and compiling is this test's cost.
  arch = clip.get_preset('tiny', num_frames=2, vision_layers=1, transformer_layers=1)
  config = video.ActionCLIPConfig(arch, sim_header='Transf', interaction='wti')
  module = video.ActionCLIP(config)
  params = video.init_params(config, jax.random.key(0))
  frames = jax.random.normal(jax.random.key(1), (8, 2, 32, 32, 3))
  ids = jax.numpy.asarray(tokenize(['a dog', 'a cat', 'archery', 'juggling'] * 2, context_length=16))
  labels = jax.numpy.asarray([0, 1, 2, 3, 0, 1, 2, 0])
  objective = train.kl_objective(labels)
  grads = jax.jit(lambda p, k: train.loss_parts_and_grads(module, p, frames, ids, objective, jax.random.key(2), k)[::2],
                  static_argnums=1)
  (loss1, g1), (loss4, g4) = grads(params, 1), grads(params, 4)
  # Chunking changes only the order of float32 sums: each entry accumulates over 8 samples x (2 frames x 17 or
  # 16 text tokens) through a block, ~1000 terms (observed: ~30 eps of its module's scale). A dropped, doubled
  # or mis-scaled chunk moves the gradient by ~25%.
  np.testing.assert_allclose(loss4, loss1, atol=rounding(8 * 8, loss1), rtol=0)  # an 8x8 log-softmax
  assert_trees_close(g4, g1, terms=1000)


def test_the_text_padding_the_step_trims_changes_neither_loss_nor_gradient():
  """make_train_step feeds the text tower prompts.trim_padding(table): the positions after every end token cannot
  reach the loss (causal tower, pooled at that token, WTI and its regularizer masked past it)."""
  arch = clip.get_preset('tiny', num_frames=2, vision_layers=1, transformer_layers=1)
  config = video.ActionCLIPConfig(arch, sim_header='Transf', interaction='wti')
  module = video.ActionCLIP(config)
  params = video.init_params(config, jax.random.key(0))
  frames = jax.random.normal(jax.random.key(1), (4, 2, 32, 32, 3))
  ids = tokenize(['a dog', 'a cat', 'archery', 'juggling on one leg'], context_length=16)
  trimmed = prompts.trim_padding(ids)
  assert trimmed.shape == (4, 7) and (ids[:, 7:] == 0).all()
  labels = jax.numpy.asarray([0, 1, 2, 0])
  objective = train.kl_objective(labels)
  grads = jax.jit(lambda p, i: train.loss_parts_and_grads(module, p, frames, i, objective, jax.random.key(2),
                                                          cdcr_weight=0.001)[::2])
  (loss, g), (loss_trimmed, g_trimmed) = grads(params, ids), grads(params, trimmed)
  # Only the text softmaxes' sums change length (over exact zeros); the bounds are those of the test above.
  np.testing.assert_allclose(loss_trimmed, loss, atol=rounding(4 * 4, loss), rtol=0)
  assert_trees_close(g_trimmed, g, terms=1000)


def test_multilabel_texts_are_drawn_from_each_videos_labels_and_sigmoid_scores_every_class():
  table = np.arange(3 * 5 * 4).reshape(3, 5, 4)  # [K templates, C classes, L]: every entry names its (k, c)
  labels = np.zeros((6, 5), bool)
  labels[np.arange(6), [0, 1, 2, 3, 4, 0]] = True
  labels[[0, 2, 4], [3, 3, 1]] = True
  batch = {'label': np.array([0, 1, 2, 3, 4, 0]), 'labels': labels}
  drawn = set()
  for seed in range(20):
    ids, objective = train.texts_and_objective(jax.random.key(seed), batch, table,
                                               train.Loss('kl', multilabel=True))
    k, c = np.asarray(ids[:, 0]) // 20, np.asarray(ids[:, 0]) % 20 // 4  # back to (template, class)
    assert labels[np.arange(6), c].all() and (k < 3).all()  # each video's text is one of its own classes
    drawn |= {(i, int(ci)) for i, ci in enumerate(c)}
    # Its objective is the KL loss with those positives: the loss of logits that single them out is lower.
    positives = labels[:, c]
    assert objective(np.where(positives, 10.0, 0.0)) < objective(np.where(positives, 0.0, 10.0))
  assert drawn == {(i, int(c)) for i, c in zip(*np.nonzero(labels))}  # every label of every video, over 20 steps
  ids, objective = train.texts_and_objective(jax.random.key(0), batch, table, train.Loss('sigmoid', True, -1.0))
  assert ids.shape == (5, 4) and (np.asarray(ids[:, 0]) % 20 // 4 == np.arange(5)).all()  # each class once
  np.testing.assert_allclose(objective(np.zeros((6, 5))), 5 * np.log(1 + np.e ** -1) + labels.sum() / 6,
                             rtol=rounding(30))  # softplus(-1) a pair, plus 1 for each positive
