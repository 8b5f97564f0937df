r"""Few-shot recognition: K videos per class and a frozen ActionCLIP with the cross-modal linear adaptation of Lin et
al. 2023 (`actionclip_jax.runs.fewshot`), `--mode=few_shot`; or (`:finetune`) the whole model fine-tuned on K shots.

The default is the follow-up's linear-probe protocol, not the whole-model fine-tuning of ActionCLIP's or X-CLIP's
few-shot tables. For each seed of `eval.fewshot_seeds` (3), K videos of each class are drawn from
`data.train_list` (written to WORKDIR/fewshot_<K>shot_seed<S>_train.*); their features and the class prompts are
computed once with the frozen model; a linear classifier initialised from the zero-shot text classifier (logit
scale 100) is trained with AdamW, linear warm-up then cosine over `eval.fewshot_steps` (12,800) iterations, its
lr x weight decay chosen on a validation split carved from the K shots with early stopping, then refit on all K
shots; top-1 on `data.val_list`. Reported as mean +- std over the seeds, each seed's numbers and choices in
WORKDIR/eval_few_shot_*.json. Train lists may be TSN lists, `path,label_name` CSVs, or packed directories.

`:finetune` is the other protocol: the normal trainer on a K-shot list with the K400 recipe's optimizer (AdamW
0.9/0.98, weight decay 0.2, lr 5e-6 with the head x 10, 5 warm-up epochs then cosine over 50), batch 32. Write the
list with `python -m actionclip_jax.runs.fewshot --list TRAIN --labels CSV --shots K --seed S --out k.txt` and run
`--mode=train` with `--config.data.train_list=k.txt` (one run per seed).

Variants (`:a=b,c`): `shots` (2 | 4 | 8 | 16, the paper's K -> eval.shots), `dataset` (hmdb51 | ucf101 | k400 |
any), `arch` (ViT-B/16), `frames` (8), `wti`, `finetune`, `runlocal`.

    python launch.py --config=configs/few_shot.py:shots=4,dataset=ucf101 --mode=few_shot \
        --workdir=/ckpt/fs_ucf101_4shot --config.init_from=/ckpt/k400_b16_8f --config.data.root=/data/ucf101 \
        --config.data.train_list=lists/ucf101/train_split1.txt --config.data.val_list=lists/ucf101/val_split1.txt \
        --config.data.label_list=lists/ucf101_labels.csv

No expected numbers are given here: the paper's few-shot table could not be checked against its text.
"""
from configs import common

SHOTS = (2, 4, 8, 16)  # the paper's K; any K >= 1 is accepted


def get_config(arg=None):
  arg = common.parse_arg(arg, shots=16, dataset='hmdb51', arch='ViT-B/16', frames=8, wti=False, finetune=False,
                         runlocal=False)
  if arg.shots < 1:
    raise ValueError(f'shots={arg.shots}: K must be >= 1 (the paper uses {SHOTS})')
  if arg.finetune:
    c = common.finetune(arg, arg.dataset)  # batch 32, 50 epochs, 5 warm-up; the K400 optimizer below
    c.data.randaug.N, c.data.randaug.M = (1, 9) if arg.runlocal else (2, 9)
    c.solver.lr, c.solver.weight_decay, c.solver.betas, c.solver.eps = 5e-6, 0.2, (0.9, 0.98), 1e-8
    c.solver.ratio, c.solver.f_ratio = 1.0, 10.0
    c.eval.shots = arg.shots
    c.eval.name = f'few_shot_finetune_{arg.dataset}_{arg.shots}shot'
    return c
  c = common.evaluation(arg)
  c.eval.shots = arg.shots
  c.eval.name = f'few_shot_{arg.dataset}_{arg.shots}shot'
  return common.finish(c, arg)
