r"""HMDB51 fine-tuning from a Kinetics-400 ActionCLIP checkpoint (official `configs/hmdb51/hmdb_ft.yaml`).

The official recipe: `Transf` visual prompt, global batch 32, 50 epochs (5 warm-up, then cosine to 0), lr 5e-6
with the visual tower x 1 and the head x 10, AdamW weight decay 0.2, gradient clipping 20, no RandAugment
(N=0, M=0), 224x224, both towers trained. The checkpoint is required: pass it as `--config.init_from` (one of our
K400 work dirs, or an official ActionCLIP `.pt`). HMDB51 has three train/test splits; give the split's lists.

Variants (`:a=b,c`): `arch` (ViT-B/16 default, as the official file; ViT-B/32), `frames` (8 | 16 | 32; must match
the checkpoint for `joint`), `wti`, `runlocal`.

    python launch.py --config=configs/hmdb51.py:frames=32 --workdir=/ckpt/hmdb51_b16_32f_split1 \
        --config.init_from=/ckpt/k400_b16_32f --config.data.root=/data/hmdb51 \
        --config.data.train_list=lists/hmdb51/train_split1.txt --config.data.val_list=lists/hmdb51/val_split1.txt \
        --config.data.label_list=lists/hmdb51_labels.csv

Expected top-1 (K400-pretrained, single view, official README / MODEL_ZOO.md): ViT-B/16 32 frames 76.2.
"""
from configs import common


def get_config(arg=None):
  return common.finetune(common.parse_arg(arg, arch='ViT-B/16', frames=8, wti=False, runlocal=False), 'hmdb51')
