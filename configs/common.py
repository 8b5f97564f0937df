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
  # A process that stops answering (its host lost) is declared dead after this many seconds; every other process then
  # exits non-zero instead of waiting in a collective forever (jax.distributed's heartbeat; its default is 100).
  c.heartbeat_timeout_s = 100

  c.data = ml_collections.ConfigDict()
  c.data.dataset = 'kinetics400'
  c.data.source = 'video'  # video | frames | packed
  c.data.root = ''  # prefix of the paths in the list files
  # `path num_frames label` lines (TSN/ActionCLIP) or a `path,label_name` CSV; for source=packed, the
  # directory `python -m data_pipelines.pack` wrote.
  c.data.train_list = ''
  c.data.val_list = ''
  c.data.val_lists = ml_collections.config_dict.placeholder(tuple)  # zero-shot protocol=splits (and half): lists
  c.data.label_list = ''  # `id,name` CSV with a header, or a shipped list's name (k400, ucf101, hmdb51, ssv2, ...)
  c.data.num_classes = 0  # rows of label_list; 0 = take whatever it has, > 0 = checked against it at start
  c.data.num_segments = 8
  c.data.seg_length = 1
  c.data.batch_size = 128  # global, over all processes
  c.data.input_size = 224
  c.data.short_side = 256  # decode/resize to this short side before cropping
  # Training frames: a random frame in each segment (TSN's random shift). The official HMDB51/UCF101 configs have no
  # random_shift key, which their dotmap reads as false, so those train on segment-centre frames (as does, by its
  # printed config, the released K400 log): False is the official behaviour. True by default: it shows each video's
  # frames in more combinations, as every TSN-style recipe does.
  c.data.random_shift = True
  c.data.flip = True
  # The official training transform: a multi-scale crop (each side a random one of these fractions of the short
  # side), then, per clip, colour jitter with probability `color_jitter` and grayscale with `grayscale`. Where
  # colour names the class, jitter and grayscale change the label: turn them off (configs/demo.py).
  c.data.crop_scales = (1.0, 0.875, 0.75, 0.66)
  c.data.color_jitter = 0.8
  c.data.grayscale = 0.2
  c.data.randaug = ml_collections.ConfigDict({'N': 2, 'M': 9})
  # 'clip': colour jitter and RandAugment are drawn once per clip, RandAugment after the crop (every frame of a clip
  # gets the same transform, so the augmentation adds no fake motion; and it runs on the crop, cheaper).
  # 'official': the official order, RandAugment on each full-size frame independently before the crop, and colour
  # jitter with new factors per frame.
  c.data.augment_order = 'clip'
  c.data.image_tmpl = 'img_{:05d}.jpg'
  c.data.index_bias = 1
  c.data.workers = 4  # grain worker processes per host
  c.data.fail_fast = False  # raise on a bad video instead of replacing and reporting it
  # Keep the training videos' decoded frames in memory (source=video): for small datasets read many times, as the
  # demo's; each data process holds its own copy (sources.VideoFileSource).
  c.data.cache_decoded = False
  # Several labels a video (Charades): lists are read as multi-label (Charades' CSV, or `path num_frames l1,l2`),
  # batches carry multi-hot labels, and evaluation reports mAP (configs/charades.py).
  c.data.multilabel = False
  # Multi-label training clips: 'video' (segments over the whole video, all its labels) or 'interval' (segments
  # inside one annotated interval drawn per clip, labelled with the actions active in the clip).
  c.data.multilabel_sampling = 'video'

  c.network = ml_collections.ConfigDict()
  c.network.arch = 'ViT-B/32'  # a CLIP preset (clip.PRESETS)
  c.network.sim_header = 'Transf'  # meanP | Conv_1D | LSTM | Transf | Transf_cls
  # How Transf / Transf_cls start (heads.HEAD_INITS): 'official' (N(0, 0.02), xavier in_proj) or 'scaled' (CLIP's
  # width-scaled stds). 'scaled' by default: the two nearly agree at ViT-B's width, and at small widths the official
  # init starts Transf nearly order-blind and it learns order slowly. Measured with tests/test_learning.py's setup
  # (frozen random tiny CLIP, width 32, left vs right, 48 val videos, chance 50%): 200 AdamW steps at 5e-3 give
  # 89.6% val top-1 with 'scaled' and 52.1% with 'official'; 300 steps at 3e-3, 91.7% and 81.3%.
  c.network.head_init = 'scaled'
  c.network.interaction = 'global'  # global | wti
  # Weight of DRL's channel decorrelation regularizer in the training loss (interaction='wti' only); None = DRL's
  # default, 0.001 with WTI, 0 otherwise (train.cdcr_weight). Logged as `cdcr` (unweighted) beside `loss_kl`.
  c.network.cdcr_weight = ml_collections.config_dict.placeholder(float)
  c.network.joint = False
  c.network.tsm = False
  c.network.drop_out = 0.0
  c.network.emb_dropout = 0.0
  c.network.fix_text = False  # freeze the text tower
  c.network.fix_img = False  # freeze the image tower
  # Compute dtype; params and optimizer state stay float32. 'auto' = bfloat16 on GPU/TPU, float32 on CPU, where
  # XLA's bfloat16 dot is slower than its float32 dot (2-core Xeon with AMX, benchmarks/train_step.py, BENCHMARKS.md:
  # 2048^2 dot bf16 215 vs f32 250 GFLOP/s; ViT-B/32 8-frame train step B=4 7.3 s bf16 vs 6.0 s f32). An explicit
  # dtype wins; resolved in builders.compute_dtype.
  c.network.dtype = 'auto'
  # What each residual block keeps for the backward pass (clip.REMAT_POLICIES): 'none' (everything), 'full' (its
  # input: the forward runs again), 'dots' (its weight matmuls' outputs; the elementwise work runs again). 'auto' =
  # 'dots' on CPU, where re-running LayerNorms, softmax and activations costs less than storing and re-reading them:
  # ViT-B/32 8-frame B=4 float32 train step on a 2-core AMD EPYC, 'dots' 5.9-6.1 s and peak RSS 4.4-4.5 GiB (3
  # runs) against 'none' 6.1-6.9 s and 5.6-5.7 GiB (4 runs; benchmarks/train_step.py --remat, BENCHMARKS.md). 'none' on
  # GPU/TPU, not measured there yet. An explicit mode wins; resolved in builders.remat_mode.
  c.network.remat = 'auto'
  # Blocks per iteration of each CLIP tower's layer scan. Unrolling all of them (12 for ViT-B) ran the ViT-B/32
  # 8-frame B=4 float32 train step 12-19% faster on a 2-core Xeon (the scan's per-block param slices, stacked
  # activations and gradient buffers were ~18% of the step's op time, benchmarks/profile_step.py) but compiled in
  # 33-43 s instead of 15 (BENCHMARKS.md). 1 keeps compiles short; a long run pays its compile once.
  c.network.scan_unroll = 1
  # Std of the image tower's positional embedding when it starts from scratch; None = OpenAI's width ** -0.5.
  c.network.position_std = ml_collections.config_dict.placeholder(float)
  # exp(logit_scale) when CLIP starts from scratch; None = OpenAI's 1 / 0.07.
  c.network.logit_scale_init = ml_collections.config_dict.placeholder(float)
  c.network.templates = ml_collections.config_dict.placeholder(tuple)  # None = the 16 ActionCLIP templates
  # Conv_1D's reshape: 'transpose' ([b, t, c] -> [b, c, t], what the official code means), 'official' (its `view`,
  # which its checkpoints were trained with), 'auto' = official when init_from is an official ActionCLIP checkpoint.
  c.network.conv_reshape = 'auto'

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
  # Global-norm gradient clipping; 0 = off. The official YAMLs list clip_gradient: 20 but the official train.py
  # never reads it (official: 0). Kept at 20 here: a cheap guard against a bad batch blowing up fine-tuning.
  c.solver.clip_gradient = 20.0
  # 'float32': float32 master weights, fully updated and decayed. 'official_fp16': the official train.py keeps CLIP's
  # conv/linear/attention weights in fp16 and rounds them back after every AdamW step (no master copy), so at lr
  # 5e-6 most of them never move and their weight decay is lost (optim.store). float32 by default for that reason.
  c.solver.weight_storage = 'float32'
  c.solver.grad_accum_steps = 1
  # The training loss (train.texts_and_objective): 'kl' is ActionCLIP's, every same-label (multi-label: every
  # shared-label) video-text pair a positive; 'sigmoid' scores each video against every class's prompt with binary
  # cross-entropy (multi-label retrieval's usual loss), on exp(logit_scale) x cosine + sigmoid_bias. The bias is
  # fixed, not learned (the model has no parameter for it): logits start negative for cosines below
  # -sigmoid_bias / scale (0.1 at CLIP's trained scale of 100), so the many negative pairs do not dominate early.
  c.solver.loss = 'kl'
  c.solver.sigmoid_bias = -10.0

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
  # Frames reach the eval resize already scaled to data.short_side (bilinear, inside the decoder: a full-size K400
  # frame costs several times more to convert and resize). False = the official path: full-size frames, one
  # bicubic resize (packed data stays at the size it was packed at).
  c.eval.prescale = True
  # The official test drops the last partial batch (19,328 of K400's 19,357 videos); we score every video.
  # True drops the last len % eval.batch_size videos of the list, as the official test does with its batch size.
  c.eval.drop_last = False
  # Compute dtype of --mode=eval/zero_shot/few_shot: float32 gives the PyTorch numbers of an official checkpoint
  # (parity is tested in float32); '' = network.dtype (bfloat16 is faster on accelerators, and may flip near-tied
  # predictions). Evaluation during training uses network.dtype.
  c.eval.dtype = 'float32'
  # Zero-shot: full (all classes) | half (eval.half_splits random half-class splits over every listed video) |
  # splits (each of data.val_lists, e.g. the 3 official HMDB51/UCF101 test splits) | k600 (eval.subsets random
  # subsets of eval.subset_classes classes among those not named in eval.known_label_list, or eval.k600_splits).
  c.eval.protocol = 'full'
  c.eval.half_splits = 10
  c.eval.subsets = 3
  c.eval.subset_classes = 160
  c.eval.known_label_list = ''  # k600: the Kinetics-400 label CSV (or `k400`); its classes are left out ('' = none)
  # k600: '' = random subsets as above; `literature` = the zero-shot papers' three 160-class splits (shipped:
  # k600_zs1..3); or a comma list of label lists (names or CSVs), each a subset, its classes found by name.
  c.eval.k600_splits = ''
  c.eval.shots = 16  # few-shot K
  # Few-shot as Lin et al. 2023 run it: logit scale 100, AdamW, linear warm-up then cosine over fewshot_steps
  # iterations; lr x weight decay grid searched on a validation split carved from the K shots (early stopping on
  # it), then refit on all K shots; repeated for each of fewshot_seeds (each its own K-shot draw).
  c.eval.fewshot_steps = 12800
  c.eval.fewshot_warmup = 50
  c.eval.fewshot_batch_size = 32  # video features per step, plus as many prompt texts
  c.eval.fewshot_lrs = (1e-3, 1e-4)
  c.eval.fewshot_wds = (1e-4, 1e-2)
  c.eval.fewshot_eval_every = 100  # early stopping: validation accuracy every this many iterations
  c.eval.fewshot_seeds = (1, 2, 3)
  c.eval.name = 'val'

  # --mode=compile (actionclip_jax/runs/aot.py): the train step compiled ahead of time, sized, not run.
  c.compile = ml_collections.ConfigDict()
  c.compile.topology = ''  # a TPU topology ('v5e:16x16', 'v5p:4x4x4', 'v4:4x4x4'; needs libtpu), '' = this host
  c.compile.num_slices = 1  # TPU slices joined over the data-center network; the data axis spans them
  c.compile.num_classes = 0  # without data.label_list: this many classes named 'class <i>' in the prompt table
  c.compile.save = ''  # write the compiled step there (--mode=compile) ...
  c.compile.load = ''  # ... and train with it without compiling (the same topology, config and jax version)
  return c


DATASETS = {  # variant name -> (data.dataset, classes in its label list; 0 = not checked)
    'k400': ('kinetics400', KINETICS400_CLASSES),
    'k600': ('kinetics600', 0),
    'hmdb51': ('hmdb51', 51),
    'ucf101': ('ucf101', 101),
    'charades': ('charades', 157),
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
  """Fine-tuning on a small dataset (official `*_ft.yaml`, `ucf_train.yaml`): batch 32, no RandAugment, lr 5e-6
  (head x 10), 5 warm-up epochs then cosine over 50."""
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


def official(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Every switch to the official code's behaviour (docs/fidelity.md, "Differences from the official code"), on any
  config.

  Training: segment-centre frames, RandAugment per full-size frame before the crop and colour jitter per frame,
  no gradient clipping (the official train.py never reads clip_gradient), CLIP's conv/linear/attention weights
  stored in fp16 between steps, the official head init and Conv_1D reshape. Evaluation: full-size frames into one
  bicubic resize, the last partial batch dropped, float32.
  """
  c.data.random_shift = False
  c.data.augment_order = 'official'
  c.solver.clip_gradient = 0.0
  c.solver.weight_storage = 'official_fp16'
  c.network.head_init = 'official'
  c.network.conv_reshape = 'official'
  c.eval.prescale = False
  c.eval.drop_last = True
  c.eval.dtype = 'float32'
  # -- eval-side / head-init official switches added by others go above this line --
  return c


def finish(c: ml_collections.ConfigDict, arg) -> ml_collections.ConfigDict:
  """`arg.official` (where the config has it) turns on every official switch; `arg.runlocal` shrinks the run."""
  if arg.get('official', False):
    official(c)
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
  c.eval.fewshot_warmup = 2
  c.eval.fewshot_eval_every = 5
  c.eval.fewshot_lrs = (1e-3,)
  c.eval.fewshot_wds = (1e-4,)
  c.eval.fewshot_seeds = (1, 2)
  c.eval.subset_classes = 2
  c.eval.subsets = 2
  c.eval.half_splits = 2
  return c
