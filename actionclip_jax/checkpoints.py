"""Orbax checkpoints of a run: the train state, the grain iterator and the config, saved together.

`WORKDIR/checkpoints/` keeps the last N (asynchronously written); `WORKDIR/best/` keeps the best by top-1.
Resume order (see `train.py`): this work dir's latest checkpoint, else `init_from`, else from scratch.
"""
from __future__ import annotations

import os
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpoints:

  def __init__(self, workdir: str, keep: int, enable_async: bool = True):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=enable_async, create=True)
    self.latest = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, 'checkpoints')), options=options)
    best = ocp.CheckpointManagerOptions(max_to_keep=1, best_fn=lambda m: m['top1'], best_mode='max',
                                        enable_async_checkpointing=enable_async, create=True)
    self.best = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, 'best')), options=best)

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def save(self, step: int, state, data_iterator, config: dict) -> None:
    self.latest.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator),
        config=ocp.args.JsonSave(config)), force=True)

  def save_best(self, step: int, state, config: dict, top1: float) -> None:
    self.best.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config)),
                   metrics={'top1': float(top1)}, force=True)

  def restore(self, step: int, abstract_state, data_iterator) -> Any:
    """Restores the state (into the shardings of `abstract_state`) and, in place, the data iterator."""
    restored = self.latest.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=grain.checkpoint.CheckpointRestore(data_iterator)))
    return restored.state

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def read_params(workdir: str, step: int | None = None) -> Any | None:
  """A run's params at `step` (default: its latest checkpoint, else its best) as numpy arrays, whatever model
  and mesh saved them; None if `workdir` has no checkpoint."""
  for sub in ('checkpoints', 'best'):
    directory = os.path.abspath(os.path.join(workdir, sub))
    if not os.path.isdir(directory):
      continue
    if step is None:
      with ocp.CheckpointManager(directory) as manager:
        step = manager.latest_step()
    if step is None:
      continue
    path = os.path.join(directory, str(step), 'state')
    with ocp.PyTreeCheckpointer() as checkpointer:
      tree = checkpointer.metadata(path).item_metadata.tree
      restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
      return checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))['params']
  return None
