r"""The demo (`make demo`): a tiny ActionCLIP built from scratch on the synthetic world, offline, on a CPU in minutes.

`python -m actionclip_jax.demo --workdir=workdirs/demo` runs every stage through `launch.py` with these variants and
the world's files (`data_pipelines.synthetic.make_world`):

- `pretrain` (`--mode=pretrain`): a tiny CLIP learns image-caption matching on single rendered frames whose
  captions name shape, colour, size, orientation and position; its text tower stays frozen at its random init,
  here and in the fine-tunes (`model` says why);
- `transf`, `meanp`, `transf_wti`: prompt + fine-tune from that CLIP with ActionCLIP's KL loss, with the `Transf`
  or `meanP` visual prompt, and `Transf` with the weighted token-wise interaction; the same variant with
  `--mode=eval|zero_shot|few_shot` evaluates the run;
- `multilabel` (`make demo-multilabel`, `python -m actionclip_jax.demo --multilabel`): `transf` on the multi-label
  world (`synthetic.make_multilabel_world`: two objects a video, each with its own verb, both classes its labels),
  with the KL loss's multi-label positives, evaluated by mAP;
- `quick` (with any of them): a seconds-long version, for the test suite.

    python launch.py --config=configs/demo.py:pretrain --mode=pretrain --workdir=workdirs/demo/pretrain \
        --config.data.root=workdirs/demo/data/pretrain --config.data.train_list=workdirs/demo/data/pretrain/captions.csv
    python launch.py --config=configs/demo.py:transf --workdir=workdirs/demo/transf \
        --config.init_from=workdirs/demo/pretrain --config.data.root=workdirs/demo/data \
        --config.data.train_list=workdirs/demo/data/train.txt --config.data.val_list=workdirs/demo/data/val.txt \
        --config.data.label_list=workdirs/demo/data/labels.csv

Pre-training and fine-tuning share the model section (`model`), so the fine-tunes' CLIP is the pretrained one,
shape for shape.
"""
from configs import common

STAGES = ('pretrain', 'transf', 'meanp', 'transf_wti', 'multilabel')
RUNS = {'transf': ('Transf', 'global'), 'meanp': ('meanP', 'global'), 'transf_wti': ('Transf', 'wti')}


def get_config(arg=None):
  arg = common.parse_arg(arg, **{stage: False for stage in STAGES}, quick=False)
  chosen = [stage for stage in STAGES if arg[stage]]
  if len(chosen) != 1:
    raise ValueError(f'configs/demo.py needs exactly one stage of {", ".join(STAGES)} (plus `quick`), got {chosen}')
  c = common.base()
  c.data.dataset = 'demo'
  model(c)
  if chosen[0] == 'pretrain':
    pretrain(c)
  elif chosen[0] == 'multilabel':
    multilabel(c)
  else:
    finetune(c, *RUNS[chosen[0]])
  return quick(c) if arg.quick else c


def model(c) -> None:
  """The tiny CLIP on 8 frames of 32 x 32, in float32 (bfloat16 buys nothing on a CPU), with a frozen text tower.

  The text tower stays as it was drawn, in pre-training and fine-tuning. Caption pre-training never shows a verb,
  and a text tower trained on the captions learns to ignore the words it cannot see: it maps the class names of
  one object to nearly one point (mean cosine 0.91 between the same object's verbs, 0.999 between `moving up` and
  `moving down`), so the KL loss has no target that tells a verb from its partner, and the fine-tune stays at the
  object (17% val top-1 of 32 classes). A random text tower keeps every word apart, and its names of the same
  object still share a direction, which carries zero-shot to the held-out combinations.

  The image tower's positional embedding starts at std 1 instead of OpenAI's width ** -1/2 (0.125 here): from
  scratch, a small table leaves the frame features nearly blind to where the object is (ridge R^2 of its x from
  a frame's feature 0.05 after pre-training, 0.38 with std 1; the slope of the probed x, y over a clip's 8 frames
  tells the direction of 90% of clips).

  The temperature starts, and with the text tower frozen stays, at 100, where CLIP's learned one ends, instead of
  its starting 1 / 0.07: the names of one object's verbs are close in a random text tower (cosine 0.77 between
  `moving up` and `moving down`, 0.97 between `growing` and `shrinking`), and at 14.3 the KL loss barely tells
  them apart (`transf`, 800 steps, no colour jitter, 128 val videos: 60.2% top-1 at 14.3, 82.8% with the
  fine-tune's logits x 7).
  """
  c.network.arch = 'tiny'
  c.network.dtype = 'float32'
  c.network.fix_text = True
  c.network.position_std = 1.0
  c.network.logit_scale_init = 100.0
  c.data.input_size = 32
  c.data.short_side = 32
  c.data.num_segments = 8
  c.data.workers = 0
  # Decoded training videos and pictures stay in memory (350 MB): decoding was 60% of a fine-tune's clip reading, and
  # the fine-tunes wait on their data (0.13 s of a 0.21 s step on a 2-core Xeon).
  c.data.cache_decoded = True
  c.log_every_steps = 10
  c.checkpoint_every_steps = 1000  # runs are minutes long: one checkpoint, at the end
  c.keep_checkpoints = 1


def pretrain(c) -> None:
  """CLIP on image-caption pairs: the image tower learns to meet the frozen text tower's captions (AdamW lr 1e-3,
  short warm-up, cosine)."""
  c.data.batch_size = 64
  c.solver.total_steps = 1200  # 30 s more than 800; `transf` fine-tuned from it: 91.8% val top-1 against 90.6%
  c.solver.lr = 1e-3
  c.solver.lr_warmup_step = 30
  c.solver.weight_decay = 0.05


def finetune(c, sim_header: str, interaction: str) -> None:
  """ActionCLIP's recipe (KL loss, AdamW, head x `f_ratio`) at the scale of a model trained a minute ago."""
  c.network.sim_header = sim_header
  c.network.interaction = interaction
  c.data.batch_size = 32
  c.data.flip = False  # the classes include directions: a flipped `moving left` clip moves right
  # Colours name the classes: jitter (hue +-0.1 turns a red circle towards the yellow one) and grayscale would
  # change the label (`transf` 800 steps: 44.5% val top-1 with them, 60.2% without).
  c.data.color_jitter = 0.0
  c.data.grayscale = 0.0
  c.data.randaug.N, c.data.randaug.M = 0, 0
  # `transf` val top-1 (config seed 1024 / 1): 89.1 / 88.3% after 800 steps, 92.6 / 88.7% after 1,000, 93.8 / 91.0%
  # after 1,200; 1,000 keeps `make demo` under 10 minutes.
  c.solver.total_steps = 1000
  c.solver.lr = 1e-3
  c.solver.lr_warmup_step = 20
  c.solver.weight_decay = 0.05
  # The prompt learns at 10x, the pretrained image tower at 0.1x, so that it keeps what pre-training taught it.
  c.solver.f_ratio = 10.0
  c.solver.ratio = 0.1
  # The class name alone: the 16 ActionCLIP templates ("a photo of action {}", ...) are 5-10 words each around a
  # 5-word name, and a tiny text tower that never saw them sees mostly template (frozen-feature probe on this world,
  # with a caption-trained text tower: 100% top-1 with '{}', 56% with the 16 templates).
  c.network.templates = ('{}',)
  # Width-scaled head init: at width 32 the official N(0, 0.02) starts Transf as an order-blind mean (heads.py).
  c.network.head_init = 'scaled'
  c.eval.batch_size = 32
  c.eval.every_steps = 250  # the accuracy curves of the report
  # Few-shot (the held-out classes, K = 2 or 4 videos each): one seed, one lr x weight decay, a few hundred
  # iterations on at most 32 video features; the paper-scale grid (common.base) would take longer than the demo.
  c.eval.fewshot_steps = 300
  c.eval.fewshot_warmup = 20
  c.eval.fewshot_eval_every = 50
  c.eval.fewshot_lrs = (1e-3,)
  c.eval.fewshot_wds = (1e-4,)
  c.eval.fewshot_seeds = (1,)


def multilabel(c) -> None:
  """`transf` on the multi-label world, written at 32 pixels (drawn at 64, an object a quadrant), the pre-trained
  tower's input, so its objects are half the size pre-training showed. Measured with config seed 1024, 1,200
  training and 128 val videos: 14.7 / 20.2 / 23.7 / 24.5 val mAP after 200 / 400 / 600 / 800 steps on a 2-core AMD
  EPYC, 14.7 / 21.2 / 23.2 / 23.3 on a 2-core Intel Xeon (chance 6.25; docs/demo.md)."""
  finetune(c, 'Transf', 'global')
  c.data.multilabel = True
  c.solver.total_steps = 800
  c.eval.every_steps = 200


def quick(c):
  """A handful of steps on small batches: every stage runs, nothing is learnt."""
  c.data.batch_size = 8
  c.solver.total_steps = 4
  c.solver.lr_warmup_step = 1
  c.log_every_steps = 1
  c.eval.batch_size = 8
  c.eval.every_steps = 2
  c.eval.fewshot_steps = 10
  c.eval.fewshot_warmup = 2
  c.eval.fewshot_eval_every = 5
  return c
