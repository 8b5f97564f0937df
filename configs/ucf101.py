r"""UCF101 fine-tuning from a Kinetics-400 ActionCLIP checkpoint (official `configs/ucf101/ucf_train.yaml`, the
same recipe as the older `ucf_ft.yaml`).

The official recipe: `Transf` visual prompt, global batch 32, 50 epochs (5 warm-up, then cosine to 0), lr 5e-6
with the visual tower x 1 and the head x 10, AdamW weight decay 0.2, no RandAugment (N=0, M=0), 224x224, both
towers trained. Ours besides: gradient clipping at 20 (listed in the YAML, never read by the official train.py)
and random frames within each segment (the YAML has no `random_shift`, read as false: centre frames). The
checkpoint is required: pass it as `--config.init_from` (one of our K400 work dirs, or an official ActionCLIP
`.pt`). UCF101 has three train/test splits; give the split's lists.

Variants (`:a=b,c`): `arch` (ViT-B/16 default, as the official file; ViT-B/32), `frames` (8 | 16 | 32; must match
the checkpoint for `joint`), `wti`, `official` (every official switch, `common.official`), `runlocal`.

    python launch.py --config=configs/ucf101.py:frames=32 --workdir=/ckpt/ucf101_b16_32f_split1 \
        --config.init_from=/ckpt/k400_b16_32f --config.data.root=/data/ucf101 \
        --config.data.train_list=lists/ucf101/train_split1.txt --config.data.val_list=lists/ucf101/val_split1.txt \
        --config.data.label_list=lists/ucf101_labels.csv

Expected top-1 (K400-pretrained, single view, official README / MODEL_ZOO.md): ViT-B/16 32 frames 97.1.
"""
from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, arch='ViT-B/16', frames=8, wti=False, official=False, runlocal=False)
  return common.finetune(arg, 'ucf101')
