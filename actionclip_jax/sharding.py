"""Device mesh and shardings from the config: the model names its axes, the config maps them to the mesh.

Params are sharded by their logical axis names (`nn.with_logical_partitioning` in the model) through
`config.mesh.rules`; batches along ('data', 'fsdp'). Nothing here knows about the model.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from actionclip_jax import config_checks

AXES = config_checks.MESH_AXES
BATCH_AXES = config_checks.BATCH_AXES


def make_mesh(mesh_config, devices: Sequence[jax.Device] | None = None) -> Mesh:
  devices = list(devices if devices is not None else jax.devices())
  shape = config_checks.resolve_mesh_shape(mesh_config, len(devices))
  # Auto axes: linen's logical partitioning annotates shardings; Explicit axes would reject them.
  return jax.make_mesh(tuple(shape[a] for a in AXES), AXES, devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(AXES))


def rules(mesh_config) -> tuple[tuple[str, Any], ...]:
  return tuple((name, tuple(axes) if isinstance(axes, (list, tuple)) else axes) for name, axes in mesh_config.rules)


def _fits(spec: P, shape, mesh: Mesh) -> P:
  """Drops mesh axes from dimensions they do not divide (small heads, odd vocabularies): replicate those dims."""
  fitted = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    size = math.prod(mesh.shape[n] for n in names)
    fitted.append(axes if size and dim % size == 0 else None)
  return P(*fitted)


def param_shardings(boxed_shapes, mesh: Mesh, logical_rules) -> Any:
  """NamedShardings for an `nn.LogicallyPartitioned` tree of shapes (e.g. `jax.eval_shape` of a boxed init)."""
  specs = nn.get_partition_spec(boxed_shapes)
  mesh_specs = nn.logical_to_mesh(specs, logical_rules)
  shapes = nn.unbox(boxed_shapes)
  return jax.tree_util.tree_map(lambda spec, x: NamedSharding(mesh, _fits(spec, x.shape, mesh)),
                                mesh_specs, shapes, is_leaf=lambda x: isinstance(x, P))


def optimizer_shardings(opt_shapes, params_shardings, mesh: Mesh):
  """Optimizer-state shardings: a leaf whose key path ends with a param's path and has its shape (Adam's
  moments, in whatever wrapper states hold them) is sharded like that param; counts and scalars replicated."""
  by_path = {tuple(path): s for path, s in jax.tree_util.tree_leaves_with_path(params_shardings)}

  def sharding_of(path, leaf):
    for start in range(len(path)):
      found = by_path.get(tuple(path[start:]))
      if found is not None:
        return found
    return NamedSharding(mesh, P())

  return jax.tree_util.tree_map_with_path(sharding_of, opt_shapes)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())

