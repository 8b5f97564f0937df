"""The standard label lists, shipped with the package and named: `k400`, `ucf101`, `hmdb51`, `ssv2` and the
literature's three Kinetics-600 zero-shot splits `k600_zs1..3`.

Wherever a label CSV is accepted (`--config.data.label_list`, `eval.known_label_list`, `eval.k600_splits`,
`predict --labels`, the few-shot list writer) a shipped name does as well as a path: `resolve` turns a name into
the file inside the installed package, so a run's config keeps the name and its directory stays portable. A name
wins over a file of that name in the working directory. `python -m actionclip_jax.labels` lists them; where each
file comes from is in `data/SOURCES.md`.

The Kinetics-600 splits are given as class names: `split_subsets` maps them onto a label list's ids by the names'
canonical form (`canonical`: case-, space- and punctuation-blind), so K600's own label CSV, with its spellings,
is scored on the literature's exact class subsets.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
import os

from data_pipelines import annotations


@dataclasses.dataclass(frozen=True)
class Shipped:
  file: str  # under actionclip_jax/labels/data/
  classes: int
  source: str


_ACTIONCLIP = 'ActionCLIP (official lists)'
_VIFI = 'ViFi-CLIP'
SHIPPED = {
    'k400': Shipped('kinetics_400_labels.csv', 400, _ACTIONCLIP),
    'ucf101': Shipped('ucf_labels.csv', 101, _ACTIONCLIP),
    'hmdb51': Shipped('hmdb51_labels.csv', 51, _ACTIONCLIP),
    'ssv2': Shipped('ssv2_labels.csv', 174, _VIFI),
    'k600_zs1': Shipped('ZS_split1_K600.csv', 160, _VIFI),
    'k600_zs2': Shipped('ZS_split2_K600.csv', 160, _VIFI),
    'k600_zs3': Shipped('ZS_split3_K600.csv', 160, _VIFI),
}
# `eval.k600_splits=literature`: the three 160-class splits of K600's 220 novel classes the zero-shot tables use.
LITERATURE_K600_SPLITS = ('k600_zs1', 'k600_zs2', 'k600_zs3')


def resolve(name_or_path: str) -> str:
  """The label CSV's path: a shipped name's file in the package, or an existing file as given."""
  if name_or_path in SHIPPED:
    return str(importlib.resources.files(__name__).joinpath('data', SHIPPED[name_or_path].file))
  if os.path.isfile(name_or_path):
    return name_or_path
  raise FileNotFoundError(f'No label CSV at {name_or_path!r}, and it is not a shipped label list '
                          f'({", ".join(SHIPPED)})')


def read(name_or_path: str) -> list[str]:
  """The class names of a shipped list or a label CSV (`id,name` with a header), indexed by id."""
  return annotations.read_label_csv(resolve(name_or_path))


def canonical(name: str) -> str:
  """A class name case- and space-blind, quotes, parentheses and underscores ignored: K400's, K600's and the
  splits' spellings of one class compare equal."""
  return ' '.join(''.join(ch if ch.isalnum() else ' ' for ch in name.lower()).split())


def split_lists(spec: str) -> list[str]:
  """`eval.k600_splits` as label lists: '' none, `literature` the three shipped splits, else a comma list."""
  if spec == 'literature':
    return list(LITERATURE_K600_SPLITS)
  return [s.strip() for s in spec.split(',') if s.strip()]


def split_subsets(names: list[str], spec: str) -> list[list[int]]:
  """For each label list of `spec` (see split_lists), the sorted ids in `names` of its classes, matched by
  canonical name; a class `names` lacks is a ValueError naming it."""
  ids = {canonical(n): i for i, n in enumerate(names)}
  subsets = []
  for split in split_lists(spec):
    wanted = read(split)
    missing = [n for n in wanted if canonical(n) not in ids]
    if missing:
      raise ValueError(f'{split}: {len(missing)} of its {len(wanted)} classes are not in the label list, e.g. '
                       f'{", ".join(repr(n) for n in missing[:5])}')
    subsets.append(sorted({ids[canonical(n)] for n in wanted}))
  return subsets
