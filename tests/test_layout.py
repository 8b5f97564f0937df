"""The code map (docs/code_map.md) against the code: every module is a room there, and every import, function-level
ones included, points down or across its own floor, with no circle."""
import ast
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOTS = ('actionclip_jax', 'data_pipelines', 'configs', 'benchmarks', 'launch.py')
ROOM = re.compile(r'^\| `(?P<path>[^`]+\.py)` \| (?P<floor>\d+) \|')


def _module(path: str) -> str:
  name = os.path.splitext(path)[0].replace(os.sep, '.')
  return name.removesuffix('.__init__')


def _project_files() -> list[str]:
  found = []
  for root in ROOTS:
    if root.endswith('.py'):
      found.append(root)
      continue
    for folder, _, names in os.walk(os.path.join(REPO, root)):
      found += [os.path.relpath(os.path.join(folder, n), REPO) for n in names if n.endswith('.py')]
  return sorted(found)


def _rooms() -> dict[str, int]:
  with open(os.path.join(REPO, 'docs', 'code_map.md'), encoding='utf-8') as f:
    return {m['path']: int(m['floor']) for m in map(ROOM.match, f) if m}


def imports(path: str, known: set[str], root: str = REPO) -> set[str]:
  """The modules of `known` that `path` (relative to `root`) imports anywhere in its body: `from pkg import mod`
  reads mod, `from mod import x` reads mod, a relative import resolves against the file's package."""
  with open(os.path.join(root, path), encoding='utf-8') as f:
    tree = ast.parse(f.read(), path)
  me = _module(path)
  package = me if path.endswith('__init__.py') else me.rpartition('.')[0]
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        parts = package.split('.')[:len(package.split('.')) - node.level + 1]
        base = '.'.join([*parts, base] if base else parts)
      names = [f'{base}.{a.name}' if f'{base}.{a.name}' in known else base for a in node.names]
    else:
      continue
    for name in names:
      while name and name not in known:
        name = name.rpartition('.')[0]
      if name and name != me:
        found.add(name)
  return found


def test_every_module_is_a_room_of_the_code_map():
  rooms = _rooms()
  files = _project_files()
  assert sorted(rooms) == files, (f'not in docs/code_map.md: {sorted(set(files) - set(rooms))}; '
                                  f'in it but gone: {sorted(set(rooms) - set(files))}')


def test_every_import_points_down_or_across_and_none_makes_a_circle():
  floor = {_module(path): f for path, f in _rooms().items()}
  graph = {_module(path): imports(path, set(floor)) for path in _project_files()}
  upward = [f'{a} (floor {floor[a]}) imports {b} (floor {floor[b]})'
            for a, targets in graph.items() for b in sorted(targets) if floor[b] > floor[a]]
  assert not upward, '\n'.join(upward)

  def circle_from(start):  # depth-first search for a path back to `start`
    stack, seen = [(start, [start])], set()
    while stack:
      node, path = stack.pop()
      for nxt in graph[node]:
        if nxt == start:
          return path + [start]
        if nxt not in seen:
          seen.add(nxt)
          stack.append((nxt, path + [nxt]))
    return None

  circles = [' -> '.join(c) for c in map(circle_from, sorted(graph)) if c]
  assert not circles, '\n'.join(circles)


@pytest.mark.parametrize('source, target, expected', [
    ('from actionclip_jax.runs import builders, sharding', 'x/y.py', {'actionclip_jax.runs.builders',
                                                                      'actionclip_jax.runs.sharding'}),
    ('def f():\n  from actionclip_jax.runs.train import train', 'x/y.py', {'actionclip_jax.runs.train'}),
    ('from . import sharding', 'actionclip_jax/runs/evaluate.py', {'actionclip_jax.runs.sharding'}),
])
def test_imports_sees_module_and_function_level_and_relative_imports(source, target, expected, tmp_path):
  known = {'actionclip_jax.runs.builders', 'actionclip_jax.runs.sharding', 'actionclip_jax.runs.train',
           'actionclip_jax.runs.evaluate'}
  path = tmp_path / target
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(source)
  assert imports(target, known, root=str(tmp_path)) == expected
