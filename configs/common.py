"""The fields every config has, with ActionCLIP's YAML names where the official config has the knob.

Each config file's `get_config(arg)` starts from `base()` and sets what its recipe changes. `arg` is a comma
list parsed by `parse_arg` (e.g. `configs/k400.py:arch=ViT-B/16,frames=16,wti,runlocal`).
"""
from __future__ import annotations

import ml_collections

KINETICS400_CLASSES = 400


def parse_arg(arg: str | None, **defaults):
  """`a=1,b,c=x` -> ConfigDict with `defaults` overridden; a bare name means True. Types follow the defaults."""
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, _, value = item.partition('=')
    if key not in defaults:
      raise ValueError(f'Unknown config argument {key!r}; known: {", ".join(sorted(defaults))}')
    default = defaults[key]
    if not _:
      value = True
    elif isinstance(default, bool):
      value = value.lower() in ('1', 'true', 'yes')
    elif default is not None:
      value = type(default)(value)
    out[key] = value
  return out


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 1024
  c.init_from = ''  # OpenAI/HF CLIP, official ActionCLIP, or one of our work dirs; '' = from scratch
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3  # the last N; the best by top-1 is kept besides
  c.log_every_steps = 10
  c.distributed = False  # jax.distributed.initialize() (TPU pods, SLURM/GPU clusters)

  c.data = ml_collections.ConfigDict()
  c.data.dataset = 'kinetics400'
  c.data.source = 'video'  # video | frames | packed
  c.data.root = ''  # prefix of the paths in the list files
  # `path num_frames label` lines (TSN/ActionCLIP) or a `path,label_name` CSV; for source=packed, the
  # directory `python -m data_pipelines.pack` wrote.
  c.data.train_list = ''
  c.data.val_list = ''
  c.data.label_list = ''  # `id,name` CSV with a header
  c.data.num_classes = 0  # rows of label_list; 0 = take whatever it has, > 0 = checked against it at start
  c.data.num_segments = 8
  c.data.seg_length = 1
  c.data.batch_size = 128  # global, over all processes
  c.data.input_size = 224
  c.data.short_side = 256  # decode/resize to this short side before cropping
  c.data.random_shift = True
  c.data.flip = True
  c.data.randaug = ml_collections.ConfigDict({'N': 2, 'M': 9})
  c.data.image_tmpl = 'img_{:05d}.jpg'
  c.data.index_bias = 1
  c.data.workers = 4  # grain worker processes per host
  c.data.fail_fast = False  # raise on a bad video instead of replacing and reporting it

  c.network = ml_collections.ConfigDict()
  c.network.arch = 'ViT-B/32'  # a CLIP preset (clip.PRESETS)
  c.network.sim_header = 'Transf'  # meanP | Conv_1D | LSTM | Transf | Transf_cls
  c.network.interaction = 'global'  # global | wti
  c.network.joint = False
  c.network.tsm = False
  c.network.drop_out = 0.0
  c.network.emb_dropout = 0.0
  c.network.fix_text = False  # freeze the text tower
  c.network.fix_img = False  # freeze the image tower
  c.network.dtype = 'bfloat16'  # compute dtype; params and optimizer state stay float32
  c.network.remat = False  # rematerialize each residual block
  c.network.templates = ml_collections.config_dict.placeholder(tuple)  # None = the 16 ActionCLIP templates

  c.solver = ml_collections.ConfigDict()
  c.solver.type = 'cosine'
  c.solver.epochs = 50
  c.solver.total_steps = 0  # > 0 overrides epochs
  c.solver.lr = 5e-6
  c.solver.lr_warmup_step = 5  # epochs (or steps, when total_steps is set)
  c.solver.weight_decay = 0.2
  c.solver.betas = (0.9, 0.98)
  c.solver.eps = 1e-8
  c.solver.ratio = 1.0  # visual tower lr multiplier
  c.solver.f_ratio = 10.0  # fusion/interaction head lr multiplier
  c.solver.clip_gradient = 20.0  # global norm; 0 = off
  c.solver.grad_accum_steps = 1

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # -1 fills the devices left
  c.mesh.fsdp = 1
  c.mesh.tensor = 1
  # Logical axis name -> mesh axes. Params shard over fsdp (and tensor for heads/mlp); batches over data + fsdp.
  c.mesh.rules = (
      ('batch', ('data', 'fsdp')), ('embed', 'fsdp'), ('mlp', 'tensor'), ('heads', 'tensor'), ('kv', None),
      ('vocab', 'tensor'), ('layers', None), ('norm', None), ('proj', None), ('pos', None), ('frames', None))

  c.eval = ml_collections.ConfigDict()
  c.eval.every_steps = 0  # 0 = at the end only
  c.eval.batch_size = 32  # global videos per eval batch
  c.eval.num_clips = 1
  c.eval.num_crops = 1
  c.eval.max_videos = 0  # > 0: only the first N (quick checks)
  c.eval.protocol = 'full'  # zero-shot: full (all classes) | half (eval.half_splits random half-class splits)
  c.eval.half_splits = 10
  c.eval.shots = 16  # few-shot K
  c.eval.fewshot_steps = 300
  c.eval.name = 'val'
  return c


DATASETS = {  # variant name -> (data.dataset, classes in its label list; 0 = not checked)
    'k400': ('kinetics400', KINETICS400_CLASSES),
    'k600': ('kinetics600', 0),
    'hmdb51': ('hmdb51', 51),
    'ucf101': ('ucf101', 101),
    'any': ('any', 0),
}


def video_model(c: ml_collections.ConfigDict, arg) -> None:
  """The paper's model: CLIP `arg.arch` on `arg.frames` frames of 224x224, the `Transf` prompt, and the global
  cosine or (`arg.wti`) the weighted token-wise interaction."""
  c.data.num_segments = arg.frames
  c.data.input_size = 224
  c.network.arch = arg.arch
  c.network.sim_header = 'Transf'
  c.network.interaction = 'wti' if arg.wti else 'global'


def dataset(c: ml_collections.ConfigDict, name: str) -> None:
  if name not in DATASETS:
    raise ValueError(f'dataset={name!r}: not one of {", ".join(DATASETS)}')
  c.data.dataset, c.data.num_classes = DATASETS[name]


def finetune(arg, name: str) -> ml_collections.ConfigDict:
  """Fine-tuning on a small dataset from a Kinetics-400 model (official `*_ft.yaml`): batch 32, no RandAugment,
  lr 5e-6 (head x 10), 5 warm-up epochs then cosine over 50."""
  c = base()
  dataset(c, name)
  video_model(c, arg)
  c.data.batch_size = 32
  c.data.randaug.N, c.data.randaug.M = 0, 0
  c.solver.epochs = 50
  c.solver.lr_warmup_step = 5
  c.eval.name = f'{name}_val'
  return finish(c, arg)


def evaluation(arg) -> ml_collections.ConfigDict:
  """An evaluation-only recipe (zero-shot, few-shot) of `arg.dataset`'s lists, 64 videos a batch."""
  c = base()
  dataset(c, arg.dataset)
  video_model(c, arg)
  c.data.randaug.N, c.data.randaug.M = 0, 0
  c.eval.batch_size = 64
  return c


def finish(c: ml_collections.ConfigDict, arg) -> ml_collections.ConfigDict:
  return runlocal(c) if arg.runlocal else c


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks any config to run a few steps on a laptop CPU (lists must still be given)."""
  c.network.arch = 'tiny'
  c.data.num_classes = 0  # any small label list
  c.network.dtype = 'float32'
  c.data.num_segments = min(c.data.num_segments, 4)
  c.data.batch_size = 4
  c.data.input_size = 32
  c.data.short_side = 40
  c.data.workers = 0
  c.data.randaug.N = 1
  c.solver.total_steps = 4
  c.solver.lr_warmup_step = 1
  c.checkpoint_every_steps = 2
  c.log_every_steps = 1
  c.eval.batch_size = 4
  c.eval.max_videos = 8
  c.eval.fewshot_steps = 20
  c.eval.half_splits = 2
  return c
