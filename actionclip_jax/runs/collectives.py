"""What a compiled program's HLO says about its communication: each kind of collective's count and bytes a step.

A collective inside a `while` loop runs once per iteration: its count and bytes are multiplied by the loop's trip
count, through every level of nesting. The trip count is XLA's `known_trip_count` where the backend writes it (the
CPU's does); the TPU compiler leaves it out, so there it is read off the loop's condition, `counter < N` for a
constant N, which is how `lax.scan` and `fori_loop` with static bounds lower (counting from 0 by 1). Bytes are the collective's result size (for an all-gather the gathered array, for a reduce-scatter the
scattered shard); an asynchronous pair (`-start` / `-done`) is one collective, its bytes the `-done` result's.
"""
from __future__ import annotations

import collections
import re

KINDS = ('all-gather', 'reduce-scatter', 'all-reduce', 'all-to-all', 'collective-permute')
_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 'f16': 2, 'bf16': 2, 's32': 4, 'u32': 4, 'f32': 4,
          's64': 8, 'u64': 8, 'f64': 8, 'c64': 8, 'c128': 16, 'f8e4m3fn': 1, 'f8e5m2': 1}
_COMPUTATION = re.compile(r'^(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$')
_SHAPE = re.compile(r'\b(' + '|'.join(_BYTES) + r')\[([\d,]*)\]')
_OP = re.compile(r'=\s*(.+?)\s+(' + '|'.join(KINDS) + r')(-start|-done)?\(')
_WHILE = re.compile(r'\bwhile\(.*?condition=%?([\w.\-]+), body=%?([\w.\-]+)')
_LESS_THAN = re.compile(r'ROOT .*compare\(%?[\w.\-]+, %?([\w.\-]+)\), direction=LT')
_TRIP = re.compile(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"(\d+)"')
_CALLS = re.compile(r'(?:calls|to_apply|condition|branch_computations|called_computations)=\{?%?([\w.\-, %]+)\}?')


def _bytes(shape_text: str) -> int:
  total = 0
  for dtype, dims in _SHAPE.findall(shape_text):
    n = 1
    for d in filter(None, dims.split(',')):
      n *= int(d)
    total += n * _BYTES[dtype]
  return total


def _bound(condition: list[str]) -> int:
  """N of a loop condition whose root is `compare(counter, N), direction=LT` with N a constant; 1 when it is not."""
  for line in condition:
    less = _LESS_THAN.search(line)
    if less:
      for other in condition:
        constant = re.search(rf'%?{re.escape(less.group(1))} = s32\[\][^=]*constant\((\d+)\)', other)
        if constant:
          return int(constant.group(1))
  return 1


def count(hlo_text: str) -> dict[str, dict[str, int]]:
  """{kind: {'count': n, 'bytes': b}} a step, for each kind of KINDS (zeros included)."""
  bodies, entry, current = {}, None, None
  for line in hlo_text.splitlines():
    header = _COMPUTATION.match(line.strip())
    if header:
      current = header.group(1)
      bodies[current] = []
      if line.lstrip().startswith('ENTRY'):
        entry = current
    elif current is not None:
      bodies[current].append(line)
  callees = collections.defaultdict(list)  # computation -> [(callee, times per call)]
  for name, lines in bodies.items():
    for line in lines:
      loop = _WHILE.search(line)
      if loop:
        trip = _TRIP.search(line)
        callees[name].append((loop.group(2), int(trip.group(1)) if trip else _bound(bodies.get(loop.group(1), []))))
        continue
      for group in _CALLS.findall(line):
        for callee in group.replace('%', '').split(','):
          callee = callee.strip()
          if callee in bodies:
            callees[name].append((callee, 1))
  times = collections.Counter()

  def visit(name, multiplier):
    times[name] += multiplier
    for callee, n in callees[name]:
      visit(callee, multiplier * n)

  visit(entry, 1)
  out = {kind: {'count': 0, 'bytes': 0} for kind in KINDS}
  for name, lines in bodies.items():
    for line in lines:
      op = _OP.search(line)
      if op and times[name]:
        kind, phase = op.group(2), op.group(3) or ''
        if phase != '-done':
          out[kind]['count'] += times[name]
        if phase != '-start':
          out[kind]['bytes'] += times[name] * _bytes(op.group(1))
  return out
