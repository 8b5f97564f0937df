r"""Charades: multi-label action recognition (157 classes, several actions a video), mAP over the classes.

ActionCLIP's paper reports 44.3 mAP on Charades, but the official repository has no Charades config, loader or loss
(its issues #33 and #56 ask for one), so this recipe is ours, stated part by part:

- model: CLIP ViT-B/16 with the `Transf` prompt on 32 frames (the paper's K400 headline setting; the paper gives no
  Charades frame count), fine-tuned from a Kinetics-400 ActionCLIP run (`--config.init_from`), as the Charades rows
  of its peers start from K400;
- optimizer and schedule: the official small-dataset fine-tune (`*_ft.yaml`: global batch 32, AdamW lr 5e-6 with
  the head x 10, weight decay 0.2, 5 warm-up epochs then cosine over 50, no RandAugment), as configs/ucf101.py;
- loss (`loss=kl|sigmoid`): ActionCLIP's KL loss with multi-label positives (default: each video's text is one of
  its labels, drawn per step; every video showing that class is a positive of it, train.texts_and_objective), or
  binary cross-entropy against every class prompt;
- sampling (`sampling=video|interval`): segments over the whole video with all its labels, or inside one annotated
  interval drawn per clip with the labels active in it (Charades' own `cNNN start end` annotations);
- evaluation: video-level mAP (the Charades standard) on one clip and one crop during training; for the multi-view
  number, `--mode=eval --config.eval.num_clips=10 --config.eval.num_crops=3` (views averaged before AP).

The lists are Charades' own files: `--config.data.train_list=Charades_v1_train.csv`, `val_list=Charades_v1_test.csv`,
`label_list=Charades_v1_classes.txt`, `root` the folder of `<id>.mp4` videos. Rows with an unknown class, an action
ending before it starts, or a missing video are reported (file:line) and left out; the run goes on.

Variants (`:a=b,c`): `arch` (ViT-B/16 default; ViT-B/32), `frames` (8 | 16 | 32, default 32), `wti`, `loss`,
`sampling`, `runlocal`.

    python launch.py --config=configs/charades.py --workdir=/ckpt/charades_b16_32f \
        --config.init_from=/ckpt/k400_b16_32f --config.data.root=/data/charades/Charades_v1_480 \
        --config.data.train_list=/data/charades/Charades_v1_train.csv \
        --config.data.val_list=/data/charades/Charades_v1_test.csv \
        --config.data.label_list=/data/charades/Charades_v1_classes.txt
"""
from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, arch='ViT-B/16', frames=32, wti=False, loss='kl', sampling='video', runlocal=False)
  c = common.finetune(arg, 'charades')
  c.data.multilabel = True
  c.data.multilabel_sampling = arg.sampling
  c.solver.loss = arg.loss
  return c
