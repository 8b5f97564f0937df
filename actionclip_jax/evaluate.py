"""Evaluation: closed-set (`eval`), zero-shot (full and half-class protocols) and few-shot.

Scores follow the official test.py: 100 * cos(video, each template of each class), a softmax over classes per
template, the mean over templates; with several views (clips x crops) the per-view probabilities are averaged per
video. Every validation video counts exactly once (padding is masked out). Results go to WORKDIR/eval_*.json.
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from actionclip_jax import fewshot, inputs, interaction, metrics, prompts
from actionclip_jax import sharding, train, video
from data_pipelines import augment, bad_videos
from data_pipelines.pipeline import global_batch

TEXT_CHUNK = 256  # texts encoded per call: bounds the text tower's activations


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


def encode_texts(module: video.ActionCLIP, params, ids: np.ndarray):
  """(pooled [N, D], tokens [N, L', D], mask [N, L']) for every text, with L' the longest valid length."""
  ids, mask = interaction.truncate_text(ids, np.asarray(interaction.text_token_mask(ids)))
  apply = _encode_text_fn(module)
  padded = -len(ids) % TEXT_CHUNK
  chunks = np.concatenate([ids, np.zeros((padded, ids.shape[1]), ids.dtype)]).reshape(-1, TEXT_CHUNK, ids.shape[1])
  pooled, tokens = zip(*(apply(params, jnp.asarray(c)) for c in chunks))
  n = len(ids)
  return jnp.concatenate(pooled)[:n], jnp.concatenate(tokens)[:n], jnp.asarray(mask)


@functools.cache
def _encode_text_fn(module):
  return jax.jit(lambda p, i: module.apply({'params': p}, i, method=video.ActionCLIP.encode_text)[:2])


def _video_repr(module, params, frames):
  """frames uint8 [B, V, T, H, W, 3] -> pooled [B*V, D], tokens [B*V, T', D]."""
  frames = augment.normalize(frames.reshape(-1, *frames.shape[2:]), jnp.dtype(module.config.clip.dtype))
  return module.apply({'params': params}, frames, method=video.ActionCLIP.encode_video)


def _normalize(x):
  x = x.astype(jnp.float32)
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def video_representations(config, workdir: str, module, params, mesh, list_path: str, names: list[str]):
  """For each eval batch: (pooled [B*V, D], tokens [B*V, T', D], labels [B], mask [B]), replicated on every
  process, so each sees every video's scores; `mask` drops padding and bad videos. Raises ValueError after the
  last batch if no video could be read."""
  src, data = inputs.eval_dataset(config, workdir, list_path, names)
  repr_fn = jax.jit(functools.partial(_video_repr, module), out_shardings=sharding.replicated(mesh))
  gather = jax.jit(lambda x: x, out_shardings=sharding.replicated(mesh))
  videos = 0
  for batch in data:
    batch = global_batch(batch, mesh, sharding.BATCH_AXES)
    pooled, tokens = repr_fn(params, batch['frames'])
    labels, mask = (np.asarray(x) for x in gather((batch['label'], batch['mask'])))
    videos += int(mask.sum())
    yield pooled, tokens, labels, mask
  if not videos:
    raise ValueError(f'Evaluation of {list_path}: 0 of its {len(src)} videos could be read, so there is nothing to '
                     f'score; each bad video and why is in {os.path.join(workdir, bad_videos.FILENAME)}')


def collect_scores(config, workdir: str, module, params, mesh, list_path: str, names: list[str], texts):
  """Per-template class scores averaged over views [N, K, C], probabilities [N, C] and labels [N], for every
  video."""
  k = len(config.network.templates) if config.network.templates else len(prompts.TEMPLATES)
  per_template, probs, all_labels = [], [], []
  for pooled, tokens, labels, mask in video_representations(config, workdir, module, params, mesh, list_path,
                                                            names):
    scores = _scores_from_repr(module, params, pooled, tokens, texts).reshape(len(labels), -1, k, len(names))
    per_template.append(np.asarray(scores.mean(axis=1))[mask])
    probs.append(np.asarray(jax.nn.softmax(100.0 * scores, axis=-1).mean(axis=(1, 2)))[mask])
    all_labels.append(labels[mask])
  return np.concatenate(per_template), np.concatenate(probs), np.concatenate(all_labels)


def _scores_from_repr(module, params, pooled, tokens, texts):
  text_pooled, text_tokens, text_mask = texts
  if module.config.interaction == 'wti':
    return interaction.wti_scores_chunked(interaction.WTI(module.config.clip.embed_dim), params['interaction'],
                                          tokens, text_tokens, text_mask)
  return _normalize(pooled) @ _normalize(text_pooled).T


def evaluate_params(config, workdir: str, module, params, mesh, names: list[str]) -> dict:
  """Closed-set evaluation of `params` on data.val_list with the classes `names`."""
  table = train.class_table(config, names, module.config.clip.context_length)
  texts = encode_texts(module, params, table.reshape(-1, table.shape[-1]))
  _, probs, labels = collect_scores(config, workdir, module, params, mesh, config.data.val_list, names, texts)
  return accuracy(probs, labels)


def half_class_splits(per_template: np.ndarray, labels: np.ndarray, splits: int, seed: int) -> dict:
  """The half-class zero-shot protocol: `splits` random halves of the classes; for each, the videos of those
  classes classified among them alone. Returns mean and std of top-1 over the splits."""
  num_classes = per_template.shape[-1]
  rng = np.random.default_rng(seed)
  top1 = []
  for _ in range(splits):
    chosen = np.sort(rng.permutation(num_classes)[:num_classes // 2])
    keep = np.isin(labels, chosen)
    sub = per_template[keep][..., chosen]
    probs = np.asarray(jax.nn.softmax(100.0 * jnp.asarray(sub), axis=-1).mean(axis=1))
    top1.append(accuracy(probs, np.searchsorted(chosen, labels[keep]))['top1'])
  return {'top1_mean': float(np.mean(top1)), 'top1_std': float(np.std(top1)), 'splits': splits,
          'top1_per_split': top1}


def load_params(config, workdir: str, module, mesh):
  """The params to evaluate, sharded: this work dir's latest checkpoint, else init_from (any accepted one)."""
  mcfg = module.config
  boxed = jax.eval_shape(lambda r: video.init_params(mcfg, r, boxed=True), jax.random.key(0))
  shardings = sharding.param_shardings(boxed, mesh, sharding.rules(config.mesh))
  params = jax.jit(lambda r: video.init_params(mcfg, r), out_shardings=shardings)(jax.random.key(config.seed))
  if os.path.isdir(os.path.join(workdir, 'checkpoints')):
    return train.init_from(workdir, params)
  if not config.init_from:
    raise ValueError(f'Nothing to evaluate: {workdir} has no checkpoint and init_from is empty')
  return train.init_from(config.init_from, params)


def run(config, workdir: str, mode: str) -> dict:
  """`--mode=eval|zero_shot|few_shot`: evaluate and write WORKDIR/eval_<name>.json."""
  train.write_config(config, workdir)
  mcfg = train.model_config(config)
  module = video.ActionCLIP(mcfg)
  mesh = sharding.make_mesh(config.mesh)
  params = load_params(config, workdir, module, mesh)
  names = inputs.label_names(config.data)
  table = train.class_table(config, names, mcfg.clip.context_length)
  texts = encode_texts(module, params, table.reshape(-1, table.shape[-1]))
  if mode == 'few_shot':
    results = few_shot(config, workdir, module, params, mesh, names, texts, table.shape[0])
  else:
    per_template, probs, labels = collect_scores(config, workdir, module, params, mesh, config.data.val_list,
                                                 names, texts)
    results = accuracy(probs, labels)
    if mode == 'zero_shot' and config.eval.protocol == 'half':
      results['half_classes'] = half_class_splits(per_template, labels, config.eval.half_splits, config.seed)
  with metrics.MetricWriter(workdir, enabled=jax.process_index() == 0) as writer:
    writer.write_eval(f'{mode}_{config.eval.name}', results)
  logging.info('%s: %s', mode, results)
  return results


def few_shot(config, workdir, module, params, mesh, names, texts, num_templates) -> dict:
  """Cross-modal adaptation: a linear classifier on frozen pooled features, initialized from the class text
  embeddings, trained on K videos per class (drawn from train_list with the seed) plus every prompt's text."""
  shots = _k_shot_list(config, workdir, names)
  train_feats, train_labels = _pooled_features(config, workdir, module, params, mesh, shots, names)
  val_feats, val_labels = _pooled_features(config, workdir, module, params, mesh, config.data.val_list, names)
  text_emb = np.asarray(texts[0]).reshape(num_templates, len(names), -1)
  clf = fewshot.fit(train_feats, train_labels, text_emb, steps=config.eval.fewshot_steps, seed=config.seed)
  probs = np.asarray(jax.nn.softmax(fewshot.predict(clf, val_feats), axis=-1))
  return {**accuracy(probs, val_labels), 'shots': config.eval.shots}


def _k_shot_list(config, workdir: str, names: list[str]) -> str:
  """A list file with K random videos of each class from train_list (all of a class that has fewer)."""
  records = inputs.records(config.data, config.data.train_list, names)
  rng = np.random.default_rng(config.seed)
  by_class = {}
  for r in records:
    by_class.setdefault(r.label, []).append(r)
  chosen = [r for label in sorted(by_class) for r in
            (by_class[label][i] for i in rng.permutation(len(by_class[label]))[:config.eval.shots])]
  path = os.path.join(workdir, f'fewshot_{config.eval.shots}shot_train.txt')
  root = config.data.root
  if jax.process_index() == 0:
    with open(path, 'w') as f:  # paths relative to data.root again, as the list they came from
      f.writelines(f'{os.path.relpath(r.path, root) if root else r.path} {r.num_frames or 0} {r.label}\n'
                   for r in chosen)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('few-shot list written')
  return path


def _pooled_features(config, workdir, module, params, mesh, list_path, names):
  few = config.copy_and_resolve_references()
  with few.unlocked():
    few.eval.num_clips, few.eval.num_crops, few.eval.max_videos = 1, 1, 0
  feats, all_labels = [], []
  for pooled, _, labels, mask in video_representations(few, workdir, module, params, mesh, list_path, names):
    feats.append(np.asarray(pooled, np.float32)[mask])
    all_labels.append(labels[mask])
  return np.concatenate(feats), np.concatenate(all_labels)
