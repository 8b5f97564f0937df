r"""Zero-shot evaluation of a trained ActionCLIP (or plain CLIP) on any label CSV: no training, `--mode=zero_shot`.

The classes are only their names: each video is scored against the prompts of every row of `data.label_list`
(the 16 ActionCLIP templates, averaged). Protocols:
- `protocol=full`: all classes of the label list at once, one top-1/top-5/mean-class accuracy.
- `protocol=half`: `eval.half_splits` (10) random halves of the classes, each evaluated on its own videos only;
  reported as mean +- std over the splits.
For Kinetics-600 the usual label list is the 220 classes absent from Kinetics-400.

Variants (`:a=b,c`): `dataset` (hmdb51 | ucf101 | k600 | any), `protocol` (full | half), `arch` (ViT-B/16
default, as the official zero-shot configs), `frames` (8), `wti`, `runlocal`. `init_from` is the model: a K400
work dir, an official ActionCLIP `.pt`, or OpenAI/Hugging Face CLIP weights (then the visual prompt is random).

    python launch.py --config=configs/zero_shot.py:dataset=hmdb51,protocol=half --mode=zero_shot \
        --workdir=/ckpt/zs_hmdb51 --config.init_from=/ckpt/k400_b16_8f --config.data.root=/data/hmdb51 \
        --config.data.val_list=lists/hmdb51/val_split1.txt --config.data.label_list=lists/hmdb51_labels.csv

No expected numbers are given here: the paper's zero-shot table could not be checked against its text.
"""
from actionclip_jax.config_checks import PROTOCOLS
from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, dataset='hmdb51', protocol='full', arch='ViT-B/16', frames=8, wti=False,
                         runlocal=False)
  if arg.protocol not in PROTOCOLS:
    raise ValueError(f'protocol={arg.protocol!r}: not one of {", ".join(PROTOCOLS)}')
  c = common.evaluation(arg)
  c.eval.protocol = arg.protocol
  c.eval.half_splits = 10
  c.eval.name = f'zero_shot_{arg.dataset}_{arg.protocol}'
  return common.finish(c, arg)
