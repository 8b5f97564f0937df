"""Orbax checkpoints of a run: the train state, the grain iterator and the config, saved together.

`WORKDIR/checkpoints/` keeps the last N (asynchronously written); `WORKDIR/best/` keeps the best by top-1.
Resume order (`builders.start_state`): this work dir's newest intact checkpoint, else `init_from`, else from scratch.

Faults: a checkpoint that no longer restores (a file truncated or deleted) while an older one does is moved aside to
`checkpoints/<step>.damaged` with a warning, and the run resumes from the older one; when none restores, nothing is
moved and `restore_latest` raises. A failed write (a full disk) raises `CheckpointWriteError` naming the step and
the last complete checkpoint, which Orbax's write-to-a-temporary-directory-then-rename leaves untouched.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

DAMAGED_SUFFIX = '.damaged'  # not a step name to Orbax, so the manager no longer sees the step


class CheckpointWriteError(RuntimeError):
  """A checkpoint could not be written; the message names the step and the last complete checkpoint."""


class NoIntactCheckpointError(RuntimeError):
  """Checkpoints exist but none restores: the run must not silently start from scratch."""


class Checkpoints:

  def __init__(self, workdir: str, keep: int, enable_async: bool = True):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=enable_async, create=True)
    self.latest = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, 'checkpoints')), options=options)
    best = ocp.CheckpointManagerOptions(max_to_keep=1, best_fn=lambda m: m['top1'], best_mode='max',
                                        enable_async_checkpointing=enable_async, create=True)
    self.best = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, 'best')), options=best)
    self.complete_step = self.latest.latest_step()  # the newest checkpoint known to be fully written
    self._writing = None  # the step of the writes in flight
    self._failed = False

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def save(self, step: int, state, data_iterator, config: dict) -> None:
    self.wait()  # a failure of the previous write is reported under its own step
    self._writing = step
    with self._write_errors(step):
      self.latest.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator),
          config=ocp.args.JsonSave(config)), force=True)

  def save_best(self, step: int, state, config: dict, top1: float) -> None:
    """Keeps `state` in best/ when `top1` (the evaluation's headline number: top-1, or mAP for multi-label runs,
    stored under the metric name 'top1') is the highest so far."""
    if step in self.best.all_steps():
      return  # written by an attempt killed before this step's checkpoint; the resumed run computed the same state
    with self._write_errors(step):
      self.best.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                   config=ocp.args.JsonSave(config)),
                     metrics={'top1': float(top1)}, force=True)

  def restore(self, step: int, abstract_state, data_iterator) -> Any:
    """Restores the state (into the shardings of `abstract_state`) and, in place, the data iterator."""
    restored = self.latest.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=grain.checkpoint.CheckpointRestore(data_iterator)))
    return restored.state

  def restore_latest(self, abstract_state, data_iterator) -> tuple[int, Any] | None:
    """(step, state) of the newest checkpoint that restores, the data iterator restored in place; None if there
    is no checkpoint.

    A newer checkpoint that fails while an older one restores is damaged (the same model restored from the older
    one, so the files are at fault, not the config): it is moved aside with a warning naming its step. When none
    restores, nothing is moved (a changed config fails every one the same way) and NoIntactCheckpointError names
    each step's error.
    """
    failures = []
    for step in reversed(self.latest.all_steps()):
      try:
        state = self.restore(step, abstract_state, data_iterator)
      except Exception as e:  # pylint: disable=broad-except  # Orbax, tensorstore and json raise many types
        failures.append((step, e))
        continue
      for damaged, error in failures:
        self._move_aside(damaged, error, step)
      if failures:
        self.latest.reload()  # forget the steps moved aside, so their numbers can be saved again
      self.complete_step = step
      return step, state
    if failures:
      errors = '; '.join(f'step {step}: {_first_line(e)}' for step, e in failures)
      raise NoIntactCheckpointError(
          f'No checkpoint in {self.latest.directory} restores, so the run does not start from scratch over them '
          f'({errors}). If the config changed since they were written, restore it; if the files are damaged, '
          f'move them away to start afresh.') from failures[0][1]
    return None

  def _move_aside(self, step: int, error: Exception, resumed: int) -> None:
    directory = os.fspath(self.latest.directory)
    target = os.path.join(directory, f'{step}{DAMAGED_SUFFIX}')
    copy = 0
    while os.path.exists(target):  # the same step damaged again in a later attempt
      copy += 1
      target = os.path.join(directory, f'{step}{DAMAGED_SUFFIX}.{copy}')
    logging.warning('Checkpoint step %d in %s is damaged (%s): moved aside to %s; resuming from step %d',
                    step, directory, _first_line(error), target, resumed)
    if jax.process_index() == 0:
      os.rename(os.path.join(directory, str(step)), target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'checkpoint {step} moved aside')

  def wait(self) -> None:
    for manager in (self.latest, self.best):
      with self._write_errors(self._writing, cleanup=True):
        manager.wait_until_finished()
    if self._writing is not None and not self._failed:
      self.complete_step, self._writing = self._writing, None

  def close(self) -> None:
    self.wait()
    for manager in (self.latest, self.best):
      with self._write_errors(self._writing, cleanup=True):
        manager.close()

  def __enter__(self) -> 'Checkpoints':
    return self

  def __exit__(self, *exc):
    self.close()  # waits for the writes in flight: the last checkpoint is complete, or its failure raised
    return False

  @contextlib.contextmanager
  def _write_errors(self, step: int | None, cleanup: bool = False):
    """Raises a failed write as CheckpointWriteError. Orbax raises the same error again when waited for or closed
    later: in that cleanup, once it has been raised, it is logged instead."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except  # tensorstore, Orbax and grain raise many types
      if self._failed and cleanup:
        logging.warning('Checkpoint writes failed before; again: %s', _first_line(e))
        return
      self._failed = True
      what = 'a checkpoint' if step is None else f'the checkpoint of step {step}'
      kept = (f'the last complete checkpoint, step {self.complete_step}, is kept: rerun the same command (after '
              f'freeing space, if the disk is full) to resume from it' if self.complete_step is not None
              else 'no checkpoint was completed before it')
      raise CheckpointWriteError(f'Could not write {what} in {self.latest.directory.parent}: {_first_line(e)}. '
                                 f'The run stops; {kept}.') from e


def _first_line(error: Exception) -> str:
  """`Type: first line of the message`: tensorstore's messages run on with the whole spec."""
  text = str(error).strip()
  return f'{type(error).__name__}: {text.splitlines()[0].rstrip(".") if text else ""}'


def params_path(workdir: str, step: int | None = None) -> str | None:
  """The state directory `read_params` reads: `step`'s (default: the latest checkpoint's, else the best's); None
  if `workdir` has no checkpoint."""
  for sub in ('checkpoints', 'best'):
    directory = os.path.abspath(os.path.join(workdir, sub))
    if not os.path.isdir(directory):
      continue
    if step is None:
      with ocp.CheckpointManager(directory) as manager:
        step = manager.latest_step()
    if step is None:
      continue
    return os.path.join(directory, str(step), 'state')
  return None


def read_params(workdir: str, step: int | None = None) -> Any | None:
  """A run's params at `step` (default: its latest checkpoint, else its best) as numpy arrays, whatever model
  and mesh saved them; None if `workdir` has no checkpoint."""
  path = params_path(workdir, step)
  if path is None:
    return None
  with ocp.PyTreeCheckpointer() as checkpointer:
    tree = checkpointer.metadata(path).item_metadata.tree
    restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))['params']
