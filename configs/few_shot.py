r"""Few-shot recognition: K videos per class, a frozen ActionCLIP and the cross-modal linear adaptation
(`actionclip_jax.fewshot`), `--mode=few_shot`.

Features of the K-shot training videos (drawn with `seed` from `data.train_list`) and the class prompts are
computed once with the frozen model; a linear classifier initialised from the zero-shot text classifier is trained
for `eval.fewshot_steps` steps, then evaluated on `data.val_list`.

Variants (`:a=b,c`): `shots` (2 | 4 | 8 | 16, the paper's K -> eval.shots), `dataset` (hmdb51 | ucf101 | k400 |
any), `arch` (ViT-B/16), `frames` (8), `wti`, `runlocal`.

    python launch.py --config=configs/few_shot.py:shots=4,dataset=ucf101 --mode=few_shot \
        --workdir=/ckpt/fs_ucf101_4shot --config.init_from=/ckpt/k400_b16_8f --config.data.root=/data/ucf101 \
        --config.data.train_list=lists/ucf101/train_split1.txt --config.data.val_list=lists/ucf101/val_split1.txt \
        --config.data.label_list=lists/ucf101_labels.csv

No expected numbers are given here: the paper's few-shot table could not be checked against its text.
"""
from configs import common

SHOTS = (2, 4, 8, 16)  # the paper's K; any K >= 1 is accepted


def get_config(arg=None):
  arg = common.parse_arg(arg, shots=16, dataset='hmdb51', arch='ViT-B/16', frames=8, wti=False, runlocal=False)
  if arg.shots < 1:
    raise ValueError(f'shots={arg.shots}: K must be >= 1 (the paper uses {SHOTS})')
  c = common.evaluation(arg)
  c.eval.shots = arg.shots
  c.eval.name = f'few_shot_{arg.dataset}_{arg.shots}shot'
  return common.finish(c, arg)
