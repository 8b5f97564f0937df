"""A compiled train step on disk: `--mode=compile --config.compile.save=PATH` writes it, a training run given
`--config.compile.load=PATH` runs it without compiling (maxtext's compiled_trainstep_file).

The file is a zip of `signature.json` (what the program was compiled for) and `executable.bin` (XLA's serialized
executable). Loading compares the signature with the run's own first and refuses any difference in one line that
names it: the jax version, the devices (platform, kind, count, slices), or a field of the config the step is built
from (model, optimizer, mesh, batch and clip shape, prompt table, schedule). Loading a compiled program runs code
from the file, as loading a pickle does: load only files you compiled yourself.
"""
from __future__ import annotations

import json
import zipfile

import jax
import jaxlib
from jax.experimental import serialize_executable

# The config sections and data fields the train step is built from; anything else (paths, eval, logging) is not in
# the program.
STEP_SECTIONS = ('network', 'solver', 'mesh')
STEP_DATA_FIELDS = ('batch_size', 'num_segments', 'seg_length', 'input_size')


class MismatchError(ValueError):
  """A compiled step that was compiled for something else than this run."""


def devices_of(devices) -> dict:
  """What a program is compiled for: the platform, the device kind, how many, and over how many slices."""
  return {'platform': devices[0].platform, 'device_kind': devices[0].device_kind, 'count': len(devices),
          'slices': len({getattr(d, 'slice_index', 0) for d in devices})}


def signature(config, devices, table_shape: tuple[int, ...], total_steps: int, warmup_steps: int) -> dict:
  """The step's signature: jax's version, the devices, and the config it is built from (`STEP_SECTIONS`,
  `STEP_DATA_FIELDS`, the trimmed prompt table's shape, the schedule)."""
  resolved = json.loads(config.to_json_best_effort())
  return {'jax': f'jax {jax.__version__}, jaxlib {jaxlib.__version__}', 'devices': devices_of(devices),
          'config': {**{s: resolved[s] for s in STEP_SECTIONS},
                     'data': {f: resolved['data'][f] for f in STEP_DATA_FIELDS},
                     'prompt_table': list(table_shape), 'schedule': [total_steps, warmup_steps]}}


def save(compiled, path: str, sig: dict) -> None:
  payload, _, _ = serialize_executable.serialize(compiled)
  with zipfile.ZipFile(path, 'w') as f:
    f.writestr('signature.json', json.dumps(sig, indent=2, sort_keys=True))
    f.writestr('executable.bin', payload)


def read_signature(path: str) -> dict:
  with zipfile.ZipFile(path) as f:
    return json.loads(f.read('signature.json'))


def load(path: str, sig: dict, args, out_shapes):
  """The compiled step saved at `path`, for the arguments `args` (abstract, as the step is called) returning
  `out_shapes`. Raises MismatchError naming the first difference between its signature and `sig`."""
  theirs = read_signature(path)
  difference = _first_difference(theirs, sig)
  if difference:
    raise MismatchError(f'compile.load={path} was compiled for another {difference}; compile it again for this '
                        'run (--mode=compile --config.compile.save=...)')
  with zipfile.ZipFile(path) as f:
    payload = f.read('executable.bin')
  in_tree = jax.tree_util.tree_structure((tuple(args), {}))
  return serialize_executable.deserialize_and_load(payload, in_tree, jax.tree_util.tree_structure(out_shapes))


def _first_difference(theirs: dict, ours: dict, where: str = '') -> str:
  """'<what>: <theirs> there, <ours> here' for the first field that differs, '' when none does."""
  for key in sorted(set(theirs) | set(ours)):
    a, b = theirs.get(key), ours.get(key)
    name = f'{where}.{key}' if where else key
    if isinstance(a, dict) and isinstance(b, dict):
      found = _first_difference(a, b, name)
      if found:
        return found
    elif a != b:
      what = {'jax': 'jax version', 'devices.count': 'topology (device count)',
              'devices.device_kind': 'topology (device kind)', 'devices.platform': 'topology (platform)',
              'devices.slices': 'topology (slices)'}.get(name, f'config: {name.removeprefix("config.")}')
      return f'{what}: {a} there, {b} here'
  return ''
