r"""Zero-shot evaluation of a trained ActionCLIP (or plain CLIP) on any label CSV: no training, `--mode=zero_shot`.

The classes are only their names: each video is scored against the prompts of every row of `data.label_list`
(the 16 ActionCLIP templates; softmax over the classes per view and template, then averaged over templates and
views). Protocols (`eval.protocol`), as the literature's tables (X-CLIP, ViFi-CLIP) run them:
- `full`: all classes of the label list at once on `data.val_list`; one top-1/top-5/mean-class accuracy.
- `splits`: each list of `data.val_lists` on its own (HMDB51 / UCF101: the 3 official test splits), reported as
  mean +- std over them with each split's numbers.
- `half`: `eval.half_splits` (10) random halves of the classes, each classified among itself on its videos, over
  the whole dataset: give every video, e.g. `data.val_lists` = a split's train and test lists (a video in
  several lists counts once); mean +- std.
- `k600`: Kinetics-600 on the 220 classes absent from Kinetics-400: the classes of `data.label_list` (K600's) not
  named in `eval.known_label_list` (K400's label CSV, or `k400`; empty = the label list is already the novel
  classes), then `eval.subsets` (3) random subsets of `eval.subset_classes` (160), each classified among itself;
  mean +- std. `eval.k600_splits=literature` takes instead the three 160-class splits the zero-shot tables use
  (shipped as `k600_zs1..3`, from ViFi-CLIP), found in `data.label_list` by name (case-, space- and
  punctuation-blind); a comma list of label lists (shipped names or CSVs) gives any splits. A split class the label
  list lacks, or one `eval.known_label_list` names, stops the run at start.
Every protocol prints its mean +- std and writes the per-split numbers to WORKDIR/eval_zero_shot_*.json.

Variants (`:a=b,c`): `dataset` (hmdb51 | ucf101 | k600 | any), `protocol` (full | half | splits | k600; k600 is the
default for dataset=k600), `arch` (ViT-B/16 default, as the official zero-shot configs), `frames` (8), `wti`,
`runlocal`. `init_from` is the model: a K400 work dir, an official ActionCLIP `.pt`, or OpenAI/Hugging Face CLIP
weights (then the visual prompt is random).

    python launch.py --config=configs/zero_shot.py:dataset=hmdb51,protocol=splits --mode=zero_shot \
        --workdir=/ckpt/zs_hmdb51 --config.init_from=/ckpt/k400_b16_8f --config.data.root=/data/hmdb51 \
        --config.data.val_lists="('lists/hmdb51/val_split1.txt','lists/hmdb51/val_split2.txt','lists/hmdb51/val_split3.txt')" \
        --config.data.label_list=hmdb51

    python launch.py --config=configs/zero_shot.py:dataset=k600 --mode=zero_shot --workdir=/ckpt/zs_k600 \
        --config.init_from=/ckpt/k400_b16_8f --config.data.root=/data/k600 --config.data.val_list=lists/k600/val.txt \
        --config.data.label_list=lists/kinetics_600_labels.csv --config.eval.k600_splits=literature

No expected numbers are given here: the paper's zero-shot table could not be checked against its text.
"""
from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, dataset='hmdb51', protocol='', arch='ViT-B/16', frames=8, wti=False, runlocal=False)
  protocol = arg.protocol or ('k600' if arg.dataset == 'k600' else 'full')
  c = common.evaluation(arg)
  c.eval.protocol = protocol
  c.eval.half_splits = 10
  c.eval.subsets, c.eval.subset_classes = 3, 160  # k600: 3 random subsets of 160 of the 220 novel classes
  c.eval.name = f'zero_shot_{arg.dataset}_{protocol}'
  return common.finish(c, arg)
