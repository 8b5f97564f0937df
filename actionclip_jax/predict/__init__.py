"""Prediction on any videos with any class names, from any model the project loads.

    python -m actionclip_jax.predict a.mp4 b.mp4 --model workdirs/demo/transf --top_k 3
    python -m actionclip_jax.predict a.mp4 --model ViT-B-16.pt --classes "juggling balls,archery" --views 2x3 --json

or in Python, `actionclip_jax.predict(['a.mp4'], 'vit-b-16-8f.pt', labels='labels.csv')`. `labels` is a label CSV or a
shipped list's name (`--labels hmdb51`; `python -m actionclip_jax.labels` lists them).

The model is a run directory (its config.json and latest checkpoint; its label list unless others are given), an
official ActionCLIP checkpoint, or a plain CLIP (OpenAI .pt / state dict, Hugging Face directory), which predicts
zero-shot with meanP over the frames. Preprocessing and scores are the evaluation's (`runs.scoring`): segment-centre
frames, short-side resize, centre or three crops, 100 * cosine (or WTI) per template, a softmax over classes per
template, the mean over templates and then over views. A validation video thus gets the probabilities `--mode=eval`
computes, except that prediction always runs in float32.

A multi-label run (`data.multilabel`, e.g. configs/charades.py) also names every class above a threshold
(`--threshold`; by default the one its last validation chose, WORKDIR/multilabel_threshold.json), and a run trained
with `solver.loss=sigmoid` gives each class its own sigmoid probability instead of a softmax over the classes.

A video that cannot be read is reported with its reason and the others are still predicted. Exit status: 0 when
every video was predicted, 1 when some were not, 2 for a usage or model error (one message, nothing predicted).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import re
import sys
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from actionclip_jax import labels as label_lists
from actionclip_jax.model import prompts, video
from actionclip_jax.weights import pretrained
from actionclip_jax.runs import builders, evaluate, scoring
from data_pipelines import annotations, augment, sampling, sources
from data_pipelines.bad_videos import BadVideoError

DEFAULT_FRAMES = 8  # a plain CLIP's frames: ActionCLIP's default clip length
MODEL_KINDS = ('a run directory (config.json + checkpoints/), an official ActionCLIP checkpoint, or a CLIP '
               'checkpoint (OpenAI .pt / state dict, Hugging Face directory)')


@dataclasses.dataclass
class Prediction:
  """One video's result: the top classes with their probabilities, or why it could not be read."""
  path: str
  top: list[tuple[str, float]]
  probs: np.ndarray | None  # float32 [C], in the order of the class names; None when `error` is set
  error: str | None = None
  above: list[tuple[str, float]] | None = None  # with a threshold: every class above it, most probable first


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  """A model with what it says about reading videos and naming classes."""
  module: video.ActionCLIP
  params: Any
  seg_length: int  # frames per segment; the model's frames are num_frames // seg_length segments of this many
  short_side: int | None  # decoded frames' short side before the evaluation resize
  label_list: str | None = None  # a run's own class names
  templates: tuple[str, ...] | None = None  # a run's own templates
  threshold: float | None = None  # a multi-label run's: the probability its validation chose to name a class
  sigmoid_bias: float | None = None  # solver.loss=sigmoid runs: each class's sigmoid(scale x cos + bias)


def load_model(path: str, frames: int | None = None) -> LoadedModel:
  """Any model kind (see MODEL_KINDS), in float32; `frames` replaces the model's clip length where its weights allow.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f'No model at {path}; a model is {MODEL_KINDS}')
  config = _run_config(path)
  if config is not None:
    return _load_run(path, config, frames)
  loaded = pretrained.load_pretrained(path, **({'num_frames': frames} if frames else {}))
  if isinstance(loaded, video.PretrainedActionCLIP):
    mcfg, params = loaded.config, loaded.params
  else:  # a plain CLIP: zero-shot, the mean of its frame embeddings
    clip_config = loaded.config
    if not frames and not clip_config.joint:  # joint's time embedding fixed the frames already
      clip_config = clip_config.replace(num_frames=DEFAULT_FRAMES)
    mcfg, params = video.ActionCLIPConfig(clip_config, sim_header='meanP'), {'clip': loaded.params}
  # The frame size the configs pair with an input size (256 for 224), as `--mode=eval` reads official models.
  short_side = mcfg.clip.image_resolution * 256 // 224
  return LoadedModel(video.ActionCLIP(mcfg), params, seg_length=1, short_side=short_side)


def _run_config(path: str) -> ml_collections.ConfigDict | None:
  """The config of a run directory (`launch.py` writes WORKDIR/config.json); None for any other path."""
  config_file = os.path.join(path, 'config.json')
  if not os.path.isfile(config_file):
    return None
  with open(config_file) as f:
    config = json.load(f)
  # A Hugging Face CLIP directory has a config.json too, with no `network` section.
  return ml_collections.ConfigDict(config) if 'network' in config else None


def _load_run(path: str, config: ml_collections.ConfigDict, frames: int | None) -> LoadedModel:
  if not any(os.path.isdir(os.path.join(path, sub)) for sub in ('checkpoints', 'best')):
    raise FileNotFoundError(f'{path} is a run directory without checkpoints')
  data = config.data
  config.network.dtype = 'float32'
  if frames:
    if frames % data.seg_length:
      raise ValueError(f'frames={frames}: the run {path} takes segments of {data.seg_length} frames')
    data.num_segments = frames // data.seg_length
  mcfg = builders.model_config(config)
  # The latest checkpoint, checked against the model the config describes.
  params = builders.init_from(path, video.param_shapes(mcfg))
  threshold = None
  if data.get('multilabel', False) and os.path.isfile(os.path.join(path, evaluate.THRESHOLD_FILE)):
    with open(os.path.join(path, evaluate.THRESHOLD_FILE)) as f:
      threshold = float(json.load(f)['threshold'])
  sigmoid = config.get('solver', {}).get('loss', 'kl') == 'sigmoid'
  return LoadedModel(video.ActionCLIP(mcfg), params, seg_length=data.seg_length, short_side=data.short_side or None,
                     label_list=data.label_list or None,
                     templates=tuple(config.network.templates) if config.network.templates else None,
                     threshold=threshold, sigmoid_bias=float(config.solver.sigmoid_bias) if sigmoid else None)


def class_names(model: LoadedModel, labels: str | None, classes: Sequence[str] | None) -> list[str]:
  """From a label CSV (`id,name`) or a shipped list's name, a list, or else the run's own label list."""
  if labels is not None and classes is not None:
    raise ValueError('Give the class names as labels= (a CSV) or classes=, not both')
  if classes is not None:
    names = [c.strip() for c in classes]
    if not names or not all(names):
      raise ValueError(f'classes must be non-empty names, got {list(classes)!r}')
    return names
  labels = labels or model.label_list
  if labels is None:
    raise ValueError('Which classes? Give labels= (an id,name CSV) or classes= (names)')
  try:
    return label_lists.read(labels)
  except FileNotFoundError as e:
    own = " (the run's own label list; give labels= or classes=)" if labels == model.label_list else ''
    raise FileNotFoundError(f'{e}{own}') from None


def read_templates(templates: str | Sequence[str] | None, model: LoadedModel) -> tuple[str, ...]:
  """A file of one template per line, a sequence of templates, or else the run's own or the 16 ActionCLIP ones."""
  if templates is None:
    return model.templates or prompts.TEMPLATES
  given = 'templates='
  if isinstance(templates, str):
    given = templates
    with open(templates) as f:
      templates = [line.strip() for line in f if line.strip()]
  if not templates:
    raise ValueError(f'{given}: no templates given')
  return tuple(templates)


@functools.cache
def _video_repr_fn(module: video.ActionCLIP):
  return jax.jit(functools.partial(scoring.video_repr, module))


class Predictor:
  """A model with its class texts encoded, predicting batches of videos with one compiled image tower."""

  def __init__(self, model: str, *, labels: str | None = None, classes: Sequence[str] | None = None,
               templates: str | Sequence[str] | None = None, views: tuple[int, int] = (1, 1),
               frames: int | None = None, batch_size: int = 8, threshold: float | None = None):
    """`threshold` (default: a multi-label run's own) names every class above it in each Prediction's `above`.

    Raises ValueError / OSError (CheckpointError, AnnotationError, FileNotFoundError) for anything the caller
    gave that does not work; nothing has been predicted then."""
    if batch_size < 1:
      raise ValueError(f'batch_size must be positive, got {batch_size}')
    self.model = load_model(model, frames)
    self.names = class_names(self.model, labels, classes)
    self.templates = read_templates(templates, self.model)
    num_clips, num_crops = views
    mcfg = self.model.module.config
    self.sampler = sampling.SegmentSampler(mcfg.num_frames // self.model.seg_length, self.model.seg_length,
                                           num_clips=num_clips)
    self.augment = augment.EvalAugment(mcfg.clip.image_resolution, num_crops=num_crops)
    self.batch_size = batch_size
    self.threshold = self.model.threshold if threshold is None else threshold
    table = prompts.class_token_ids(self.names, self.templates, mcfg.clip.context_length)
    self.texts = scoring.encode_texts(self.model.module, self.model.params, table.reshape(-1, table.shape[-1]))

  def __call__(self, videos: Sequence[str], top_k: int = 5) -> list[Prediction]:
    """One `Prediction` per video, in order; a video that cannot be read gets its `error`."""
    if top_k < 1:
      raise ValueError(f'top_k must be positive, got {top_k}')
    videos = [os.fspath(v) for v in videos]
    if not videos:
      return []
    # Every batch has this size (the last one padded), so the image tower compiles once.
    batch_size = min(self.batch_size, len(videos))
    results, pending = {}, []  # pending: (index, views) of read videos not yet scored
    for index, clip in enumerate(self._read(videos)):
      if isinstance(clip, BadVideoError):
        results[index] = Prediction(videos[index], [], None, clip.reason)
      else:
        pending.append((index, clip))
      if pending and (len(pending) == batch_size or index == len(videos) - 1):
        for (i, _), probs in zip(pending, self._batch_probabilities([c for _, c in pending], batch_size)):
          order = np.argsort(-probs, kind='stable')
          named = [(self.names[c], float(probs[c])) for c in order]
          above = None if self.threshold is None else [(n, p) for n, p in named if p > self.threshold]
          results[i] = Prediction(videos[i], named[:top_k], probs, above=above)
        pending = []
    return [results[i] for i in range(len(videos))]

  def _read(self, videos: list[str]):
    """Each video's uint8 views [C * K, T, S, S, 3], or the BadVideoError that stopped reading it."""
    records = [annotations.VideoRecord(path, None, -1, i) for i, path in enumerate(videos)]
    source = sources.VideoFileSource(records, short_side=self.model.short_side)
    for index in range(len(records)):
      try:
        yield self.augment(source.read(index, self.sampler.eval))
      except BadVideoError as e:
        yield e

  def _batch_probabilities(self, clips: list[np.ndarray], batch_size: int) -> np.ndarray:
    """`probabilities` of the clips, padded with black videos to `batch_size`."""
    frames = np.zeros((batch_size, *clips[0].shape), np.uint8)
    frames[:len(clips)] = clips
    return self.probabilities(frames)[:len(clips)]

  def probabilities(self, frames: np.ndarray) -> np.ndarray:
    """uint8 [B, V, T, S, S, 3] (V views of each video) -> float32 [B, C], the evaluation's probabilities."""
    module, params = self.model.module, self.model.params
    pooled, tokens = _video_repr_fn(module)(params, frames)
    scores = scoring.scores(module, params, pooled, tokens, self.texts)
    scores = scores.reshape(frames.shape[0], frames.shape[1], len(self.templates), len(self.names))
    classes = np.arange(len(self.names))
    if self.model.sigmoid_bias is None:
      return np.asarray(scoring.subset_probs(scores, classes), np.float32)
    return np.asarray(scoring.sigmoid_probs(scores, classes, params['clip']['logit_scale'], self.model.sigmoid_bias),
                      np.float32)


def predict(videos: Sequence[str], model: str, *, labels: str | None = None, classes: Sequence[str] | None = None,
            templates: str | Sequence[str] | None = None, top_k: int = 5, views: tuple[int, int] = (1, 1),
            frames: int | None = None, batch_size: int = 8, threshold: float | None = None) -> list[Prediction]:
  """Top-k classes of each video (see the module docstring); `views` is (temporal clips, spatial crops: 1 or 3).

  Class names come from `labels` (an `id,name` CSV or a shipped list's name), `classes`, or a run directory's own
  label list; `templates` is a file of one template per line or a sequence of them, each with one `{}`.
  """
  predictor = Predictor(model, labels=labels, classes=classes, templates=templates, views=views, frames=frames,
                        batch_size=batch_size, threshold=threshold)
  return predictor(videos, top_k=top_k)


# ------------------------------------------------------------------------------------------------------------------
# Command line.


def format_table(predictions: list[Prediction]) -> str:
  """Each video's path, then its classes by rank with their probability in percent (or its error)."""
  blocks = []
  for p in predictions:
    lines = [p.path]
    if p.error is not None:
      lines.append(f'  error: {p.error}')
    lines += [f'  {rank:>2}  {100 * prob:6.2f}%  {name}' for rank, (name, prob) in enumerate(p.top, start=1)]
    if p.above is not None:
      lines.append('  above the threshold: ' + (', '.join(f'{name} ({100 * prob:.1f}%)' for name, prob in p.above)
                                                or 'none'))
    blocks.append('\n'.join(lines))
  return '\n\n'.join(blocks)


def to_json(predictions: list[Prediction]) -> str:
  return json.dumps([{'path': p.path, 'top': [{'class': name, 'prob': prob} for name, prob in p.top],
                      **({} if p.above is None else {'above': [{'class': n, 'prob': q} for n, q in p.above]}),
                      'error': p.error} for p in predictions], indent=2)


def _views(text: str) -> tuple[int, int]:
  match = re.fullmatch(r'\s*(\d+)\s*x\s*(\d+)\s*', text)
  if not match or int(match[1]) < 1 or int(match[2]) not in (1, 3):
    raise argparse.ArgumentTypeError(f'{text!r}: expected CxK, C temporal clips x K (1 or 3) crops, e.g. 2x3')
  return int(match[1]), int(match[2])


def positive_int(text: str) -> int:
  """An argparse type: a positive integer."""
  if not text.isdigit() or int(text) < 1:
    raise argparse.ArgumentTypeError(f'{text!r} is not a positive integer')
  return int(text)


def add_class_arguments(parser: argparse.ArgumentParser, what: str) -> None:
  """--labels | --classes, and --templates: the class texts, as `Predictor` takes them."""
  names = parser.add_mutually_exclusive_group()
  names.add_argument('--labels', help=f'{what}: a CSV of id,name with a header, or a shipped list\'s name (k400, '
                     'ucf101, hmdb51, ssv2, ...: python -m actionclip_jax.labels); default: a run\'s own list')
  names.add_argument('--classes', help=f'{what}, comma separated: "a,b,c"')
  parser.add_argument('--templates', help='a file of text templates, one a line, each with one {} for the class '
                      '(default: the run\'s own, else the 16 ActionCLIP templates)')


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m actionclip_jax.predict', description=__doc__.split('\n\n')[0])
  parser.add_argument('videos', nargs='+', metavar='VIDEO', help='video files (mp4, avi, webm, mkv, mov, ...)')
  parser.add_argument('--model', required=True, help=MODEL_KINDS)
  add_class_arguments(parser, 'class names')
  parser.add_argument('--top_k', type=positive_int, default=5, help='classes shown per video')
  parser.add_argument('--views', type=_views, default=(1, 1), help='CxK: C temporal clips x K (1 or 3) crops')
  parser.add_argument('--frames', type=positive_int,
                      help='frames per clip (default: the model\'s; 8 for a plain CLIP)')
  parser.add_argument('--batch_size', type=positive_int, default=8, help='videos per batch')
  parser.add_argument('--threshold', type=float, help='also name every class whose probability is above this '
                      '(default: a multi-label run\'s own, chosen on its validation; else none)')
  parser.add_argument('--json', action='store_true',
                      help='one JSON document: [{path, top: [{class, prob}], above (with a threshold), error}]')
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  classes = args.classes.split(',') if args.classes is not None else None
  try:
    predictor = Predictor(args.model, labels=args.labels, classes=classes, templates=args.templates,
                          views=args.views, frames=args.frames, batch_size=args.batch_size, threshold=args.threshold)
  except (ValueError, OSError, ImportError) as e:  # what the user gave does not work: say so, nothing ran yet
    print(f'error: {e}', file=sys.stderr)
    return 2
  predictions = predictor(args.videos, top_k=args.top_k)
  print(to_json(predictions) if args.json else format_table(predictions))
  failed = sum(p.error is not None for p in predictions)
  if failed:
    print(f'{failed} of {len(predictions)} videos could not be read', file=sys.stderr)
  return 1 if failed else 0
