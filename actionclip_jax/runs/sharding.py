"""Device mesh and shardings from the config: the model names its axes, the config maps them to the mesh.

Params are sharded by their logical axis names (`nn.with_logical_partitioning` in the model) through
`config.mesh.rules`; batches along ('data', 'fsdp'). Nothing here knows about the model.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ('data', 'fsdp', 'tensor')  # the mesh's axis order; the batch is split over data x fsdp
BATCH_AXES = ('data', 'fsdp')


def resolve_mesh_shape(mesh_cfg, num_devices: int) -> dict[str, int]:
  """{'data': d, 'fsdp': f, 'tensor': t} from `config.mesh`, -1 (at most one) filling the devices left.

  Raises ValueError naming the mesh fields when the sizes cannot multiply to `num_devices`.
  """
  sizes = {axis: mesh_cfg.get(axis, 1) for axis in AXES}
  described = ', '.join(f'mesh.{axis}={size}' for axis, size in sizes.items())
  bad = [f'mesh.{axis}={size!r}' for axis, size in sizes.items()
         if isinstance(size, bool) or not isinstance(size, int) or (size < 1 and size != -1)]
  if bad:
    raise ValueError(f'{", ".join(bad)}: mesh axis sizes must be positive integers or -1 (fill the rest)')
  fill = [axis for axis, size in sizes.items() if size == -1]
  if len(fill) > 1:
    raise ValueError(f'{", ".join("mesh." + a for a in fill)} are all -1: at most one mesh axis can fill the rest')
  fixed = math.prod(size for size in sizes.values() if size != -1)
  if fill:
    if num_devices % fixed:
      raise ValueError(f'{described}: the fixed axes ({fixed} devices) do not divide the {num_devices} devices')
    sizes[fill[0]] = num_devices // fixed
  elif fixed != num_devices:
    raise ValueError(f'{described}: the mesh has {fixed} devices but there are {num_devices}')
  return sizes


def data_parallel_size(mesh_shape: dict[str, int]) -> int:
  """How many ways a global batch is split: the product of the batch axes."""
  return math.prod(mesh_shape[axis] for axis in BATCH_AXES)


def make_mesh(mesh_config, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The mesh of `config.mesh` over `devices` (default: all), laid out on the chips' interconnect. Over several TPU
  slices the data axis spans them: each slice holds data / slices of it, and only the data-parallel gradient
  reduction crosses the data-center network between slices."""
  devices = list(devices if devices is not None else jax.devices())
  shape = resolve_mesh_shape(mesh_config, len(devices))
  # Auto axes: linen's logical partitioning annotates shardings; Explicit axes would reject them.
  auto = (jax.sharding.AxisType.Auto,) * len(AXES)
  slices = len({getattr(d, 'slice_index', 0) for d in devices})
  if slices == 1:
    return jax.make_mesh(tuple(shape[a] for a in AXES), AXES, devices=devices, axis_types=auto)
  if shape['data'] % slices:
    raise ValueError(f'mesh.data={shape["data"]} is not divisible by the {slices} slices it must span')
  within = (shape['data'] // slices, shape['fsdp'], shape['tensor'])
  return Mesh(mesh_utils.create_hybrid_device_mesh(within, (slices, 1, 1), devices), AXES, axis_types=auto)


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

