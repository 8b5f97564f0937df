"""Start-up checks of a resolved config: every impossible combination, in one message, before anything compiles.

`launch.py` calls `check(config, mode, jax.device_count(), jax.process_count())` right after writing the resolved
config to the work dir. Unknown fields and wrong types never get this far: `config_flags` refuses them on a locked
ConfigDict. What is left are values that are each well typed but cannot work together (a batch the mesh cannot
split, more frames than the positional table has rows, a list file that is not there, a list line whose label the
label CSV lacks, an `init_from` file that is no checkpoint or would run code to load).

The mesh check resolves `config.mesh` with `sharding.resolve_mesh_shape`, the function the runs build their mesh
with, so the check and the run agree.
"""
from __future__ import annotations

import os

from actionclip_jax import labels as label_lists
from actionclip_jax.model import clip, heads, video
from actionclip_jax.weights import pretrained
from actionclip_jax.runs import optim, sharding
from data_pipelines import annotations, sources

MODES = ('train', 'pretrain', 'eval', 'zero_shot', 'few_shot', 'compile')
SOURCES = ('video', 'frames', 'packed')
DTYPES = ('float32', 'bfloat16', 'float16')
PROTOCOLS = ('full', 'half', 'splits', 'k600')
LOSSES = ('kl', 'sigmoid')  # solver.loss (train.texts_and_objective)
CONV_RESHAPES = ('auto', 'official', 'transpose')


def check(config, mode: str, num_devices: int, process_count: int = 1) -> None:
  """Raises one ValueError listing every problem of `config` for `mode` on this many devices and processes."""
  problems = []
  add = problems.append
  c = config

  if mode not in MODES:
    add(f'mode={mode!r} is not one of {", ".join(MODES)}')
  training = mode in ('train', 'pretrain', 'compile')  # compile: the train step, compiled and not run

  # Devices, mesh and batch sizes.
  if num_devices < 1 or process_count < 1 or num_devices % process_count:
    add(f'{num_devices} devices cannot be shared equally by {process_count} processes')
  dp = None
  try:
    mesh_shape = sharding.resolve_mesh_shape(c.mesh, num_devices)
    dp = sharding.data_parallel_size(mesh_shape)
  except ValueError as e:
    add(str(e))
  _check_rules(c.mesh.get('rules', ()), add)

  batch_fields = (['data.batch_size'] if training else []) + (['eval.batch_size'] if mode != 'compile' else [])
  for name in batch_fields:
    size = _get(c, name)
    if not _positive_int(size):
      add(f'{name}={size!r} must be a positive integer (the global batch)')
      continue
    if dp is not None and size % dp:
      add(f'{name}={size} is not divisible by the data-parallel size {dp} (mesh data x fsdp = '
          f'{mesh_shape["data"]} x {mesh_shape["fsdp"]} on {num_devices} devices)')
    if process_count > 1 and size % process_count:
      add(f'{name}={size} is not divisible by the {process_count} processes (each loads an equal share)')

  accum = c.solver.grad_accum_steps
  if training:
    if not _positive_int(accum):
      add(f'solver.grad_accum_steps={accum!r} must be a positive integer')
    elif dp is not None and _positive_int(c.data.batch_size) and c.data.batch_size % dp == 0:
      per_device = c.data.batch_size // dp
      if per_device % accum:
        add(f'solver.grad_accum_steps={accum} does not divide the per-device batch {per_device} '
            f'(data.batch_size={c.data.batch_size} over {dp} data-parallel devices)')

  # Model.
  arch = c.network.arch
  if arch not in clip.PRESETS:
    add(f'network.arch={arch!r} is not one of {", ".join(clip.PRESETS)}')
  if c.network.sim_header not in heads.SIM_HEADERS:
    add(f'network.sim_header={c.network.sim_header!r} is not one of {", ".join(heads.SIM_HEADERS)}')
  if c.network.interaction not in video.INTERACTIONS:
    add(f'network.interaction={c.network.interaction!r} is not one of {", ".join(video.INTERACTIONS)}')
  if c.network.dtype not in (*DTYPES, 'auto'):
    add(f'network.dtype={c.network.dtype!r} is not one of auto, {", ".join(DTYPES)}')
  if c.network.remat not in ('auto', 'none', *clip.REMAT_POLICIES):
    add(f'network.remat={c.network.remat!r} is not one of auto, none, {", ".join(clip.REMAT_POLICIES)}')
  if c.eval.get('dtype', '') and c.eval.dtype not in DTYPES:
    add(f'eval.dtype={c.eval.dtype!r} is not one of {", ".join(DTYPES)} (or empty: network.dtype)')
  if c.network.get('head_init', 'official') not in heads.HEAD_INITS:
    add(f'network.head_init={c.network.head_init!r} is not one of {", ".join(heads.HEAD_INITS)}')
  if c.network.get('conv_reshape', 'auto') not in CONV_RESHAPES:
    add(f'network.conv_reshape={c.network.conv_reshape!r} is not one of {", ".join(CONV_RESHAPES)}')
  unroll = c.network.get('scan_unroll', 1)
  if not isinstance(unroll, int) or isinstance(unroll, bool) or unroll < 1:
    add(f'network.scan_unroll={unroll!r} must be an integer >= 1 (blocks per iteration of the layer scan)')
  position_std = c.network.get('position_std')
  if position_std is not None and not position_std > 0:
    add(f'network.position_std={position_std} must be > 0 (None: OpenAI\'s width ** -0.5)')
  logit_scale_init = c.network.get('logit_scale_init')
  if logit_scale_init is not None and not logit_scale_init > 0:
    add(f'network.logit_scale_init={logit_scale_init} must be > 0 (None: OpenAI\'s 1 / 0.07)')
  cdcr = c.network.get('cdcr_weight')
  if cdcr is not None and (cdcr < 0 or (cdcr > 0 and c.network.interaction != 'wti')):
    add(f'network.cdcr_weight={cdcr} must be >= 0, and 0 unless network.interaction=wti (None: 0.001 with wti)')
  if c.solver.get('weight_storage', 'float32') not in optim.WEIGHT_STORAGES:
    add(f'solver.weight_storage={c.solver.weight_storage!r} is not one of {", ".join(optim.WEIGHT_STORAGES)}')
  sampling = c.data.get('multilabel_sampling', 'video')
  if sampling not in ('video', 'interval'):
    add(f'data.multilabel_sampling={sampling!r} is not one of video, interval')
  elif sampling == 'interval' and not c.data.get('multilabel', False):
    add('data.multilabel_sampling=interval samples inside annotated intervals of multi-label videos: it needs '
        'data.multilabel=True')
  if c.data.get('multilabel', False) and mode in ('few_shot', 'zero_shot'):
    add(f'mode={mode} classifies single-label videos; data.multilabel=True runs train and eval (mAP)')
  if c.data.get('augment_order', 'clip') not in ('clip', 'official'):
    add(f'data.augment_order={c.data.augment_order!r} is not one of clip, official')
  for name in ('color_jitter', 'grayscale'):
    p = c.data.get(name, 0.0)
    if not 0.0 <= p <= 1.0:
      add(f'data.{name}={p} must be a probability in [0, 1]')
  scales = tuple(c.data.get('crop_scales', (1.0,)))
  if not scales or not all(0.0 < s <= 1.0 for s in scales):
    add(f'data.crop_scales={scales} must be fractions of the short side in (0, 1]')
  for name in ('network.drop_out', 'network.emb_dropout'):
    rate = _get(c, name)
    if not 0.0 <= rate < 1.0:
      add(f'{name}={rate} must be in [0, 1)')

  segments, seg_length = c.data.num_segments, c.data.seg_length
  if not _positive_int(segments) or not _positive_int(seg_length):
    add(f'data.num_segments={segments!r} and data.seg_length={seg_length!r} must be positive integers')
  elif c.network.sim_header == 'Transf' and segments * seg_length > heads.FRAME_POSITIONS:
    add(f'data.num_segments={segments} x data.seg_length={seg_length} = {segments * seg_length} frames, but '
        f'network.sim_header=Transf has {heads.FRAME_POSITIONS} frame positions')
  if arch in clip.PRESETS and c.data.input_size % clip.PRESETS[arch].vision_patch_size:
    add(f'data.input_size={c.data.input_size} is not a multiple of the {arch} patch size '
        f'{clip.PRESETS[arch].vision_patch_size}')
  if c.data.short_side and c.data.short_side < c.data.input_size:
    add(f'data.short_side={c.data.short_side} is below data.input_size={c.data.input_size}: crops would not fit')

  # Data files: list files, or for source=packed the directories `python -m data_pipelines.pack` wrote.
  source = c.data.source
  if source not in SOURCES:
    add(f'data.source={source!r} is not one of {", ".join(SOURCES)}')
  names = None
  compile_classes = c.get('compile', {}).get('num_classes', 0)
  label_list_needed = mode != 'pretrain' and not (mode == 'compile' and compile_classes > 0)
  if _check_file('data.label_list', c.data.label_list, required=label_list_needed, mode=mode, add=add, shipped=True):
    names = _check_labels(c, add)
  needed = {'data.train_list'} if mode in ('train', 'pretrain', 'few_shot') else set()
  val_lists = tuple(c.data.get('val_lists') or ())
  if not (mode == 'zero_shot' and val_lists):
    needed |= {'data.val_list'} if mode in ('eval', 'zero_shot', 'few_shot') else set()
  for name, path in [('data.train_list', c.data.train_list), ('data.val_list', c.data.val_list),
                     *((f'data.val_lists[{i}]', p) for i, p in enumerate(val_lists))]:
    if source == 'packed':
      _check_packed(name, path, required=name in needed, mode=mode, add=add)
    elif (_check_file(name, path, required=name in needed, mode=mode, add=add) and names is not None
          and not (mode == 'pretrain' and name == 'data.train_list')):  # image captions there: _check_pretrain
      _check_video_list(name, path, names, c.data.root, add, c.data.get('multilabel', False))
  if mode == 'pretrain':
    _check_pretrain(c, add)
  init_from = c.init_from
  if init_from and '://' not in init_from and not os.path.exists(init_from):
    add(f'init_from={init_from!r} does not exist')
  elif os.path.isfile(init_from):
    try:
      pretrained.check_readable(init_from)  # reads no weights: a wrong or unsafe file fails here, not after compiling
    except (pretrained.CheckpointError, ImportError) as err:
      add(f'init_from: {err}')

  # Schedule (training only).
  if training:
    s = c.solver
    if not s.lr > 0:
      add(f'solver.lr={s.lr} must be positive')
    if s.total_steps < 0:
      add(f'solver.total_steps={s.total_steps} must be >= 0 (0 = use solver.epochs)')
    elif s.total_steps == 0 and not s.epochs > 0:
      add(f'solver.epochs={s.epochs} must be positive (or set solver.total_steps)')
    length, unit = (s.total_steps, 'solver.total_steps') if s.total_steps > 0 else (s.epochs, 'solver.epochs')
    if s.lr_warmup_step < 0:
      add(f'solver.lr_warmup_step={s.lr_warmup_step} must be >= 0')
    elif length > 0 and s.lr_warmup_step >= length:
      add(f'solver.lr_warmup_step={s.lr_warmup_step} leaves no cosine phase: it must be below {unit}={length}')
    if s.weight_decay < 0 or s.clip_gradient < 0:
      add(f'solver.weight_decay={s.weight_decay} and solver.clip_gradient={s.clip_gradient} must be >= 0')
    if not s.ratio >= 0 or not s.f_ratio >= 0:
      add(f'solver.ratio={s.ratio} and solver.f_ratio={s.f_ratio} must be >= 0')
    if len(s.betas) != 2 or not all(0 <= b < 1 for b in s.betas) or not s.eps > 0:
      add(f'solver.betas={tuple(s.betas)} must be two values in [0, 1) and solver.eps={s.eps} positive')
    loss = s.get('loss', 'kl')
    if loss not in LOSSES:
      add(f'solver.loss={loss!r} is not one of {", ".join(LOSSES)}')
    elif loss == 'sigmoid' and s.grad_accum_steps > 1:
      add(f'solver.loss=sigmoid scores every class prompt in each step; solver.grad_accum_steps={s.grad_accum_steps} '
          'chunks the batch\'s own texts (the KL loss\'s): use 1')
    elif loss == 'sigmoid' and c.network.get('cdcr_weight'):
      add(f'network.cdcr_weight={c.network.cdcr_weight} pairs video i with its text i, which the sigmoid loss does '
          'not sample: leave it unset (0) with solver.loss=sigmoid')
    if c.log_every_steps < 1 or c.checkpoint_every_steps < 1 or c.keep_checkpoints < 1:
      add(f'log_every_steps={c.log_every_steps}, checkpoint_every_steps={c.checkpoint_every_steps} and '
          f'keep_checkpoints={c.keep_checkpoints} must be >= 1')

  # Compiling ahead of time (--mode=compile) and running what was compiled (compile.load).
  if 'compile' in c:
    k = c.compile
    if not _positive_int(k.num_slices) or (k.num_slices > 1 and not k.topology):
      add(f'compile.num_slices={k.num_slices!r} must be a positive integer, and 1 without compile.topology')
    if mode == 'compile' and not c.data.label_list and not compile_classes > 0:
      add('mode=compile needs data.label_list or compile.num_classes > 0 (the prompt table the step encodes)')
    if k.load and mode != 'train':
      add(f'compile.load is for mode=train (the compiled train step), not mode={mode}')
    elif k.load and not os.path.isfile(k.load):
      add(f'compile.load={k.load!r} does not exist')
    if (k.save or k.topology) and mode != 'compile':
      add(f'compile.save and compile.topology are for mode=compile, not mode={mode}')

  # Evaluation.
  e = c.eval
  if e.num_clips < 1 or e.num_crops < 1:
    add(f'eval.num_clips={e.num_clips} and eval.num_crops={e.num_crops} must be >= 1')
  if e.max_videos < 0 or e.every_steps < 0:
    add(f'eval.max_videos={e.max_videos} and eval.every_steps={e.every_steps} must be >= 0')
  if e.protocol not in PROTOCOLS:
    add(f'eval.protocol={e.protocol!r} is not one of {", ".join(PROTOCOLS)}')
  elif mode == 'zero_shot' and e.protocol == 'half' and e.half_splits < 1:
    add(f'eval.half_splits={e.half_splits} must be >= 1 for eval.protocol=half')
  elif mode == 'zero_shot' and e.protocol == 'splits' and not val_lists:
    add('eval.protocol=splits needs data.val_lists (e.g. the 3 official test-split lists)')
  elif mode == 'zero_shot' and e.protocol == 'k600':
    known = _check_file('eval.known_label_list', e.known_label_list, required=False, mode=mode, add=add, shipped=True)
    if e.k600_splits:
      _check_k600_splits(e, names, known, add)
    elif e.subsets < 1 or e.subset_classes < 2:
      add(f'eval.subsets={e.subsets} must be >= 1 and eval.subset_classes={e.subset_classes} >= 2')
  if mode == 'zero_shot' and e.k600_splits and e.protocol != 'k600':
    add(f'eval.k600_splits={e.k600_splits!r} is for eval.protocol=k600, not {e.protocol}')
  if mode == 'few_shot' and (e.shots < 1 or e.fewshot_steps < 1 or not e.fewshot_seeds or not e.fewshot_lrs
                             or not e.fewshot_wds or e.fewshot_batch_size < 1 or e.fewshot_eval_every < 1):
    add(f'eval.shots={e.shots}, eval.fewshot_steps={e.fewshot_steps}, eval.fewshot_batch_size='
        f'{e.fewshot_batch_size} and eval.fewshot_eval_every={e.fewshot_eval_every} must be >= 1, and '
        f'eval.fewshot_seeds, eval.fewshot_lrs, eval.fewshot_wds non-empty, for mode=few_shot')

  if problems:
    raise ValueError(f'Invalid config for mode={mode} on {num_devices} devices / {process_count} processes '
                     f'({len(problems)} problem{"s" if len(problems) > 1 else ""}):\n' +
                     '\n'.join(f'  - {p}' for p in problems))


def _get(config, dotted: str):
  for key in dotted.split('.'):
    config = config[key]
  return config


def _positive_int(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool) and x > 0


def _check_pretrain(c, add):
  """mode=pretrain reads image-caption pairs (no labels, no videos) into a per-frame CLIP."""
  if c.data.train_list and os.path.isfile(c.data.train_list):
    try:
      annotations.read_captions(c.data.train_list)
    except (annotations.AnnotationError, OSError, UnicodeDecodeError) as err:
      add(f'data.train_list (the image-caption CSV of mode=pretrain): {err}')
  if c.network.joint or c.network.tsm:
    add(f'network.joint={c.network.joint} and network.tsm={c.network.tsm}: mode=pretrain trains on single images, '
        'which have no frames to join or shift')
  if c.solver.grad_accum_steps != 1:
    add(f'solver.grad_accum_steps={c.solver.grad_accum_steps}: mode=pretrain computes the whole batch at once (1)')


def _check_file(name, path, *, required, mode, add, shipped=False) -> bool:
  """True when `path` is a file to read (or, with `shipped`, a shipped label list's name); adds a problem when it
  is required and missing, or given and absent."""
  if not path:
    if required:
      add(f'{name} is required for mode={mode} (--config.{name}=PATH)')
    return False
  if shipped and path in label_lists.SHIPPED:
    return True
  if not os.path.isfile(path):
    add(f'{name}={path!r} does not exist' +
        (f', nor is it a shipped label list ({", ".join(label_lists.SHIPPED)})' if shipped else ''))
    return False
  return True


def _check_packed(name, path, *, required, mode, add):
  if not path:
    if required:
      add(f'{name} is required for mode={mode} (for data.source=packed: the directory data_pipelines.pack wrote)')
  elif not os.path.isfile(os.path.join(path, sources.PACKED_RECORDS)):
    add(f'{name}={path!r} is not a packed dataset (no {sources.PACKED_RECORDS} in it; data.source=packed)')


def _check_labels(c, add) -> list[str] | None:
  """The class names, or None when the label CSV cannot be read (a problem is added)."""
  try:
    names = label_lists.read(c.data.label_list)
  except (annotations.AnnotationError, OSError) as err:
    add(f'data.label_list: {err}')
    return None
  if c.data.num_classes and len(names) != c.data.num_classes:
    add(f'data.label_list={c.data.label_list!r} has {len(names)} classes but data.num_classes={c.data.num_classes} '
        f'({c.data.dataset}); set --config.data.num_classes=0 to accept any count')
  if len(names) < 2:
    add(f'data.label_list={c.data.label_list!r} has {len(names)} classes: video-text matching needs at least 2')
  return names


def _check_k600_splits(e, names, known_ok, add):
  """eval.k600_splits: every class of each split is a class of data.label_list (names; None when that list is
  unreadable, a problem already), and none is named in eval.known_label_list (the splits are of novel classes)."""
  if names is None:
    return
  try:
    subsets = label_lists.split_subsets(names, e.k600_splits)
  except (ValueError, OSError) as err:  # an AnnotationError is a ValueError
    add(f'eval.k600_splits: {err}')
    return
  if not subsets:
    add(f'eval.k600_splits={e.k600_splits!r} names no label list (literature, or a comma list of names or CSVs)')
  if not known_ok:
    return
  try:
    known = {label_lists.canonical(n) for n in label_lists.read(e.known_label_list)}
  except (annotations.AnnotationError, OSError) as err:
    add(f'eval.known_label_list: {err}')
    return
  seen = sorted({names[i] for s in subsets for i in s if label_lists.canonical(names[i]) in known})
  if seen:
    add(f'eval.k600_splits: {len(seen)} of the splits\' classes are in eval.known_label_list, so not novel, e.g. '
        f'{", ".join(repr(n) for n in seen[:5])}')


def _check_video_list(name, path, names, root, add, multilabel=False):
  """Every line of a video list, against the label CSV: a bad line stops the run now, with its file:line. (A
  multi-label set's bad rows are left out and reported when the run reads it; only a list left empty stops it.)"""
  try:
    records = annotations.read_video_list(path, names, root=root or None, multilabel=multilabel)
  except (annotations.AnnotationError, OSError) as err:
    add(f'{name}: {err}')
    return
  if multilabel:
    records, problems = records
    if problems and not records:
      add(f'{name}={path!r}: every row is bad, e.g. {problems[0]}')
      return
  if not records:
    add(f'{name}={path!r} lists no videos')


def _check_rules(rules, add):
  for rule in rules:
    if len(rule) != 2 or not isinstance(rule[0], str):
      add(f'mesh.rules entry {rule!r} must be (logical_name, mesh_axes)')
      continue
    axes = rule[1] if isinstance(rule[1], (tuple, list)) else (rule[1],)
    unknown = [a for a in axes if a is not None and a not in sharding.AXES]
    if unknown:
      add(f'mesh.rules maps {rule[0]!r} to unknown mesh axes {unknown}; the axes are {", ".join(sharding.AXES)}')
