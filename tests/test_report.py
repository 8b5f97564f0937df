"""The demo report: curves, confusion matrix, frame strips, results table, and report.md from a work dir."""
import json
import os
import sys

import matplotlib.colors
import numpy as np
import pytest
from PIL import Image

from actionclip_jax.runs import builders, metrics
from actionclip_jax import report
from actionclip_jax.predict import Prediction
from data_pipelines import annotations, synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # configs/*.py import `configs.common`, as under `python launch.py` from the repo root
  sys.path.insert(0, ROOT)
from configs import common  # noqa: E402


def pixels(path) -> np.ndarray:
  """The PNG as int RGB [H, W, 3], after checking it opens and is not one flat colour."""
  with Image.open(path) as image:
    assert image.format == 'PNG'
    rgb = np.asarray(image.convert('RGB')).astype(int)
  assert rgb.std() > 1, f'{path} is blank'
  return rgb


def count_colour(rgb: np.ndarray, colour) -> int:
  return int((rgb == np.asarray(colour)).all(axis=-1).sum())


def write_run(run_dir, rng, steps=12, eval_every=4):
  """A run dir as the trainer leaves it: metrics.jsonl and eval_val_step<k>.json; returns (losses, {step: top1})."""
  losses = rng.uniform(0.5, 3.0, steps)
  top1 = {}
  with metrics.MetricWriter(run_dir, enabled=True, tensorboard=False) as writer:
    for step, loss in enumerate(losses, start=1):
      writer.write(step, {'loss': loss, 'lr': 1e-3})
      if step % eval_every == 0:
        top1[step] = float(rng.uniform(0, 100))
        writer.write_eval(f'val_step{step}', {'top1': top1[step], 'top5': 100.0, 'videos': 6})
    writer.write_eval('eval_val', {'top1': 1.0})  # what --mode=eval writes: not a point of the curve
  return losses, top1


def test_curves_read_what_the_trainer_writes_and_plot(tmp_path):
  rng = np.random.default_rng(0)
  runs = {name: str(tmp_path / name) for name in ('transf', 'meanp', 'transf_wti')}
  written = {name: write_run(run_dir, rng) for name, run_dir in runs.items()}
  for name, run_dir in runs.items():
    losses, top1 = written[name]
    steps, loss = report.loss_curve(run_dir)
    np.testing.assert_array_equal(steps, np.arange(1, len(losses) + 1))
    np.testing.assert_array_equal(loss, losses)  # JSON round-trips float64 exactly
    assert report.accuracy_curves(run_dir) == {'val': sorted(top1.items())}
  path = report.plot_curves(runs, str(tmp_path / 'curves.png'), chance=100 / 3)
  rgb = pixels(path)
  assert rgb.shape[1] > 2 * rgb.shape[0]  # two panels side by side
  for colour in matplotlib.rcParams['axes.prop_cycle'].by_key()['color'][:len(runs)]:  # one line per run
    assert count_colour(rgb, np.round(np.array(matplotlib.colors.to_rgb(colour)) * 255)) > 0

  os.makedirs(tmp_path / 'empty')
  with pytest.raises(ValueError, match='no training loss'):
    report.plot_curves({'empty': str(tmp_path / 'empty')}, str(tmp_path / 'x.png'))


def test_confusion_is_row_normalised_counts():
  rng = np.random.default_rng(1)
  n = 5
  labels = rng.choice([0, 1, 2, 4], 200)  # class 3 has no videos
  preds = rng.integers(0, n, 200)
  matrix = report.confusion(labels, preds, n)
  for true in range(n):
    for pred in range(n):
      of_class = preds[labels == true]
      if len(of_class):
        assert matrix[true, pred] == pytest.approx(np.mean(of_class == pred), abs=1e-15)
  assert np.isnan(matrix[3]).all()
  np.testing.assert_allclose(np.delete(matrix, 3, axis=0).sum(axis=1), 1.0, rtol=0, atol=n * np.finfo(float).eps)
  with pytest.raises(ValueError, match='0..4'):
    report.confusion(labels, np.full_like(preds, -1), n)  # a negative index would otherwise wrap silently


def test_plot_confusion(tmp_path):
  rng = np.random.default_rng(2)
  names = [f'a {c} {s} moving {d}' for c, s, d in zip(['red', 'green', 'blue', 'white'] * 5,
                                                      ['circle', 'square', 'triangle', 'star', 'cross'] * 4,
                                                      ['left', 'right', 'up', 'down'] * 5)][:20]
  labels = np.repeat(np.arange(len(names)), 3)
  probs = rng.dirichlet(np.ones(len(names)), len(labels))
  path = report.plot_confusion(probs, labels, names, str(tmp_path / 'all.png'), title='test')
  rgb = pixels(path)
  cell = 0.3 * report.DPI  # each class gets at least this many pixels each way, so the names do not overlap
  assert min(rgb.shape[:2]) > len(names) * cell

  # A class without videos is a light grey row, which a matrix with every class has nowhere.
  grey = np.round(np.array(matplotlib.colors.to_rgb('lightgrey')) * 255)
  missing = labels != 7
  report.plot_confusion(probs[missing], labels[missing], names, str(tmp_path / 'missing.png'))
  assert count_colour(pixels(tmp_path / 'missing.png'), grey) > 10 * max(count_colour(rgb, grey), 10)
  with pytest.raises(ValueError, match='videos, classes'):
    report.plot_confusion(probs[:, :-1], labels, names, str(tmp_path / 'bad.png'))


def reddish(rgb):
  return int(((rgb[..., 0] > 150) & (rgb[..., 1] < 100) & (rgb[..., 2] < 100)).sum())


def greenish(rgb):
  return int(((rgb[..., 1] > rgb[..., 0] + 50) & (rgb[..., 1] > rgb[..., 2] + 50)).sum())


def test_frame_strip_shows_every_frame_and_colours_titles(tmp_path):
  frames, height, width = 8, 24, 32
  colours = [(30, 60, 200), (90, 90, 90)]  # neither reddish nor greenish
  clips = [np.broadcast_to(np.array(c, np.uint8), (frames, height, width, 3)) for c in colours]
  path = report.frame_strip(clips, ['right one', 'wrong one'], str(tmp_path / 'strip.png'), correct=[True, False])
  rgb = pixels(path)
  for colour in colours:  # each clip's frames at no less than their own size
    assert count_colour(rgb, colour) >= frames * height * width
  assert reddish(rgb) > 0 and greenish(rgb) > 0

  report.frame_strip(clips, ['right', 'right too'], str(tmp_path / 'right.png'), correct=[True, True])
  assert reddish(pixels(tmp_path / 'right.png')) == 0
  with pytest.raises(ValueError, match='one title'):
    report.frame_strip(clips, ['one title'], str(tmp_path / 'bad.png'))


def test_pick_examples_mixes_errors_and_successes():
  rng = np.random.default_rng(3)
  for size, wrong_rate in ((20, 0.3), (20, 0.0), (20, 1.0), (3, 0.5), (50, 0.02)):
    correct = rng.random(size) >= wrong_rate
    chosen = report.pick_examples(correct, 4)
    assert len(chosen) == min(4, size) == len(set(chosen.tolist()))
    assert list(chosen) == sorted(chosen)
    assert (~correct[chosen]).sum() == min((~correct).sum(), max(4 // 2, 4 - correct.sum()))


def results_dict(rng):
  return {
      'evaluations': {'val': {'classes': 12, 'about': 'closed set, seen classes'},
                      'zero_shot': {'classes': 4, 'about': 'held-out classes never trained on'},
                      'few_shot_2': {'classes': 4, 'about': '2 videos per held-out class'}},
      'runs': {'transf': {'val': {'top1': rng.uniform(0, 100)}, 'zero_shot': {'top1': rng.uniform(0, 100)},
                          'few_shot_2': {'top1': rng.uniform(0, 100)}},
               'meanp': {'val': {'top1': rng.uniform(0, 100)}}},
  }


def test_results_table_renders_each_number():
  results = results_dict(np.random.default_rng(4))
  text = report.results_table(results)
  rows = {cells[0]: cells[1:] for line in text.splitlines() if line.startswith('| ')
          for cells in [[c.strip() for c in line.strip('|').split('|')]]}
  evaluations = list(results['evaluations'])
  assert rows['run'] == evaluations
  for run, scores in results['runs'].items():
    assert rows[run] == [f'{scores[e]["top1"]:.1f}' if e in scores else '—' for e in evaluations]
  assert rows['*chance*'] == [f'*{100 / results["evaluations"][e]["classes"]:.1f}*' for e in evaluations]
  for meta in results['evaluations'].values():
    assert meta['about'] in text

  results['runs']['meanp']['heldout'] = {'top1': 1.0}
  results['evaluations']['val']['classes'] = 0
  with pytest.raises(ValueError) as error:
    report.results_table(results)
  assert "'heldout' is not listed" in str(error.value) and 'positive integer, got 0' in str(error.value)


def test_write_makes_report_and_plots_and_skips_unreadable_videos(tmp_path, monkeypatch):
  world = synthetic.make_dataset(str(tmp_path / 'data'), train_per_class=1, val_per_class=2)
  names = annotations.read_label_csv(world['label_list'])
  records = annotations.read_list_file(world['val_list'], len(names), root=world['root'])
  broken = records[1].path
  open(broken, 'w').close()
  rng = np.random.default_rng(5)
  config = common.runlocal(common.base())
  config.data.root, config.data.val_list, config.data.label_list = world['root'], world['val_list'], world['label_list']
  results = results_dict(rng)
  results['evaluations']['val']['classes'] = len(names)
  for run in results['runs']:
    builders.write_config(config, str(tmp_path / run))
    write_run(str(tmp_path / run), rng)
  with open(tmp_path / 'results.json', 'w') as f:
    json.dump(results, f)

  def fake_predict(videos, model, *, labels):
    assert model == str(tmp_path / 'transf') and labels == world['label_list']
    out = []
    for i, (video, record) in enumerate(zip(videos, records)):
      if video == broken:
        out.append(Prediction(path=video, top=[], probs=None, error='file is empty'))
        continue
      guess = record.label if i % 3 else (record.label + 1) % len(names)  # every third one wrong
      probs = np.full(len(names), 0.1 / (len(names) - 1))
      probs[guess] = 0.9
      out.append(Prediction(path=video, top=[(names[guess], 0.9)], probs=probs, error=None))
    return out

  monkeypatch.setattr(report, 'predict', fake_predict)
  path = report.write(str(tmp_path))
  text = open(path).read()
  assert path == str(tmp_path / 'report.md')
  assert f'`{broken}`: file is empty' in text
  assert report.results_table(results) in text
  for image in ('curves', 'confusion', 'examples'):
    assert f'(plots/{image}.png)' in text
    pixels(tmp_path / 'plots' / f'{image}.png')
  examples = pixels(tmp_path / 'plots' / 'examples.png')
  assert reddish(examples) > 0 and greenish(examples) > 0  # the wrong predictions are among the examples
