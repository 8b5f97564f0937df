"""Evaluation: closed-set (`eval`), zero-shot (full, half-class, per-split and Kinetics-600 protocols) and few-shot.

Scores follow the official test.py: 100 * cos(video, each template of each class), a softmax over classes per
template, the mean over templates; with several views (clips x crops) the per-view probabilities are averaged per
video. A protocol that classifies among a subset of the classes takes the softmax over that subset, per view and
template, then averages the same way. Every validation video counts exactly once (padding is masked out; with
`eval.drop_last` the official test's last partial batch is left out). Results go to WORKDIR/eval_*.json, with what
was measured: each list's sha256 and video counts (listed, scored, skipped as unreadable, dropped), the views,
templates, compute dtype and the checkpoint's sha256. A closed-set `--mode=eval` also writes each video's predicted
class to WORKDIR/predictions_*.csv.
"""
from __future__ import annotations

import functools
import hashlib
import os

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from actionclip_jax import labels as label_lists
from actionclip_jax.model import prompts, video
from actionclip_jax.runs import builders, fewshot, inputs, metrics, scoring, sharding
from data_pipelines import bad_videos
from data_pipelines.pipeline import global_batch


def accuracy(probs: np.ndarray, labels: np.ndarray) -> dict:
  """top-1, top-5 (top-k with k = min(5, classes)) and mean class accuracy, in percent."""
  if not len(labels):
    raise ValueError('accuracy of zero videos is undefined')
  k = min(5, probs.shape[1])
  top = np.argsort(-probs, axis=1)[:, :k]
  hit1 = top[:, 0] == labels
  per_class = [hit1[labels == c].mean() for c in np.unique(labels)]
  return {'top1': 100 * float(hit1.mean()), f'top{k}': 100 * float((top == labels[:, None]).any(1).mean()),
          'mean_class': 100 * float(np.mean(per_class)), 'videos': int(len(labels))}


# ------------------------------------------------------------------------------------------------------------------
# Multi-label videos (data.multilabel): mean average precision over the classes, the Charades standard.


def _thresholds(scores: np.ndarray, positives: np.ndarray):
  """Scores sorted high to low, and at each distinct score (tied scores are one threshold) the index of its last
  pair and the positives at or above it: (sorted scores, last [M], true positives [M])."""
  order = np.argsort(-scores, kind='stable')
  scores = scores[order]
  last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
  return scores, last, np.cumsum(positives[order].astype(np.float64))[last]


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
  """Non-interpolated AP of one class: the mean over its positives of the precision at their rank, with tied
  scores taken as one threshold (scikit-learn's `average_precision_score`; the Charades evaluation script's where no
  scores tie). Needs at least one positive."""
  _, last, true_pos = _thresholds(scores, positives)
  precision = true_pos / (last + 1)
  recall_gain = np.diff(np.r_[0.0, true_pos]) / true_pos[-1]
  return float((precision * recall_gain).sum())


def best_threshold(probs: np.ndarray, labels: np.ndarray) -> dict:
  """The probability above which a class is predicted that maximizes micro-F1 over every (video, class) pair, and
  that F1: what `predict` uses to name every class of a multi-label video."""
  truth = labels.ravel().astype(bool)
  flat, last, true_pos = _thresholds(probs.ravel(), truth)  # predicting the pairs up to last[i]: ties together
  f1 = 2 * true_pos / (last + 1 + truth.sum())
  best = int(np.argmax(f1))
  # Halfway to the next lower score, so the chosen pairs stay above it with some slack.
  lower = flat[last[best] + 1] if last[best] + 1 < len(flat) else 0.0
  return {'threshold': float((flat[last[best]] + lower) / 2), 'micro_f1': 100 * float(f1[best])}


def multilabel_metrics(probs: np.ndarray, labels: np.ndarray, names: list[str]) -> dict:
  """mAP (in percent) over the classes with at least one positive among the videos; the others are excluded and
  named. Also each class's AP, the chance mAP (each scored class's prevalence: random scores' expected AP), and
  the micro-F1-best threshold. probs, labels: [N videos, C]."""
  if not len(labels):
    raise ValueError('mAP of zero videos is undefined')
  labels = labels.astype(bool)
  scored = np.flatnonzero(labels.any(axis=0))
  if not len(scored):
    raise ValueError(f'none of the {len(names)} classes has a positive among the {len(labels)} videos: no AP')
  per_class = {names[c]: 100 * average_precision(probs[:, c], labels[:, c]) for c in scored}
  return {'mAP': float(np.mean(list(per_class.values()))), 'classes_scored': int(len(scored)),
          'classes_without_positives': [names[c] for c in np.flatnonzero(~labels.any(axis=0))],
          'chance_mAP': 100 * float(labels[:, scored].mean()), 'per_class_ap': per_class,
          **best_threshold(probs, labels), 'videos': int(len(labels))}


THRESHOLD_FILE = 'multilabel_threshold.json'  # in WORKDIR: the last multi-label evaluation's best_threshold


def headline(results: dict) -> float:
  """The number a run's best checkpoint is chosen by: mAP for multi-label evaluations, else top-1."""
  return results['mAP'] if 'mAP' in results else results['top1']


# ------------------------------------------------------------------------------------------------------------------


def eval_source(config, list_path: str, names: list[str]):
  return inputs.source(config.data, list_path, names, prescale=config.eval.prescale)


def video_representations(config, workdir: str, module, params, mesh, list_path: str, names: list[str], src=None,
                          stats: dict | None = None):
  """For each eval batch: (pooled [B*V, D], tokens [B*V, T', D], labels [B] (multi-label: multi-hot [B, C]), mask
  [B], video_ids [B]), replicated on every process, so each sees every video's scores; `mask` drops padding and bad
  videos. `src` (default: the list's source) is what is read; `stats` gets the video counts. Raises ValueError after
  the last batch if no video could be read."""
  full = src if src is not None else eval_source(config, list_path, names)
  src, data = inputs.eval_dataset(config, workdir, list_path, names, src=full)
  repr_fn, gather = _repr_fns(module, mesh)
  videos = 0
  for batch in data:
    batch = global_batch(batch, mesh, sharding.BATCH_AXES)
    pooled, tokens = repr_fn(params, batch['frames'])
    labels = batch['labels'] if 'labels' in batch else batch['label']
    labels, mask, ids = (np.asarray(x) for x in gather((labels, batch['mask'], batch['video_id'])))
    videos += int(mask.sum())
    yield pooled, tokens, labels, mask, ids
  if stats is not None:
    stats.update(videos_listed=len(full), videos_dropped=len(full) - len(src), videos_scored=videos,
                 videos_skipped=len(src) - videos)
  if not videos:
    raise ValueError(f'Evaluation of {list_path}: 0 of its {len(src)} videos could be read, so there is nothing to '
                     f'score; each bad video and why is in {os.path.join(workdir, bad_videos.FILENAME)}')


@functools.cache
def _repr_fns(module, mesh):
  """The jitted video encoder and gather, once per model and mesh (several lists and passes reuse them)."""
  return (jax.jit(functools.partial(scoring.video_repr, module), out_shardings=sharding.replicated(mesh)),
          jax.jit(lambda x: x, out_shardings=sharding.replicated(mesh)))


def collect_probs(config, workdir: str, module, params, mesh, list_path: str, names: list[str], texts,
                  subsets=None, src=None, stats=None):
  """Class probabilities of every video among each class subset (default: all classes): a list of [N, |subset|]
  (softmax over the subset per view and template, then the template mean, then the view mean; with
  solver.loss=sigmoid, each class's sigmoid, `scoring.sigmoid_probs`), labels [N] (multi-label: [N, C]) and video
  ids [N]."""
  k = len(config.network.templates) if config.network.templates else len(prompts.TEMPLATES)
  subsets = [np.arange(len(names))] if subsets is None else subsets
  probs_of = scoring.subset_probs
  if config.solver.get('loss', 'kl') == 'sigmoid':
    probs_of = functools.partial(scoring.sigmoid_probs, logit_scale=params['clip']['logit_scale'],
                                 bias=config.solver.sigmoid_bias)
  probs, all_labels, all_ids = [[] for _ in subsets], [], []
  for pooled, tokens, labels, mask, ids in video_representations(config, workdir, module, params, mesh, list_path,
                                                                  names, src=src, stats=stats):
    scores = scoring.scores(module, params, pooled, tokens, texts).reshape(len(labels), -1, k, len(names))
    for out, subset in zip(probs, subsets):
      out.append(probs_of(scores, subset)[mask])
    all_labels.append(labels[mask])
    all_ids.append(ids[mask])
  return [np.concatenate(p) for p in probs], np.concatenate(all_labels), np.concatenate(all_ids)


def evaluate_params(config, workdir: str, module, params, mesh, names: list[str]) -> dict:
  """Closed-set evaluation of `params` (the trainer's, in network.dtype) on data.val_list with the classes
  `names`, with what it measured (the checkpoint: the training state of the step it is recorded under)."""
  table = builders.class_table(config, names, module.config.clip.context_length)
  texts = scoring.encode_texts(module, params, table.reshape(-1, table.shape[-1]))
  # Not yet saved (a step's evaluation runs before its checkpoint): named by the step in the result's name.
  measured = _measured(config, module.config, {'path': None, 'sha256': None, 'state': 'training'})
  results = _closed_set(config, workdir, module, params, mesh, names, texts, measured, config.data.val_list)
  return {**results, 'measured': measured}


def _measured(config, mcfg, checkpoint: dict) -> dict:
  templates = list(config.network.templates) if config.network.templates else list(prompts.TEMPLATES)
  return {'lists': [], 'views': {'clips': config.eval.num_clips, 'crops': config.eval.num_crops,
                                 'per_video': config.eval.num_clips * config.eval.num_crops},
          'templates': templates, 'dtype': mcfg.clip.dtype, 'prescale': config.eval.prescale,
          'drop_last': config.eval.drop_last, 'checkpoint': checkpoint}


# ------------------------------------------------------------------------------------------------------------------
# Zero-shot protocols: accuracy among class subsets, mean +- std over them.


def subset_accuracy(probs: np.ndarray, labels: np.ndarray, subset: np.ndarray) -> dict:
  """Accuracy of the videos of `subset`'s classes, classified among them: probs [N, |subset|] (see collect_probs)."""
  keep = np.isin(labels, subset)
  return accuracy(probs[keep], np.searchsorted(subset, labels[keep]))


def half_class_subsets(num_classes: int, splits: int, seed: int) -> list[np.ndarray]:
  """`splits` random halves of the classes (sorted class ids)."""
  rng = np.random.default_rng(seed)
  return [np.sort(rng.permutation(num_classes)[:num_classes // 2]) for _ in range(splits)]


def random_subsets(classes: np.ndarray, size: int, count: int, seed: int) -> list[np.ndarray]:
  """`count` random subsets of `size` of `classes` (Kinetics-600: 3 x 160 of the 220 novel classes)."""
  if size > len(classes):
    raise ValueError(f'eval.subset_classes={size} but only {len(classes)} classes are left to draw from')
  rng = np.random.default_rng(seed)
  return [np.sort(rng.permutation(classes)[:size]) for _ in range(count)]


def novel_classes(names: list[str], known_label_list: str) -> np.ndarray:
  """Ids of the classes of `names` not in the label CSV (or shipped list) `known_label_list`, compared by
  `labels.canonical`, so K400's and K600's spellings of a class match."""
  if not known_label_list:
    return np.arange(len(names))
  known = {label_lists.canonical(n) for n in label_lists.read(known_label_list)}
  return np.asarray([i for i, n in enumerate(names) if label_lists.canonical(n) not in known], np.int64)


def mean_std(per_split: list[dict], keys=('top1', 'top5', 'mean_class')) -> dict:
  out = {}
  for key in keys:
    values = [r[key] for r in per_split if key in r]
    if values:
      out[f'{key}_mean'], out[f'{key}_std'] = float(np.mean(values)), float(np.std(values))
  return out


def zero_shot(config, workdir, module, params, mesh, names, texts, measured: dict) -> dict:
  """eval.protocol: full | half | splits | k600 (see configs/zero_shot.py)."""
  e = config.eval
  lists = list(config.data.val_lists or ()) or [config.data.val_list]
  if e.protocol == 'splits':
    per_split = []
    for path in lists:
      stats = _list_stats(path)
      (probs,), labels, _ = collect_probs(config, workdir, module, params, mesh, path, names, texts, stats=stats)
      measured['lists'].append(stats)
      per_split.append({'list': path, **accuracy(probs, labels)})
    return _summary(per_split)
  if e.protocol == 'full':
    return _closed_set(config, workdir, module, params, mesh, names, texts, measured, config.data.val_list)
  if e.protocol == 'half':
    subsets = half_class_subsets(len(names), e.half_splits, config.seed)
  elif e.k600_splits:  # k600 on named class lists: the literature's three splits, or any
    subsets = [np.asarray(s, np.int64) for s in label_lists.split_subsets(names, e.k600_splits)]
  else:  # k600 on random subsets of the novel classes
    novel = novel_classes(names, e.known_label_list)
    subsets = random_subsets(novel, e.subset_classes, e.subsets, config.seed)
  # Every listed video once: a video in several lists (the splits' train and test lists together are the whole
  # dataset) is scored once.
  src = _union_source(config, lists, names)
  stats = {'path': ' + '.join(lists), 'sha256': _sha256_files(lists), 'videos_in_lists': src.listed}
  probs, labels, _ = collect_probs(config, workdir, module, params, mesh, lists[0], names, texts, subsets, src=src,
                                   stats=stats)
  measured['lists'].append(stats)
  per_split = [{'classes': [names[i] for i in subset], **subset_accuracy(p, labels, subset)}
               for p, subset in zip(probs, subsets)]
  return _summary(per_split)


def _summary(per_split: list[dict]) -> dict:
  out = mean_std(per_split)
  out['top1'] = out['top1_mean']  # the headline number: the mean over splits
  out['splits'] = len(per_split)
  out['top1_per_split'] = [r['top1'] for r in per_split]
  out['per_split'] = per_split
  return out


class _Subset:
  """Videos `indices` of a source (few-shot's K shots; zero-shot's union of lists), in that order."""

  def __init__(self, src, indices, listed: int | None = None):
    self.src, self.indices = src, [int(i) for i in indices]
    self.listed = len(self.indices) if listed is None else listed

  def __len__(self):
    return len(self.indices)

  def __getitem__(self, index):
    return self.src[self.indices[index]]

  def read(self, index, pick):
    return self.src.read(self.indices[index], pick)


class _Concat:
  def __init__(self, sources):
    self.sources = sources
    self.starts = np.cumsum([0] + [len(s) for s in sources])

  def __len__(self):
    return int(self.starts[-1])

  def _locate(self, index):
    if not 0 <= index < len(self):
      raise IndexError(index)
    part = int(np.searchsorted(self.starts, index, side='right')) - 1
    return self.sources[part], index - int(self.starts[part])

  def __getitem__(self, index):
    src, i = self._locate(index)
    return src[i]

  def read(self, index, pick):
    src, i = self._locate(index)
    return src.read(i, pick)


def _union_source(config, lists, names):
  sources = [eval_source(config, path, names) for path in lists]
  both = _Concat(sources) if len(sources) > 1 else sources[0]
  seen, keep = set(), []
  for i in range(len(both)):
    if both[i].path not in seen:
      seen.add(both[i].path)
      keep.append(i)
  return _Subset(both, keep, listed=len(both))


# ------------------------------------------------------------------------------------------------------------------
# What a result measured.


def _sha256_files(paths) -> str:
  digest = hashlib.sha256()
  for path in paths:
    if os.path.isdir(path):  # a packed dataset: its records list names every video
      path = os.path.join(path, 'records.jsonl')
    with open(path, 'rb') as f:
      for block in iter(lambda: f.read(1 << 20), b''):
        digest.update(block)
  return digest.hexdigest()


def _tree_sha256(directory: str) -> str:
  """A manifest hash of a directory: every file's relative path, size and content, in sorted order."""
  digest = hashlib.sha256()
  for root, dirs, files in sorted(os.walk(directory)):
    dirs.sort()
    for name in sorted(files):
      path = os.path.join(root, name)
      digest.update(f'{os.path.relpath(path, directory)}\0{os.path.getsize(path)}\0'.encode())
      digest.update(bytes.fromhex(_sha256_files([path])))
  return digest.hexdigest()


def _list_stats(path: str) -> dict:
  return {'path': path, 'sha256': _sha256_files([path])}


def _checkpoint_record(config, workdir: str) -> dict:
  """What was evaluated: this work dir's latest checkpoint (its directory's manifest hash), else init_from (the
  file's sha256, or a run directory's latest checkpoint's manifest hash)."""
  for path in (workdir, config.init_from):
    if not path:
      continue
    if os.path.isfile(path):
      return {'path': path, 'sha256': _sha256_files([path])}
    for sub in ('checkpoints', 'best'):
      directory = os.path.join(path, sub)
      steps = sorted(int(s) for s in os.listdir(directory) if s.isdigit()) if os.path.isdir(directory) else []
      if steps:
        step_dir = os.path.join(directory, str(steps[-1]))
        return {'path': step_dir, 'step': steps[-1], 'sha256': _tree_sha256(step_dir)}
  return {'path': config.init_from, 'sha256': None}


# ------------------------------------------------------------------------------------------------------------------


def load_params(config, workdir: str, module, mesh):
  """The params to evaluate, sharded: this work dir's latest checkpoint, else init_from (any accepted one). Parts
  the source lacks (a plain CLIP's visual prompt) are random; only then is the initializer compiled."""
  mcfg = module.config
  abstract, shardings = builders.abstract_params(functools.partial(video.init_params, mcfg), config, mesh)
  if os.path.isdir(os.path.join(workdir, 'checkpoints')):
    source = workdir
  elif config.init_from:
    source = config.init_from
  else:
    raise ValueError(f'Nothing to evaluate: {workdir} has no checkpoint and init_from is empty')
  params = builders.init_from(source, abstract)
  missing = [name for name, part in params.items()
             if any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree_util.tree_leaves(part))]
  if missing:
    init = jax.jit(lambda r: video.init_params(mcfg, r), out_shardings=shardings)(jax.random.key(config.seed))
    params = {name: init[name] if name in missing else part for name, part in params.items()}
  return params


def model_config(config) -> video.ActionCLIPConfig:
  """builders.model_config with the compute dtype eval.dtype (when set)."""
  mcfg = builders.model_config(config)
  if config.eval.dtype:
    mcfg = mcfg.replace(clip=mcfg.clip.replace(dtype=config.eval.dtype))
  return mcfg


def run(config, workdir: str, mode: str) -> dict:
  """`--mode=eval|zero_shot|few_shot`: evaluate and write WORKDIR/eval_<mode>_<name>.json (and, for a closed-set
  evaluation, WORKDIR/predictions_<mode>_<name>.csv: each video's list line, label and predicted class)."""
  builders.write_config(config, workdir)
  mcfg = model_config(config)
  module = video.ActionCLIP(mcfg)
  mesh = sharding.make_mesh(config.mesh)
  params = load_params(config, workdir, module, mesh)
  names = inputs.label_names(config.data)
  table = builders.class_table(config, names, mcfg.clip.context_length)
  texts = scoring.encode_texts(module, params, table.reshape(-1, table.shape[-1]))
  measured = _measured(config, mcfg, _checkpoint_record(config, workdir))
  name = f'{mode}_{config.eval.name}'
  if mode == 'few_shot':
    results = few_shot(config, workdir, module, params, mesh, names, texts, table.shape[0], measured)
  elif mode == 'zero_shot':
    results = zero_shot(config, workdir, module, params, mesh, names, texts, measured)
  else:
    results = _closed_set(config, workdir, module, params, mesh, names, texts, measured, config.data.val_list,
                          predictions=os.path.join(workdir, f'predictions_{name}.csv'))
  results['measured'] = measured
  with metrics.MetricWriter(workdir, enabled=jax.process_index() == 0) as writer:
    writer.write_eval(name, results)
  logging.info('%s: %s', mode, {k: v for k, v in results.items() if k not in ('per_split', 'per_seed', 'measured')})
  if 'top1_std' in results and jax.process_index() == 0:
    print(f'{name}: top-1 {results["top1_mean"]:.2f} +- {results["top1_std"]:.2f} over {results["splits"]} '
          f'{"seeds" if mode == "few_shot" else "splits"}: ' +
          ', '.join(f'{t:.2f}' for t in results['top1_per_split']), flush=True)
  return results


def _closed_set(config, workdir, module, params, mesh, names, texts, measured, list_path, predictions=None) -> dict:
  stats = _list_stats(list_path)
  (probs,), labels, ids = collect_probs(config, workdir, module, params, mesh, list_path, names, texts,
                                        stats=stats)
  measured['lists'].append(stats)
  if labels.ndim == 2:  # multi-label
    results = multilabel_metrics(probs, labels, names)
    if jax.process_index() == 0:
      metrics.write_json(os.path.join(workdir, THRESHOLD_FILE), {
          'threshold': results['threshold'], 'micro_f1': results['micro_f1'], 'list': list_path})
    return results
  if predictions and jax.process_index() == 0:
    with open(predictions, 'w') as f:
      f.write('video_id,label,prediction\n')
      f.writelines(f'{i},{y},{p}\n' for i, y, p in zip(ids, labels, probs.argmax(axis=1)))
  return accuracy(probs, labels)


# ------------------------------------------------------------------------------------------------------------------
# Few-shot: Lin et al.'s cross-modal linear probe on frozen features, over several draws of K shots.


def few_shot(config, workdir, module, params, mesh, names, texts, num_templates, measured) -> dict:
  """For each seed of eval.fewshot_seeds: K videos per class drawn from data.train_list, `fewshot.adapt` (grid
  search on a validation split carved from them, early stopping, refit), top-1 on data.val_list. Reported as the
  mean +- std over the seeds, with each seed's numbers and choices."""
  e = config.eval
  train_src = eval_source(config, config.data.train_list, names)
  draws = {seed: fewshot.k_shot_indices([train_src[i].label for i in range(len(train_src))], e.shots, seed)
           for seed in e.fewshot_seeds}
  for seed, chosen in draws.items():
    _write_k_shot_list(config, workdir, train_src, chosen, names, seed)
  union = np.unique(np.concatenate(list(draws.values())))
  stats = {**_list_stats(_list_file(config.data.train_list)), 'shots': e.shots}
  union_feats, union_labels = _pooled_features(config, workdir, module, params, mesh, config.data.train_list, names,
                                               src=_Subset(train_src, union), stats=stats)
  if len(union_labels) != len(union):
    raise ValueError(f'few-shot: {len(union) - len(union_labels)} of the {len(union)} K-shot videos could not be '
                     f'read (see {os.path.join(workdir, bad_videos.FILENAME)}); replace them in data.train_list')
  val_stats = _list_stats(_list_file(config.data.val_list))
  val_feats, val_labels = _pooled_features(config, workdir, module, params, mesh, config.data.val_list, names,
                                           stats=val_stats)
  measured['lists'] += [stats, val_stats]
  measured['views'] = {'clips': 1, 'crops': 1, 'per_video': 1}
  text_emb = np.asarray(texts[0]).reshape(num_templates, len(names), -1)
  recipe = fewshot.Recipe(steps=e.fewshot_steps, warmup=e.fewshot_warmup, batch_size=e.fewshot_batch_size,
                          learning_rates=tuple(e.fewshot_lrs), weight_decays=tuple(e.fewshot_wds),
                          eval_every=e.fewshot_eval_every)
  zero = accuracy(np.asarray(fewshot.predict(fewshot.zero_shot_classifier(text_emb), val_feats)), val_labels)
  per_seed = []
  for seed, chosen in draws.items():
    rows = np.searchsorted(union, chosen)
    clf, chosen_hp = fewshot.adapt(union_feats[rows], union_labels[rows], text_emb, seed=seed, recipe=recipe)
    probs = np.asarray(jax.nn.softmax(fewshot.predict(clf, val_feats), axis=-1))
    per_seed.append({'seed': seed, **accuracy(probs, val_labels), **chosen_hp})
  out = _summary(per_seed)
  out.pop('per_split')
  return {**out, 'per_seed': per_seed, 'shots': e.shots, 'videos': int(len(val_labels)),
          'zero_shot_top1': zero['top1'], 'logit_scale': fewshot.LOGIT_SCALE,
          'recipe': {'steps': recipe.steps, 'warmup': recipe.warmup, 'batch_size': recipe.batch_size,
                     'learning_rates': list(recipe.learning_rates), 'weight_decays': list(recipe.weight_decays),
                     'eval_every': recipe.every(), 'optimizer': 'adamw, linear warm-up, cosine'}}


def _list_file(path: str) -> str:
  return os.path.join(path, 'records.jsonl') if os.path.isdir(path) else path


def _write_k_shot_list(config, workdir: str, src, chosen, names, seed: int) -> str:
  """The K-shot draw as a list file beside the results, in the train list's format (packed data: a TSN list)."""
  csv_format = config.data.source != 'packed' and config.data.train_list.endswith('.csv')
  path = os.path.join(workdir, f'fewshot_{config.eval.shots}shot_seed{seed}_train.{"csv" if csv_format else "txt"}')
  if jax.process_index() == 0:
    root = config.data.root if config.data.source != 'packed' else ''
    fewshot.write_list([src[i] for i in chosen], names, path, root, csv_format=csv_format)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('few-shot list written')
  return path


def _pooled_features(config, workdir, module, params, mesh, list_path, names, src=None, stats=None):
  few = config.copy_and_resolve_references()
  with few.unlocked():
    few.eval.num_clips, few.eval.num_crops, few.eval.max_videos, few.eval.drop_last = 1, 1, 0, False
  feats, all_labels = [], []
  for pooled, _, labels, mask, _ in video_representations(few, workdir, module, params, mesh, list_path, names,
                                                          src=src, stats=stats):
    feats.append(np.asarray(pooled, np.float32)[mask])
    all_labels.append(labels[mask])
  return np.concatenate(feats), np.concatenate(all_labels)
