"""The demo's report: training curves, a confusion matrix, example clips and the results table.

    path = report.write('workdirs/demo')   # -> WORKDIR/report.md and WORKDIR/plots/*.png
    python -m actionclip_jax.report --workdir workdirs/demo

`write` reads the demo work dir: `results.json`, and for each run named there the run dir `WORKDIR/<run>`
(`metrics.jsonl`, the trainer's `eval_<name>_step<k>.json`, `config.json`). The confusion matrix and the example
clips come from predicting the Transf run's validation videos with `actionclip_jax.predict`; a video that cannot be read
is left out of both and listed in the report.

results.json, as the demo writes it:

    {"evaluations": {"<evaluation>": {"classes": <classes it chooses among>, "about": "<what it measures>"}, ...},
     "runs": {"<run>": {"<evaluation>": {"top1": <percent>, ...}, ...}, ...}}

Figures are drawn on matplotlib's Agg canvas without pyplot: importing this module sets no global backend and
needs no display, and no figure outlives its function.
"""
from __future__ import annotations

import argparse
import json
import os
import re

import matplotlib
import ml_collections
import numpy as np
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from actionclip_jax.runs import inputs, metrics
from actionclip_jax.predict import predict
from data_pipelines import sampling

DPI = 100
PLOTS_DIR = 'plots'
CONFUSION_RUN = 'transf'  # the run whose validation predictions the confusion matrix and the examples show
NUM_EXAMPLES = 4
EVAL_FILE = re.compile(r'eval_(?P<name>.+)_step(?P<step>\d+)\.json')  # metrics.MetricWriter.write_eval in runs/train.py
# Above this many classes the matrix cells are too small to hold a number; the colour bar reads them instead.
MAX_ANNOTATED_CLASSES = 15


def _figure(width: float, height: float) -> Figure:
  fig = Figure(figsize=(width, height), dpi=DPI, layout='constrained')
  FigureCanvasAgg(fig)
  return fig


# ------------------------------------------------------------------------------------------------------------------
# Training curves.


def loss_curve(run_dir: str) -> tuple[np.ndarray, np.ndarray]:
  """(steps, train loss) of a run's metrics.jsonl; a loss logged as null (non-finite) is NaN, a gap in the line."""
  records = [r for r in metrics.read_metrics(run_dir) if 'loss' in r]
  if not records:
    raise ValueError(f'{os.path.join(run_dir, metrics.METRICS_FILE)}: no training loss logged')
  steps = np.array([r['step'] for r in records])
  loss = np.array([np.nan if r['loss'] is None else r['loss'] for r in records], np.float64)
  return steps, loss


def accuracy_curves(run_dir: str) -> dict[str, list[tuple[int, float]]]:
  """{evaluation name: [(step, top-1), ...] by step} from the evaluations the trainer wrote during the run (mAP
  instead of top-1 for a multi-label run's)."""
  curves = {}
  for entry in os.listdir(run_dir):
    match = EVAL_FILE.fullmatch(entry)
    if not match:
      continue
    path = os.path.join(run_dir, entry)
    with open(path) as f:
      results = json.load(f)
    value = results.get('mAP', results.get('top1'))
    if not isinstance(value, (int, float)):
      raise ValueError(f'{path}: no numeric "top1" or "mAP"')
    curves.setdefault(match['name'], []).append((int(match['step']), float(value)))
  return {name: sorted(points) for name, points in sorted(curves.items())}


def plot_curves(runs: dict[str, str], path: str, chance: float | None = None, metric: str = 'top-1') -> str:
  """Train loss (left) and validation top-1 (or `metric`: 'mAP') (right) against step, one colour per run; `chance`
  in percent is drawn as a dashed line on the right."""
  fig = _figure(12, 4.5)
  loss_ax, top1_ax = fig.subplots(1, 2)
  for run, run_dir in runs.items():
    steps, loss = loss_curve(run_dir)
    (line,) = loss_ax.plot(steps, loss, label=run)
    curves = accuracy_curves(run_dir)
    for name, points in curves.items():
      eval_steps, top1 = zip(*points)
      label = run if len(curves) == 1 else f'{run} ({name})'
      top1_ax.plot(eval_steps, top1, marker='o', color=line.get_color(), label=label)
  if chance is not None:
    top1_ax.axhline(chance, color='grey', linestyle='--', label=f'chance ({chance:.1f}%)')
  loss_ax.set(title='Training loss', xlabel='step', ylabel='loss')
  top1_ax.set(title=f'Validation {metric}', xlabel='step', ylabel=f'{metric} (%)', ylim=(0, 100))
  for ax in (loss_ax, top1_ax):
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
  fig.savefig(path)
  return path


# ------------------------------------------------------------------------------------------------------------------
# Confusion matrix.


def confusion(labels, preds, num_classes: int) -> np.ndarray:
  """[true class, predicted class] fractions, each row summing to 1; a class without videos has a NaN row."""
  labels, preds = np.asarray(labels), np.asarray(preds)
  if labels.shape != preds.shape or labels.ndim != 1:
    raise ValueError(f'labels {labels.shape} and preds {preds.shape} must be equal-length vectors')
  for what, values in (('labels', labels), ('preds', preds)):
    if values.size and not (values.min() >= 0 and values.max() < num_classes):
      raise ValueError(f'{what} must lie in 0..{num_classes - 1}, got {values.min()}..{values.max()}')
  counts = np.zeros((num_classes, num_classes))
  np.add.at(counts, (labels, preds), 1)
  totals = counts.sum(axis=1, keepdims=True)
  return np.divide(counts, totals, out=np.full_like(counts, np.nan), where=totals > 0)


def plot_confusion(probs, labels, names: list[str], path: str, title: str = 'Confusion matrix') -> str:
  """The row-normalised confusion matrix of argmax(probs [N, C]) against labels [N], classes named on both axes."""
  probs, labels = np.asarray(probs), np.asarray(labels)
  if probs.shape != (len(labels), len(names)):
    raise ValueError(f'probs {probs.shape} must be [videos, classes] = [{len(labels)}, {len(names)}]')
  preds = probs.argmax(axis=1)
  matrix = confusion(labels, preds, len(names))
  n = len(names)
  # Room for the names at 8 pt (about 0.06 in a character) plus 0.3 in a class, so no tick label overlaps.
  names_room = 0.06 * max(len(name) for name in names) + 0.6
  side = max(4.0, 0.3 * n)
  fig = _figure(side + names_room + 1.2, side + names_room + 0.6)
  ax = fig.add_subplot()
  cmap = matplotlib.colormaps['Blues'].with_extremes(bad='lightgrey')
  image = ax.imshow(matrix, cmap=cmap, vmin=0, vmax=1)
  ax.set_xticks(range(n), names, rotation=90, fontsize=8)
  ax.set_yticks(range(n), names, fontsize=8)
  ax.set(xlabel='predicted class', ylabel='true class')
  ax.set_title(f'{title}: top-1 {100 * np.mean(preds == labels):.1f}% over {len(labels)} videos')
  fig.colorbar(image, ax=ax, shrink=0.8, label='fraction of the true class')
  if n <= MAX_ANNOTATED_CLASSES:
    _annotate(ax, matrix)
  fig.savefig(path)
  return path


def _annotate(ax, matrix: np.ndarray):
  for (row, col), value in np.ndenumerate(matrix):
    if value > 0:
      ax.text(col, row, f'{value:.2f}', ha='center', va='center', fontsize=7,
              color='white' if value > 0.5 else 'black')


# ------------------------------------------------------------------------------------------------------------------
# Example clips.


def pick_examples(correct, count: int) -> np.ndarray:
  """Indices of `count` videos spread over the list: up to half of them misclassified ones, so the examples show
  errors as well as successes when there are any; sorted."""
  correct = np.asarray(correct, bool)
  wrong, right = np.flatnonzero(~correct), np.flatnonzero(correct)
  num_wrong = min(len(wrong), count // 2)
  num_right = min(len(right), count - num_wrong)
  num_wrong = min(len(wrong), count - num_right)
  return np.sort(np.concatenate([_spread(wrong, num_wrong), _spread(right, num_right)]))


def _spread(indices: np.ndarray, count: int) -> np.ndarray:
  """`count` of `indices`, evenly spaced over them."""
  return indices[np.arange(count) * len(indices) // count] if count else indices[:0]


def frame_strip(clips, titles: list[str], path: str, correct=None) -> str:
  """One row per clip (uint8 [T, H, W, 3]), its frames side by side under its title; `correct[i]` colours row i's
  title green (True) or red (False)."""
  if len(clips) != len(titles) or (correct is not None and len(correct) != len(clips)) or not clips:
    raise ValueError(f'frame_strip needs one title (and correct flag) per clip, and a clip: {len(clips)} clips, '
                     f'{len(titles)} titles')
  strips = [_side_by_side(np.asarray(clip)) for clip in clips]
  width = 12.0
  heights = [width * s.shape[0] / s.shape[1] + 0.35 for s in strips]  # + 0.35 in for the title
  fig = _figure(width, sum(heights))
  axes = fig.subplots(len(strips), 1, squeeze=False, gridspec_kw={'height_ratios': heights})[:, 0]
  for i, (ax, strip, title) in enumerate(zip(axes, strips, titles)):
    ax.imshow(strip, interpolation='nearest')
    ax.set_axis_off()
    colour = 'black' if correct is None else ('green' if correct[i] else 'red')
    ax.set_title(title, color=colour, loc='left', fontsize=10)
  fig.savefig(path)
  return path


def _side_by_side(clip: np.ndarray, gap: int = 2) -> np.ndarray:
  """Frames [T, H, W, 3] -> [H, T * (W + gap) - gap, 3], white between frames."""
  if clip.ndim != 4 or clip.shape[-1] != 3:
    raise ValueError(f'a clip must be uint8 [T, H, W, 3], got {clip.shape}')
  white = np.full((clip.shape[1], gap, 3), 255, np.uint8)
  parts = [part for frame in clip for part in (frame, white)][:-1]
  return np.concatenate(parts, axis=1)


def example_title(true_name: str, pred_name: str, prob: float) -> str:
  return f'true: {true_name}   predicted: {pred_name} ({prob:.2f})'


# ------------------------------------------------------------------------------------------------------------------
# The results table.


def check_results(results: dict) -> None:
  """Raises ValueError naming each way `results` departs from the results.json layout (module docstring)."""
  problems = []
  evaluations, runs = results.get('evaluations'), results.get('runs')
  if not isinstance(evaluations, dict) or not evaluations:
    problems.append('"evaluations" must map each evaluation to {"classes", "about"}')
    evaluations = {}
  if not isinstance(runs, dict) or not runs:
    problems.append('"runs" must map each run to {evaluation: results}')
    runs = {}
  for name, meta in evaluations.items():
    classes = meta.get('classes') if isinstance(meta, dict) else None
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
      problems.append(f'evaluation {name!r}: "classes" must be a positive integer, got {classes!r}')
  for run, scores in runs.items():
    for name, result in (scores.items() if isinstance(scores, dict) else ()):
      if name not in evaluations:
        problems.append(f'run {run!r}: evaluation {name!r} is not listed under "evaluations"')
      if not isinstance(result, dict) or not isinstance(result.get('top1'), (int, float)):
        problems.append(f'run {run!r}, evaluation {name!r}: no numeric "top1"')
  if problems:
    raise ValueError('results: ' + '; '.join(problems))


def results_table(results: dict) -> str:
  """A markdown table of top-1 (%) with runs as rows and evaluations as columns, a chance row, and one line per
  evaluation saying what it measures."""
  check_results(results)
  evaluations = results['evaluations']
  lines = ['| run | ' + ' | '.join(evaluations) + ' |', '|---|' + '---:|' * len(evaluations)]
  for run, scores in results['runs'].items():
    cells = (f'{scores[name]["top1"]:.1f}' if name in scores else '—' for name in evaluations)
    lines.append(f'| {run} | ' + ' | '.join(cells) + ' |')
  lines.append('| *chance* | ' + ' | '.join(f'*{100 / meta["classes"]:.1f}*' for meta in evaluations.values()) + ' |')
  lines += ['', 'Each number is top-1 accuracy in percent: the share of the evaluation\'s videos whose '
            'highest-scoring class is the true one, every video counted once. Chance is 100 / classes.', '']
  lines += [f'- **{name}** ({meta["classes"]} classes): {meta.get("about", "")}' for name, meta in evaluations.items()]
  return '\n'.join(lines) + '\n'


# ------------------------------------------------------------------------------------------------------------------
# The report.


def _run_data(run_dir: str) -> ml_collections.ConfigDict:
  """The data section of the config a run was trained with."""
  with open(os.path.join(run_dir, 'config.json')) as f:
    return ml_collections.ConfigDict(json.load(f)['data'])


def _val_predictions(run_dir: str, data, names: list[str]):
  """(records, probs [N, C], labels [N], kept [N] record indices, skipped [(path, error)]) of the run's
  validation videos."""
  records = inputs.records(data, data.val_list, names)
  predictions = predict([r.path for r in records], model=run_dir, labels=data.label_list)
  kept = [i for i, p in enumerate(predictions) if p.error is None]
  skipped = [(p.path, p.error) for p in predictions if p.error is not None]
  if not kept:
    raise ValueError(f'none of the {len(records)} videos of {data.val_list} could be predicted: {skipped[:3]}')
  probs = np.stack([predictions[i].probs for i in kept])
  labels = np.array([records[i].label for i in kept])
  return records, probs, labels, kept, skipped


def _sampled_frames(data, names: list[str], indices) -> list[np.ndarray]:
  """Each validation video's frames as the evaluation samples them for one view, before the crop."""
  source = inputs.source(data, data.val_list, names)
  sampler = sampling.SegmentSampler(data.num_segments, data.seg_length)
  return [source.read(i, lambda n: sampler.eval(n)[0]) for i in indices]


def write(workdir: str) -> str:
  """Writes WORKDIR/plots/*.png and WORKDIR/report.md from the demo work dir; returns report.md's path."""
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  check_results(results)
  runs = {run: os.path.join(workdir, run) for run in results['runs']}
  if CONFUSION_RUN not in runs:
    raise ValueError(f'results.json has no run {CONFUSION_RUN!r} to draw the confusion matrix of: {list(runs)}')
  plots = os.path.join(workdir, PLOTS_DIR)
  os.makedirs(plots, exist_ok=True)

  data = _run_data(runs[CONFUSION_RUN])
  names = inputs.label_names(data)
  plot_curves(runs, os.path.join(plots, 'curves.png'), chance=100 / len(names))
  records, probs, labels, kept, skipped = _val_predictions(runs[CONFUSION_RUN], data, names)
  plot_confusion(probs, labels, names, os.path.join(plots, 'confusion.png'),
                 title=f'{CONFUSION_RUN} on validation')
  preds = probs.argmax(axis=1)
  chosen = pick_examples(preds == labels, NUM_EXAMPLES)
  frame_strip(_sampled_frames(data, names, [kept[i] for i in chosen]),
              [example_title(names[labels[i]], names[preds[i]], probs[i, preds[i]]) for i in chosen],
              os.path.join(plots, 'examples.png'), correct=[preds[i] == labels[i] for i in chosen])

  path = os.path.join(workdir, 'report.md')
  with open(path, 'w') as f:
    f.write(_markdown(results, len(records), skipped, data.num_segments * data.seg_length))
  return path


def _markdown(results: dict, num_val: int, skipped: list[tuple[str, str]], num_frames: int) -> str:
  lines = ['# ActionCLIP-JAX demo report', '', '## Results', '', results_table(results),
           '## Training curves', '',
           f'![Training loss and validation top-1 of the runs]({PLOTS_DIR}/curves.png)', '',
           'Left: the training loss logged during each run. Right: closed-set top-1 on the validation videos at '
           'each evaluation the trainer ran; the dashed line is chance.', '',
           f'## Confusion matrix: {CONFUSION_RUN} on validation', '',
           f'![Confusion matrix of {CONFUSION_RUN} on the validation videos]({PLOTS_DIR}/confusion.png)', '',
           f'Rows are the true classes, columns the predicted ones (the highest probability), over '
           f'{num_val - len(skipped)} of the {num_val} validation videos; each row is the fraction of that class\'s '
           'videos given each prediction, so a perfect model is a dark diagonal.', '']
  if skipped:
    lines += [f'Left out, as they could not be read ({len(skipped)}):', '']
    lines += [f'- `{path}`: {error}' for path, error in skipped] + ['']
  lines += ['## Example clips', '',
            f'![Validation clips with their true and predicted classes]({PLOTS_DIR}/examples.png)', '',
            f'Each row is one validation video: the {num_frames} frames sampled for the model (before the centre '
            f'crop), its true class, and {CONFUSION_RUN}\'s prediction with its probability (green: right, red: '
            'wrong).', '']
  return '\n'.join(lines)


# ------------------------------------------------------------------------------------------------------------------
# The multi-label demo's report (`python -m actionclip_jax.demo --multilabel`).


def plot_per_class_ap(per_class: dict[str, dict[str, float]], chance: float, path: str, title: str) -> str:
  """Each class's AP (%) as a bar per run (classes in order of their mean AP), and the chance mAP dashed."""
  runs = list(per_class)
  classes = sorted(per_class[runs[0]], key=lambda c: -np.mean([per_class[r].get(c, np.nan) for r in runs]))
  fig = _figure(max(8.0, 0.3 * len(classes) + 2), 5)
  ax = fig.subplots()
  width = 0.8 / len(runs)
  for i, run in enumerate(runs):
    ax.bar(np.arange(len(classes)) + (i - (len(runs) - 1) / 2) * width,
           [per_class[run].get(c, np.nan) for c in classes], width, label=run)
  ax.axhline(chance, color='grey', linestyle='--', label=f'chance mAP ({chance:.1f}%)')
  ax.set_xticks(np.arange(len(classes)), classes, rotation=90, fontsize=7)
  ax.set(title=title, ylabel='AP (%)', ylim=(0, 100))
  ax.legend()
  fig.savefig(path)
  return path


def write_multilabel(workdir: str) -> str:
  """WORKDIR/plots/{curves,per_class_ap}.png and WORKDIR/report.md of the multi-label demo; returns report.md's path."""
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  runs = {run: os.path.join(workdir, run) for run in results['runs']}
  summary = results['summary']
  plots = os.path.join(workdir, PLOTS_DIR)
  os.makedirs(plots, exist_ok=True)
  plot_curves(runs, os.path.join(plots, 'curves.png'), chance=summary['val']['chance_mAP'], metric='mAP')
  plot_per_class_ap({run: r['val']['per_class_ap'] for run, r in results['runs'].items()},
                    summary['val']['chance_mAP'], os.path.join(plots, 'per_class_ap.png'),
                    'Validation AP of each class')
  lines = ['# ActionCLIP-JAX multi-label demo report', '', '## Results', '',
           '| run | val mAP | zero-shot mAP (held-out classes) |', '|---|---:|---:|']
  lines += [f'| {run} | {r["val"]["mAP"]:.1f} | {r["zero_shot"]["mAP"]:.1f} |' for run, r in results['runs'].items()]
  val, zero_shot = summary['val'], summary['zero_shot']
  lines += [f'| mean (spread) | {val["mean"]:.1f} ({val["spread"]:.1f}) | {zero_shot["mean"]:.1f} '
            f'({zero_shot["spread"]:.1f}) |',
            f'| *chance* | *{val["chance_mAP"]:.1f}* | *{zero_shot["chance_mAP"]:.1f}* |',
            '', f'mAP is the mean over the classes of their average precision, in percent ({val["classes"]} '
            f'validation classes, {zero_shot["classes"]} held-out ones); chance is what random scores give, each '
            'class\'s share of the videos. Each video shows two objects, each with its own verb, and has both '
            'classes; the held-out combinations were never trained on.', '',
            '## Training curves', '', f'![Training loss and validation mAP]({PLOTS_DIR}/curves.png)', '',
            '## Per-class AP', '', f'![Validation AP of each class]({PLOTS_DIR}/per_class_ap.png)', '']
  path = os.path.join(workdir, 'report.md')
  with open(path, 'w') as f:
    f.write('\n'.join(lines))
  return path


def main(argv=None):
  parser = argparse.ArgumentParser(description='Plots and report.md of a demo work dir.')
  parser.add_argument('--workdir', required=True)
  print(write(parser.parse_args(argv).workdir))


if __name__ == '__main__':
  main()
