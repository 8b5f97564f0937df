r"""HMDB51 training: the official repository's current recipe (`configs/hmdb51/hmdb_train.yaml`), and its older
fine-tuning recipe (`hmdb_ft.yaml`, since deleted there) as the `ft` variant.

Default (`hmdb_train.yaml`): from OpenAI CLIP weights (`--config.init_from=ViT-B-16.pt`), global batch 64, the
`Transf` visual prompt, 50 epochs (5 warm-up, then cosine to 0), lr 5e-6 with the visual tower x 1 and the head x 10,
AdamW weight decay 0.2, no RandAugment (N=0, M=0), 224x224, both towers trained, 8 frames.
`ft` (`hmdb_ft.yaml`): the same from a Kinetics-400 ActionCLIP checkpoint (one of our K400 work dirs, or an
official ActionCLIP `.pt`), global batch 32. Neither YAML has `random_shift`, which the official code then reads as
false (segment-centre frames): we sample a random frame per segment unless `official`. Gradient clipping at 20 is
ours (the YAMLs list it, the official train.py never reads it). HMDB51 has three train/test splits; give the
split's lists.

Variants (`:a=b,c`): `arch` (ViT-B/16 default, as the official files; ViT-B/32), `frames` (8 | 16 | 32; must match
the checkpoint for `joint`), `ft`, `wti`, `official` (every official switch, `common.official`), `runlocal`.

    python launch.py --config=configs/hmdb51.py --workdir=/ckpt/hmdb51_b16_8f_split1 \
        --config.init_from=ViT-B-16.pt --config.data.root=/data/hmdb51 \
        --config.data.train_list=lists/hmdb51/train_split1.txt --config.data.val_list=lists/hmdb51/val_split1.txt \
        --config.data.label_list=lists/hmdb51_labels.csv

    python launch.py --config=configs/hmdb51.py:ft,frames=32 --workdir=/ckpt/hmdb51_ft_b16_32f_split1 \
        --config.init_from=/ckpt/k400_b16_32f ...

Expected top-1 (K400-pretrained, i.e. `ft`, single view, official MODEL_ZOO.md): ViT-B/16 32 frames 76.2. The
official repository publishes no number for the from-CLIP recipe.
"""
from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, arch='ViT-B/16', frames=8, ft=False, wti=False, official=False, runlocal=False)
  c = common.finetune(arg, 'hmdb51')
  if not arg.ft and not arg.runlocal:  # hmdb_train.yaml: from CLIP, batch 64
    c.data.batch_size = 64
  return c
