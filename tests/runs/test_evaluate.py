"""Evaluation switches and protocols, in process: views averaged as probabilities among any class subset, the
zero-shot subsets, the official eval path (no pre-scaling, the last partial batch dropped), Conv_1D's reshape for
official checkpoints whatever loads them; multi-label AP, mAP and threshold."""
import numpy as np
import pytest

import torch_actionclip
from actionclip_jax.runs import builders, evaluate, inputs, scoring
from configs import k400
from data_pipelines import synthetic
from tolerance import rounding

TINY = dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
            context_length=16, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=2)


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  return synthetic.make_dataset(str(tmp_path_factory.mktemp('data')))


def _config(dataset, **eval_fields):
  c = k400.get_config('runlocal')
  c.data.update(root=dataset['root'], train_list=dataset['train_list'], val_list=dataset['val_list'],
                label_list=dataset['label_list'])
  c.eval.update(eval_fields)
  return c


def test_views_are_averaged_as_probabilities_among_the_subset():
  rng = np.random.default_rng(0)
  scores = rng.uniform(-0.3, 0.3, (5, 3, 4, 10)).astype(np.float32)  # [B, views, templates, classes]
  subset = np.array([1, 4, 7, 8])
  logits = 100.0 * scores[..., subset].astype(np.float64)
  e = np.exp(logits - logits.max(-1, keepdims=True))
  want = (e / e.sum(-1, keepdims=True)).mean(axis=(1, 2))
  got = scoring.subset_probs(scores, subset)
  np.testing.assert_allclose(got, want, atol=rounding(12))
  averaged_scores_first = scoring.subset_probs(scores.mean(axis=1, keepdims=True), subset)
  assert np.abs(averaged_scores_first - want).max() > 1e-3  # what the half-class path did before


def test_zero_shot_subsets_and_their_summary():
  halves = evaluate.half_class_subsets(10, 4, seed=0)
  assert len(halves) == 4 and all(len(h) == 5 and np.all(np.diff(h) > 0) for h in halves)
  assert any(not np.array_equal(halves[0], h) for h in halves[1:])
  novel = np.arange(40, 60)
  subsets = evaluate.random_subsets(novel, 16, 3, seed=0)
  assert all(len(s) == 16 and set(s) <= set(novel) for s in subsets)
  with pytest.raises(ValueError, match='subset_classes=30'):
    evaluate.random_subsets(novel, 30, 3, seed=0)
  probs = np.eye(3)[[0, 1, 2, 0]]  # videos of classes 0, 2, 5, 0 predicted among [0, 2, 5]
  labels = np.array([0, 2, 5, 0, 1])  # the class-1 video is not in the subset
  assert evaluate.subset_accuracy(probs, labels[:4], np.array([0, 2, 5]))['top1'] == 100.0
  summary = evaluate._summary([{'top1': 50.0}, {'top1': 70.0}])
  assert summary['top1'] == summary['top1_mean'] == 60.0 and summary['top1_std'] == 10.0
  assert summary['top1_per_split'] == [50.0, 70.0] and summary['splits'] == 2


def test_novel_classes_are_those_the_known_label_list_lacks(tmp_path):
  known = tmp_path / 'k400.csv'
  known.write_text('id,name\n0,abseiling\n1,passing American football (in game)\n2,playing cards\n')
  names = ['Abseiling', 'passing american football in game', 'arranging flowers', 'playing_cards', 'yoga']
  np.testing.assert_array_equal(evaluate.novel_classes(names, str(known)), [2, 4])
  np.testing.assert_array_equal(evaluate.novel_classes(names, ''), np.arange(5))


def test_official_eval_path_reads_full_size_frames_and_drops_the_last_partial_batch(dataset, tmp_path):
  names = inputs.label_names(_config(dataset).data)
  ours = _config(dataset, max_videos=0)
  official = _config(dataset, max_videos=0, prescale=False, drop_last=True, batch_size=4)
  src, _ = inputs.eval_dataset(ours, str(tmp_path), ours.data.val_list, names)
  assert len(src) == 6 and src.short_side == ours.data.short_side
  src, batches = inputs.eval_dataset(official, str(tmp_path), official.data.val_list, names)
  assert len(src) == 4 and src.src.short_side is None  # 6 videos, batches of 4: the partial one is dropped
  assert sum(int(b['mask'].sum()) for b in batches) == 4


def test_conv_1d_takes_the_official_reshape_for_an_official_checkpoint(tmp_path):
  conv, transf = tmp_path / 'conv.pt', tmp_path / 'transf.pt'
  torch_actionclip.official_checkpoint(TINY, conv, 'Conv_1D', frames=4)
  torch_actionclip.official_checkpoint(TINY, transf, 'Transf', frames=4)
  c = k400.get_config('runlocal')
  c.network.sim_header = 'Conv_1D'
  assert not builders.model_config(c).conv_official_reshape  # from scratch / CLIP: the transpose
  c.init_from = str(conv)
  assert builders.model_config(c).conv_official_reshape  # as load_pretrained does
  c.network.conv_reshape = 'transpose'
  assert not builders.model_config(c).conv_official_reshape
  c.network.conv_reshape = 'official'
  c.init_from = ''
  assert builders.model_config(c).conv_official_reshape
  c.network.conv_reshape, c.init_from = 'auto', str(transf)  # an official checkpoint of another prompt
  assert not builders.model_config(c).conv_official_reshape


def test_eval_dtype_overrides_the_network_dtype():
  c = k400.get_config('runlocal')
  c.network.dtype = 'bfloat16'
  assert evaluate.model_config(c).clip.dtype == 'float32'
  c.eval.dtype = ''
  assert evaluate.model_config(c).clip.dtype == 'bfloat16'


def test_few_shot_on_packed_data_reports_mean_and_std_over_seeds(dataset, tmp_path, capsys):
  """--mode=few_shot with data.source=packed: K shots drawn from the packed records, every seed's numbers kept."""
  from data_pipelines import annotations, pack
  names = inputs.label_names(_config(dataset).data)
  packed = {}
  for split in ('train_list', 'val_list'):
    packed[split] = str(tmp_path / split)
    pack.pack(annotations.read_video_list(dataset[split], names, root=dataset['root']), packed[split],
              short_side=40, quality=95)
  ckpt = tmp_path / 'official.pt'
  torch_actionclip.official_checkpoint(TINY, ckpt, 'meanP', frames=4)
  c = _config(dataset)
  c.data.update(source='packed', **packed)
  c.network.sim_header = 'meanP'
  c.init_from = str(ckpt)
  results = evaluate.run(c, str(tmp_path / 'run'), 'few_shot')
  assert [r['seed'] for r in results['per_seed']] == [1, 2] and results['videos'] == 6
  assert np.isclose(results['top1_std'], np.std([r['top1'] for r in results['per_seed']]))
  assert f'top-1 {results["top1_mean"]:.2f} +- {results["top1_std"]:.2f} over 2 seeds' in capsys.readouterr().out
  for seed in (1, 2):
    lines = (tmp_path / 'run' / f'fewshot_16shot_seed{seed}_train.txt').read_text().splitlines()
    assert len(lines) == 12 and all(int(line.split()[1]) > 0 for line in lines)  # all 4 of each class, counted


def test_zero_shot_splits_and_k600_protocols_report_every_split(dataset, tmp_path, capsys):
  """protocol=splits: each list on its own; protocol=k600: random subsets of the classes the known label list
  lacks. Both print and write mean +- std with the per-split numbers."""
  from configs import zero_shot
  ckpt = tmp_path / 'official.pt'
  torch_actionclip.official_checkpoint(TINY, ckpt, 'meanP', frames=4)
  c = zero_shot.get_config('runlocal,dataset=any,protocol=splits')
  c.data.update(root=dataset['root'], label_list=dataset['label_list'],
                val_lists=(dataset['val_list'], dataset['train_list'], dataset['val_list']))
  c.network.sim_header, c.init_from, c.eval.max_videos = 'meanP', str(ckpt), 0
  splits = evaluate.run(c, str(tmp_path / 'splits'), 'zero_shot')
  assert [r['videos'] for r in splits['per_split']] == [6, 12, 6]
  assert splits['per_split'][0] == splits['per_split'][2]  # the same list twice: the same numbers
  assert np.isclose(splits['top1_std'], np.std(splits['top1_per_split']))
  assert [x['path'] for x in splits['measured']['lists']] == list(c.data.val_lists)
  names = inputs.label_names(c.data)
  known = tmp_path / 'known.csv'
  known.write_text(f'id,name\n0,{names[0]}\n')
  k600 = zero_shot.get_config('runlocal,dataset=k600')
  k600.data.update(root=dataset['root'], label_list=dataset['label_list'], val_list=dataset['val_list'])
  k600.network.sim_header, k600.init_from, k600.eval.max_videos = 'meanP', str(ckpt), 0
  k600.eval.known_label_list = str(known)
  results = evaluate.run(k600, str(tmp_path / 'k600'), 'zero_shot')
  assert results['splits'] == 2 and all(len(r['classes']) == 2 and names[0] not in r['classes']
                                        for r in results['per_split'])
  # eval.k600_splits: the named class lists, found by name (other case and spacing), instead of random subsets
  # (which never hold names[0], the known class).
  (tmp_path / 'a.csv').write_text(f'id,name\n0,{names[2].upper()}\n1,{names[0]}\n')
  (tmp_path / 'b.csv').write_text(f'id,name\n0,{names[1]}\n1,{names[0].replace(" ", "_")}\n')
  k600.eval.k600_splits = f'{tmp_path / "a.csv"},{tmp_path / "b.csv"}'
  named = evaluate.run(k600, str(tmp_path / 'k600_named'), 'zero_shot')
  assert [r['classes'] for r in named['per_split']] == [[names[0], names[2]], [names[0], names[1]]]
  out = capsys.readouterr().out
  assert 'over 3 splits' in out and 'over 2 splits' in out


# --- Multi-label: AP against hand-computed cases, mAP's exclusions and chance, the F1 threshold -------------------


def test_average_precision_by_hand():
  # Positives at ranks 1, 3 and 5: precisions 1/1, 2/3, 3/5.
  ap = evaluate.average_precision(np.array([0.9, 0.8, 0.7, 0.6, 0.5]), np.array([1, 0, 1, 0, 1]))
  assert ap == pytest.approx((1 + 2 / 3 + 3 / 5) / 3, abs=1e-12)
  # The order of the scores, not the order given, decides.
  ap_shuffled = evaluate.average_precision(np.array([0.6, 0.9, 0.5, 0.8, 0.7]), np.array([0, 1, 1, 0, 1]))
  assert ap_shuffled == pytest.approx(ap, abs=1e-12)
  assert evaluate.average_precision(np.array([0.3, 0.2, 0.1]), np.array([1, 1, 0])) == 1.0


def test_tied_scores_are_one_threshold():
  # Thresholds 0.9 (P 0, R 0), 0.5 (3 videos, 1 hit: P 1/3, R 1/2), 0.1 (P 1/2, R 1): AP = 1/2 * 1/3 + 1/2 * 1/2.
  # Ranking the tie either way would give 1/2 * 1/2 + 1/2 * 1/2 or 1/2 * 1/3 + 1/2 * 1/2 + ...: ties must not
  # depend on the input order.
  scores, positives = np.array([0.9, 0.5, 0.5, 0.1]), np.array([0, 1, 0, 1])
  expected = 0.5 / 3 + 0.5 * 0.5
  assert evaluate.average_precision(scores, positives) == pytest.approx(expected, abs=1e-12)
  assert evaluate.average_precision(scores[[0, 2, 1, 3]], positives[[0, 2, 1, 3]]) == pytest.approx(expected, abs=1e-12)


def test_map_excludes_classes_without_positives_and_names_them():
  names = ['a', 'b', 'c']
  labels = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]], bool)
  probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.1, 0.2, 0.7]])
  out = evaluate.multilabel_metrics(probs, labels, names)
  ap_a = 1.0  # a's positives score 0.8 and 0.5, above every negative
  ap_b = (1 + 2 / 2) / 2  # b: 0.7 (hit), 0.4 (hit): both first
  assert out['per_class_ap'] == pytest.approx({'a': 100 * ap_a, 'b': 100 * ap_b})
  assert out['mAP'] == pytest.approx(100 * (ap_a + ap_b) / 2)
  assert out['classes_scored'] == 2 and out['classes_without_positives'] == ['c']
  assert out['chance_mAP'] == pytest.approx(100 * (2 / 4 + 2 / 4) / 2)  # each scored class's prevalence
  assert out['videos'] == 4
  with pytest.raises(ValueError, match='none of the 3 classes has a positive'):
    evaluate.multilabel_metrics(probs, np.zeros_like(labels), names)


def test_random_scores_average_the_chance_map():
  rng = np.random.default_rng(0)
  labels = rng.random((4000, 5)) < np.array([0.05, 0.1, 0.2, 0.4, 0.6])
  out = evaluate.multilabel_metrics(rng.random(labels.shape), labels, list('abcde'))
  # AP of random scores is the prevalence up to sampling noise (~1/sqrt(positives) relative).
  assert out['mAP'] == pytest.approx(out['chance_mAP'], rel=0.1)


def test_threshold_maximizes_micro_f1():
  probs = np.array([[0.9, 0.6, 0.2], [0.8, 0.3, 0.1], [0.4, 0.7, 0.05]])
  labels = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 0]], bool)
  out = evaluate.best_threshold(probs, labels)
  # The four positives are exactly the four highest probabilities (0.9, 0.8, 0.7, 0.6): F1 = 1 between 0.6 and 0.4.
  assert out['micro_f1'] == pytest.approx(100.0)
  assert 0.4 < out['threshold'] < 0.6
  predicted = probs > out['threshold']
  assert (predicted == labels).all()
