"""The shipped label lists: every file is a well-formed label CSV with the classes its source publishes, byte for byte
(the sha256 sums of data/SOURCES.md); names resolve to the installed files; K600's zero-shot splits map onto a label
list by name; `python -m actionclip_jax.labels` lists them."""
import csv
import hashlib
import os
import re
import subprocess
import sys

import pytest

from actionclip_jax import labels
from data_pipelines import annotations

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, 'actionclip_jax', 'labels', 'data')
COUNTS = {'k400': 400, 'ucf101': 101, 'hmdb51': 51, 'ssv2': 174, 'k600_zs1': 160, 'k600_zs2': 160, 'k600_zs3': 160}


def test_the_shipped_names_are_the_standard_lists():
  assert {name: s.classes for name, s in labels.SHIPPED.items()} == COUNTS


@pytest.mark.parametrize('name', sorted(COUNTS))
def test_each_file_is_utf8_with_ids_0_to_c_minus_1_and_unique_names(name):
  path = labels.resolve(name)
  with open(path, 'rb') as f:
    text = f.read().decode('utf-8')  # strict: a byte that is not UTF-8 fails here
  header, *rows = list(csv.reader(text.splitlines()))
  assert header == ['id', 'name']
  assert [int(row[0]) for row in rows] == list(range(COUNTS[name]))
  names = labels.read(name)
  assert names == [row[1].strip() for row in rows]
  assert len(set(names)) == len(names) == COUNTS[name]
  assert all(names)


def test_the_files_are_those_sources_md_names_byte_for_byte():
  with open(os.path.join(DATA, 'SOURCES.md'), encoding='utf-8') as f:
    table = {m[1]: (m[2], m[3]) for m in re.finditer(r'^\| `(\w+)` \| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$', f.read(),
                                                      re.M)}
  assert set(table) == set(labels.SHIPPED)
  for name, (file, sha256) in table.items():
    assert labels.SHIPPED[name].file == file
    with open(labels.resolve(name), 'rb') as f:
      assert hashlib.sha256(f.read()).hexdigest() == sha256, name
  csvs = {n for n in os.listdir(DATA) if n.endswith('.csv')}
  assert csvs == {s.file for s in labels.SHIPPED.values()}, 'a file in data/ that no name reaches, or the reverse'


def test_the_k600_splits_are_of_classes_kinetics_400_lacks():
  k400 = {labels.canonical(n) for n in labels.read('k400')}
  for split in labels.LITERATURE_K600_SPLITS:
    assert not k400 & {labels.canonical(n) for n in labels.read(split)}, split
  union = set().union(*(labels.read(s) for s in labels.LITERATURE_K600_SPLITS))
  assert len(union) <= 220  # three draws among K600's 220 novel classes


def test_resolve_by_name_and_by_path(tmp_path):
  path = labels.resolve('hmdb51')
  assert os.path.isfile(path) and os.path.samefile(path, os.path.join(DATA, 'hmdb51_labels.csv'))
  assert labels.resolve(path) == path
  mine = tmp_path / 'mine.csv'
  mine.write_text('id,name\n0,juggling\n1,archery\n')
  assert labels.resolve(str(mine)) == str(mine)
  assert labels.read(str(mine)) == ['juggling', 'archery']
  assert labels.read(path) == labels.read('hmdb51') == annotations.read_label_csv(path)


def test_an_unknown_name_says_which_names_are_shipped():
  with pytest.raises(FileNotFoundError) as err:
    labels.resolve('k401')
  assert "'k401'" in str(err.value)
  assert all(name in str(err.value) for name in labels.SHIPPED)


def test_split_lists_spec():
  assert labels.split_lists('') == []
  assert labels.split_lists('literature') == ['k600_zs1', 'k600_zs2', 'k600_zs3']
  assert labels.split_lists(' k600_zs2 , a.csv,') == ['k600_zs2', 'a.csv']


def test_split_subsets_map_the_splits_onto_a_label_list_by_name(tmp_path):
  # A made-up K600-like label list: K400's classes and the splits' classes, in another order and other spellings
  # (upper case, underscores for spaces, no parentheses), as another label CSV may write them.
  novel = sorted(set().union(*(labels.read(s) for s in labels.LITERATURE_K600_SPLITS)))
  respelled = {n: n.upper().replace(' ', '_').replace('(', '').replace(')', '') for n in novel}
  names = sorted(labels.read('k400') + list(respelled.values()), key=lambda n: n.lower()[::-1])
  subsets = labels.split_subsets(names, 'literature')
  assert len(subsets) == 3
  for split, ids in zip(labels.LITERATURE_K600_SPLITS, subsets):
    assert ids == sorted(ids) and len(ids) == 160
    assert sorted(names[i] for i in ids) == sorted(respelled[n] for n in labels.read(split))
  # A file given by path is a split too; a class the label list lacks is named.
  mine = tmp_path / 'split.csv'
  mine.write_text('id,name\n0,abseiling\n1,Air Drumming\n')
  assert labels.split_subsets(names, f'k600_zs3,{mine}')[1] == sorted([names.index('abseiling'),
                                                                        names.index('air drumming')])
  lacking = [n for n in names if n != respelled['yarn spinning']]
  with pytest.raises(ValueError) as err:
    labels.split_subsets(lacking, 'literature')
  assert str(err.value) == "k600_zs1: 1 of its 160 classes are not in the label list, e.g. 'yarn spinning'"


def test_the_listing_names_every_shipped_list_with_its_class_count():
  done = subprocess.run([sys.executable, '-m', 'actionclip_jax.labels'], cwd=REPO, capture_output=True, text=True,
                        timeout=120, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert done.returncode == 0, done.stderr[-2000:]
  rows = [re.split(r'\s{2,}', line) for line in done.stdout.splitlines()]  # columns: 2+ spaces apart
  assert rows[0] == ['name', 'classes', 'source', 'file']
  listed = {row[0]: (int(row[1]), row[2], row[3]) for row in rows[1:]}
  assert listed == {name: (COUNTS[name], s.source, labels.resolve(name)) for name, s in labels.SHIPPED.items()}
