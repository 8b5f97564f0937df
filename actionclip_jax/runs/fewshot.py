"""Few-shot cross-modal adaptation on cached, frozen features, as Lin et al. 2023 ("Multimodality Helps Unimodality:
Cross-Modal Few-Shot Learning with Multimodal Models") run it and the ActionCLIP follow-up uses it.

This is a linear probe: the video and text towers stay frozen. (ActionCLIP's and X-CLIP's own few-shot tables
fine-tune the whole model on the K shots instead: `configs/few_shot.py:finetune` with a list from
`python -m actionclip_jax.runs.fewshot`.)

A bias-free linear classifier over L2-normalized features, logits = 100 * x @ W^T (the method's fixed logit
scale). W starts as the zero-shot classifier (per class, the normalized mean of the normalized text embeddings of
its prompts) and is trained with AdamW (linear warm-up, then cosine to 0) and cross-entropy on the K-shot video
features of each class plus every prompt's text embedding as one more example of its class. Each step draws
`batch_size` video examples and `batch_size` text examples, so the two modalities weigh the same whatever their
counts. `adapt` is the whole protocol for one draw of K shots: a validation split carved from the shots, a grid
search of lr x weight decay on it with early stopping, then a refit on all K shots with the chosen values and
iteration count.

`python -m actionclip_jax.runs.fewshot --list train.txt --labels labels.csv --shots 8 --seed 1 --out k8.txt` writes a
K-shot list (the list's own format: a TSN list or a `path,label_name` CSV) for whole-model fine-tuning.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

LOGIT_SCALE = 100.0  # Lin et al.'s fixed scale (CLIP's trained temperature, exp(4.6052))


@dataclasses.dataclass(frozen=True)
class LinearClassifier:
  weights: jax.Array  # [C, D]
  scale: float = LOGIT_SCALE


def _normalize(x):
  x = jnp.asarray(x, jnp.float32)
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def zero_shot_classifier(class_text_emb, scale: float = LOGIT_SCALE) -> LinearClassifier:
  """[K, C, D] text embeddings (K prompts per class, the prompts' token-table order) -> the initial classifier."""
  return LinearClassifier(_normalize(_normalize(class_text_emb).mean(axis=0)), scale)


def predict(classifier: LinearClassifier, features) -> jax.Array:
  """[N, D] features -> [N, C] logits (argmax: the predicted class)."""
  return classifier.scale * _normalize(features) @ classifier.weights.T


@functools.partial(jax.jit, static_argnames=('steps', 'warmup', 'run_steps', 'batch_size', 'eval_every'))
def _train(weights, video, video_labels, text, text_labels, val, val_labels, key, scale, learning_rate, weight_decay,
           *, steps: int, warmup: int, run_steps: int, batch_size: int, eval_every: int):
  """`run_steps` iterations of the `steps`-long schedule, in chunks of `eval_every`; after each chunk the accuracy
  on (val, val_labels) is measured and the best weights kept (the earliest on ties). Returns (best weights, the
  iteration they were reached at, their validation accuracy, per-step losses)."""
  def schedule(count):  # linear warm-up from 0, then cosine to 0 at `steps` (a traced peak: optax's wants a float)
    warm = count / max(warmup, 1)
    decay = 0.5 * (1 + jnp.cos(jnp.pi * jnp.clip((count - warmup) / max(steps - warmup, 1), 0.0, 1.0)))
    return learning_rate * jnp.where(count < warmup, warm, decay)

  optimizer = optax.adamw(schedule, weight_decay=weight_decay)

  def loss_fn(w, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(scale * x @ w.T, y).mean()

  def step(carry, step_key):
    w, opt_state = carry
    video_key, text_key = jax.random.split(step_key)
    vi = jax.random.randint(video_key, (batch_size,), 0, video.shape[0])
    ti = jax.random.randint(text_key, (batch_size,), 0, text.shape[0])
    x = jnp.concatenate([video[vi], text[ti]])
    y = jnp.concatenate([video_labels[vi], text_labels[ti]])
    loss, grads = jax.value_and_grad(loss_fn)(w, x, y)
    updates, opt_state = optimizer.update(grads, opt_state, w)
    return (optax.apply_updates(w, updates), opt_state), loss

  def chunk(carry, chunk_keys):
    w, opt_state, best_w, best_step, best_acc, done = carry
    (w, opt_state), losses = jax.lax.scan(step, (w, opt_state), chunk_keys)
    done = done + eval_every
    acc = jnp.mean(jnp.argmax(val @ w.T, axis=-1) == val_labels)
    better = acc > best_acc
    best_w = jnp.where(better, w, best_w)
    return (w, opt_state, best_w, jnp.where(better, done, best_step), jnp.maximum(acc, best_acc), done), losses

  chunks = run_steps // eval_every
  keys = jax.random.split(key, chunks * eval_every).reshape(chunks, eval_every, -1)
  init = (weights, optimizer.init(weights), weights, jnp.int32(0), jnp.float32(-1.0), jnp.int32(0))
  (_, _, best_w, best_step, best_acc, _), losses = jax.lax.scan(chunk, init, keys)
  return best_w, best_step, best_acc, losses.reshape(-1)


@dataclasses.dataclass(frozen=True)
class Recipe:
  """The training schedule and the searched grid (Lin et al.: 12,800 iterations, warm-up 50, AdamW)."""
  steps: int = 12800
  warmup: int = 50
  batch_size: int = 32
  learning_rates: tuple = (1e-3, 1e-4)
  weight_decays: tuple = (1e-4, 1e-2)
  eval_every: int = 100

  def every(self) -> int:
    return max(1, min(self.eval_every, self.steps))


def train(video_features, video_labels, class_text_emb, *, learning_rate: float, weight_decay: float, seed: int,
          recipe: Recipe, run_steps: int | None = None, val=None, scale: float = LOGIT_SCALE):
  """(classifier, iterations, validation accuracy) after `run_steps` (default recipe.steps) iterations of the
  recipe's schedule. With `val` = (features, labels) the weights are those of the best validation accuracy seen
  every recipe.every() iterations (early stopping); without, the final ones (and accuracy None)."""
  video_labels = jnp.asarray(video_labels, jnp.int32)
  num_prompts, num_classes, dim = class_text_emb.shape
  if video_features.shape[0] != video_labels.shape[0] or video_features.shape[-1] != dim:
    raise ValueError(f'video_features {video_features.shape} and labels {video_labels.shape} do not fit text '
                     f'embeddings {class_text_emb.shape}')
  run = run_steps or recipe.steps
  if val is None:  # one chunk and any one example: its accuracy (0 or 1) beats the initial -1, so the last weights
    every, val_x, val_y = run, jnp.zeros((1, dim)), jnp.zeros((1,), jnp.int32)
  else:
    every, val_x, val_y = recipe.every(), _normalize(val[0]), jnp.asarray(val[1], jnp.int32)
    run = -(-run // every) * every
  init = zero_shot_classifier(class_text_emb, scale)
  text = _normalize(class_text_emb).reshape(-1, dim)
  text_labels = jnp.tile(jnp.arange(num_classes, dtype=jnp.int32), num_prompts)
  best_w, best_step, best_acc, _ = _train(
      init.weights, _normalize(video_features), video_labels, text, text_labels, val_x, val_y,
      jax.random.PRNGKey(seed), scale, learning_rate, weight_decay, steps=recipe.steps,
      warmup=min(recipe.warmup, max(recipe.steps - 1, 0)), run_steps=run, batch_size=recipe.batch_size,
      eval_every=every)
  return LinearClassifier(best_w, scale), int(best_step), None if val is None else 100 * float(best_acc)


def fit(video_features, video_labels, class_text_emb, *, steps: int = 12800, warmup: int = 50, batch_size: int = 32,
        learning_rate: float = 1e-3, weight_decay: float = 1e-4, seed: int = 0,
        scale: float = LOGIT_SCALE) -> LinearClassifier:
  """The classifier after `steps` iterations. video_features [N, D] with int labels [N]; class_text_emb [K, C, D].
  Deterministic in seed."""
  recipe = Recipe(steps=steps, warmup=warmup, batch_size=batch_size)
  return train(video_features, video_labels, class_text_emb, learning_rate=learning_rate,
               weight_decay=weight_decay, seed=seed, recipe=recipe, scale=scale)[0]


def validation_split(labels, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train, validation) indices carved from K shots: max(1, n // 4) of each class with at least 2 videos go to
  validation (K = 2 / 4 / 8 / 16 -> 1 / 1 / 2 / 4); a class with 1 keeps it for training."""
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  val = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    if len(members) >= 2:
      val.extend(rng.permutation(members)[:max(1, len(members) // 4)].tolist())
  val = np.sort(np.asarray(val, np.int64))
  return np.setdiff1d(np.arange(len(labels)), val), val


def adapt(video_features, video_labels, class_text_emb, *, seed: int, recipe: Recipe = Recipe(),
          scale: float = LOGIT_SCALE) -> tuple[LinearClassifier, dict]:
  """Lin et al.'s protocol on one draw of K shots: lr x weight decay searched on a validation split carved from the
  shots (early stopping: each setting's best iteration), then the chosen setting refit on all K shots for its
  best iteration count. Returns the classifier and what was chosen (with the grid's validation accuracies)."""
  video_features, video_labels = np.asarray(video_features), np.asarray(video_labels)
  train_idx, val_idx = validation_split(video_labels, seed)
  grid = [(lr, wd) for lr in recipe.learning_rates for wd in recipe.weight_decays]
  searched = []
  if len(val_idx) and len(train_idx):
    for lr, wd in grid:
      _, steps, acc = train(video_features[train_idx], video_labels[train_idx], class_text_emb, learning_rate=lr,
                            weight_decay=wd, seed=seed, recipe=recipe, scale=scale,
                            val=(video_features[val_idx], video_labels[val_idx]))
      searched.append({'lr': lr, 'weight_decay': wd, 'steps': steps, 'val_top1': acc})
    best = max(searched, key=lambda r: r['val_top1'])  # the first of equals: grid order breaks ties
  else:  # one video per class: nothing to validate on, the grid's first setting for the whole schedule
    best = {'lr': grid[0][0], 'weight_decay': grid[0][1], 'steps': recipe.steps, 'val_top1': None}
  classifier, _, _ = train(video_features, video_labels, class_text_emb, learning_rate=best['lr'],
                           weight_decay=best['weight_decay'], seed=seed, recipe=recipe, run_steps=best['steps'],
                           scale=scale)
  return classifier, {**best, 'val_videos': int(len(val_idx)), 'grid': searched}


# ----------------------------------------------------------------------------------------------------------------
# K-shot lists, for the linear probe and for whole-model fine-tuning.


def k_shot_indices(labels, shots: int, seed: int) -> np.ndarray:
  """Indices of `shots` random videos of each class (all of a class that has fewer), sorted."""
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  chosen = [i for c in np.unique(labels)
            for i in np.flatnonzero(labels == c)[rng.permutation(int((labels == c).sum()))[:shots]]]
  return np.sort(np.asarray(chosen, np.int64))


def write_list(records, names: list[str], path: str, root: str = '', csv_format: bool = False) -> None:
  """Video records as a list file: `path,label_name` CSV lines, or TSN `path num_frames label` lines (a record
  without a frame count needs the CSV). Paths are made relative to `root` again, as the list they came from."""
  if not csv_format and any(not r.num_frames for r in records):
    raise ValueError(f'{path}: records without a frame count (from a CSV list) can only be written as a CSV list')
  rel = (lambda p: os.path.relpath(p, root)) if root else (lambda p: p)
  with open(path, 'w', newline='') as f:
    if csv_format:
      csv.writer(f, lineterminator='\n').writerows((rel(r.path), names[r.label]) for r in records)
    else:
      f.writelines(f'{rel(r.path)} {r.num_frames} {r.label}\n' for r in records)


def main(argv=None) -> None:
  from actionclip_jax import labels as label_lists
  from data_pipelines import annotations
  parser = argparse.ArgumentParser(description='Write a K-shot list: K random videos of each class of a list.')
  parser.add_argument('--list', required=True, help='a TSN list file or a path,label_name CSV')
  parser.add_argument('--labels', required=True, help='the id,name label CSV, or a shipped list\'s name (k400, '
                      'ucf101, hmdb51, ...: python -m actionclip_jax.labels)')
  parser.add_argument('--shots', type=int, required=True)
  parser.add_argument('--seed', type=int, default=1)
  parser.add_argument('--root', default='', help='the prefix of the list paths (data.root)')
  parser.add_argument('--out', required=True)
  args = parser.parse_args(argv)
  names = label_lists.read(args.labels)
  records = annotations.read_video_list(args.list, names, root=args.root or None)
  chosen = [records[i] for i in k_shot_indices([r.label for r in records], args.shots, args.seed)]
  write_list(chosen, names, args.out, args.root, csv_format=args.list.endswith('.csv'))
  print(f'{args.out}: {len(chosen)} videos, {args.shots} of each of {len({r.label for r in chosen})} classes')


if __name__ == '__main__':
  main()
