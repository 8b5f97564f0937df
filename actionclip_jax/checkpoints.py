"""Orbax checkpoints of a run: the train state, the grain iterator and the config, saved together.

`WORKDIR/checkpoints/` keeps the last N (asynchronously written); `WORKDIR/best/` keeps the best by top-1.
Resume order (see `train.py`): this work dir's latest checkpoint, else `init_from`, else from scratch.
"""
from __future__ import annotations

import os
from typing import Any

import grain
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


def restore_params(workdir: str, abstract_state) -> Any | None:
  """The params of another run's latest (or, without one, best) checkpoint; None if `workdir` has none."""
  for sub in ('checkpoints', 'best'):
    directory = os.path.abspath(os.path.join(workdir, sub))
    if not os.path.isdir(directory):
      continue
    with ocp.CheckpointManager(directory) as manager:
      step = manager.latest_step()
      if step is not None:
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
        return restored.state['params']
  return None
