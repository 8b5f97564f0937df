"""Bad input is replaced, counted and reported, never silently lost.

A source raises `BadVideoError` for a missing, empty, truncated or undecodable video, or one with fewer
frames than its list says. `BadVideoLog` records each occurrence: a warning in the log and one JSON line
in `<workdir>/bad_videos.jsonl`. grain workers are separate processes, so they append to the file
(single short O_APPEND writes do not interleave) rather than to a counter in memory; `read_bad_videos`
gives the main process the summary. With `fail_fast` the error is raised instead, and grain passes it
from the worker to the training loop.
"""
import collections
import dataclasses
import json
import os

from absl import logging

FILENAME = 'bad_videos.jsonl'


class BadVideoError(Exception):
  """A video that cannot give the frames asked of it."""

  def __init__(self, path: str, reason: str):
    super().__init__(path, reason)  # exactly the constructor's arguments, so it pickles across processes
    self.path = path
    self.reason = reason

  def __str__(self):
    return f'{self.path}: {self.reason}'


@dataclasses.dataclass(frozen=True)
class BadVideoLog:
  """Where bad videos are reported; `workdir=None` only logs them."""
  workdir: str | None = None
  fail_fast: bool = False

  def report(self, error: BadVideoError) -> None:
    if self.fail_fast:
      raise error
    logging.warning('Bad video: %s', error)
    if self.workdir is not None:
      os.makedirs(self.workdir, exist_ok=True)
      line = json.dumps({'path': error.path, 'reason': error.reason}) + '\n'
      with open(os.path.join(self.workdir, FILENAME), 'a') as f:
        f.write(line)


def read_bad_videos(workdir: str) -> dict[str, list[str]]:
  """Each bad path with the reason of every read of it that failed; {} when there were none."""
  reasons = collections.defaultdict(list)
  path = os.path.join(workdir, FILENAME)
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        entry = json.loads(line)
        reasons[entry['path']].append(entry['reason'])
  return dict(reasons)
