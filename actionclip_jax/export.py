"""Export a model for serving: its video and text towers and its class scoring as three graphs, ONNX or StableHLO.

    python -m actionclip_jax.export --model workdirs/demo/transf --out served/transf
    python -m actionclip_jax.export --model ViT-B-32.pt --out served/clip --format stablehlo --classes "archery,yoga"

The model is anything `predict` takes (a run directory, an official ActionCLIP checkpoint, a plain CLIP). B, N, K, C
and L are dynamic (one export serves any batch, any class list, any templates); T, S and the context length L0 are
the model's:

    video_encoder  frames uint8 [B, T, S, S, 3]  -> video float32 [B, D] (global), or frame tokens [B, T', D] (WTI)
    text_encoder   ids int32 [N, L], L <= L0     -> text float32 [N, D] (global), or text [N, L, D], mask bool [N, L]
    classify       video, text [K, C, ...], mask -> probs float32 [B, C], logits float32 [B, K, C]

`frames` is the evaluation's clip (the manifest's preprocessing: segment-centre frames, short-side resize, centre
crop), still uint8: the graph normalizes it as `scoring.video_repr` does. `ids` are CLIP's tokens of
`templates[k].format(class c)` (`prompts.class_token_ids`), padded to L0 or cut to any length that keeps every
end-of-text token (`prompts.trim_padding`, as `predict` does: the tower is causal, so the kept outputs are the same
and it runs L0 / L times faster). classify takes the text encoder's outputs laid out template-major,
[K templates, C classes, ...] as `class_token_ids` orders its table, and gives the evaluation's probabilities:
logits = 100 x cosine (or WTI) score (`scoring.SCALE`, the official test's fixed scale), a softmax over the classes
per template, the mean over templates (`prompts.template_ensemble_probs`). These are `Predictor.probabilities` of
one view; a server averages the probabilities of several views itself.

DIR gets `video_encoder`, `text_encoder` and `classify` (`.onnx`, or `.stablehlo`: a serialized `jax.export` for
CPU, CUDA and TPU, reloaded with `jax.export.deserialize(bytes).call(...)`), `manifest.json` (each graph's inputs
and outputs with shapes and dtypes, the preprocessing, the templates, the logit scale, the source's sha256), and when
the class names are known (a run's own list, `--labels` or `--classes`) `labels.csv` and `text_features.npz`:
classify's text inputs for those classes under the templates, so a server needs neither the text tower nor a
tokenizer (docs/serve_onnx.py serves a folder of videos with them and onnxruntime alone).

The source's sha256 is that of the model file; for a directory it is the sha256 of `sha256sum`'s listing of the
files the model is read from, in the manifest's order (a run's config.json and its checkpoint's state files; every
file of a Hugging Face directory): `cd SOURCE && sha256sum FILE... | sha256sum` gives it again.

ONNX goes through jax2onnx (0.17), which cannot trace flax's `nn.scan` (the CLIP blocks): it replaces `jnp.shape`,
which `nn.scan` calls on its carry, by a primitive of its own. So each graph is first traced by JAX to a jaxpr (with
`jax.export`'s symbolic dimensions), and jax2onnx converts that jaxpr's evaluation, in which the scanned blocks are a
`scan` primitive it lowers to an ONNX Loop; the weights are the same, the blocks are not unrolled. Models trained with
the sigmoid loss (`solver.loss=sigmoid`) are not exported yet: classify implements the softmax of the evaluation.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys
from typing import Any, Callable, Sequence

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from actionclip_jax.model import prompts, video
from actionclip_jax.runs import checkpoints, scoring
from actionclip_jax.predict import (MODEL_KINDS, LoadedModel, add_class_arguments, class_names, load_model,
                                    positive_int, read_templates)
from data_pipelines import annotations, augment

FORMATS = {'onnx': '.onnx', 'stablehlo': '.stablehlo'}
STABLEHLO_PLATFORMS = ('cpu', 'cuda', 'tpu')
MANIFEST = 'manifest.json'
LABELS = 'labels.csv'
TEXT_FEATURES = 'text_features.npz'
INSTALL_ONNX = ("ONNX export needs jax2onnx and onnx: pip install 'actionclip-jax[export]', then "
                "pip install --no-deps 'jax2onnx>=0.17.1' (it pins an orbax-checkpoint older than this project's)")


@dataclasses.dataclass(frozen=True)
class Graph:
  """A function of named inputs (symbolic shapes) to named outputs, closed over the model's params."""
  name: str
  fn: Callable[..., tuple]
  inputs: dict[str, jax.ShapeDtypeStruct]
  outputs: tuple[str, ...]


def graphs(model: LoadedModel) -> list[Graph]:
  """The video encoder, the text encoder and classify of `model` (see the module docstring)."""
  # jax arrays: numpy's slicing (the text tower's positional embedding to the ids' length) takes no symbolic length.
  module, params = model.module, jax.tree.map(jnp.asarray, model.params)
  c = module.config.clip
  wti = module.config.interaction == 'wti'

  def video_encoder(frames):
    pooled, tokens = scoring.video_repr(module, params, frames[:, None])
    return (tokens,) if wti else (pooled,)

  def text_encoder(ids):
    pooled, tokens, mask = module.apply({'params': params}, ids, method=video.ActionCLIP.encode_text)
    return (tokens, mask) if wti else (pooled,)

  def classify(video_repr, *text):
    flat = [t.reshape(-1, *t.shape[2:]) for t in text]  # [K * C, ...], template-major as the scores' columns
    pair = ((None, video_repr), (None, *flat)) if wti else ((video_repr, None), (flat[0], None, None))
    scores = module.apply({'params': params}, *pair, method=video.ActionCLIP.similarity)
    scores = scores.reshape(video_repr.shape[0], *text[0].shape[:2])
    return prompts.template_ensemble_probs(scores, scoring.SCALE), scoring.SCALE * scores

  def dims(names: str):
    # A scope of their own for each graph: jax.export wants the symbols a scope's constraints name among the inputs.
    return jax.export.symbolic_shape(names, constraints=[f'L <= {c.context_length}'] if 'L' in names else ())

  frames = jax.ShapeDtypeStruct((*dims('B'), c.num_frames, c.image_resolution, c.image_resolution, 3), jnp.uint8)
  ids = jax.ShapeDtypeStruct(dims('N, L'), jnp.int32)
  (video_out,) = jax.eval_shape(video_encoder, frames)
  # classify's text: the text encoder's outputs with N = K * C.
  b, k, classes, *length = dims('B, K, C, L' if wti else 'B, K, C')
  classify_in = {'video': jax.ShapeDtypeStruct((b, *video_out.shape[1:]), video_out.dtype),
                 'text': jax.ShapeDtypeStruct((k, classes, *length, c.embed_dim), jnp.float32)}
  if wti:
    classify_in['mask'] = jax.ShapeDtypeStruct((k, classes, *length), jnp.bool_)
  return [
      Graph('video_encoder', video_encoder, {'frames': frames}, ('video',)),
      Graph('text_encoder', text_encoder, {'ids': ids}, ('text', 'mask') if wti else ('text',)),
      Graph('classify', classify, classify_in, ('probs', 'logits')),
  ]


def _jax2onnx():
  try:
    import jax2onnx  # pylint: disable=import-outside-toplevel  # the [export] extra, not the base install
  except ImportError:
    raise ImportError(INSTALL_ONNX) from None
  return jax2onnx


def _write_onnx(graph: Graph, path: str) -> None:
  jax2onnx = _jax2onnx()
  specs = list(graph.inputs.values())
  # JAX traces (nn.scan included), jax2onnx converts the jaxpr: see the module docstring.
  traced = jax.make_jaxpr(graph.fn)(*specs)
  # onnx_ir warns once per shape tensor whose value info it leaves out of the file; onnxruntime infers them.
  serde = logging.getLogger('onnx_ir.serde')
  level = serde.level
  serde.setLevel(logging.ERROR)
  try:
    jax2onnx.to_onnx(jax.extend.core.jaxpr_as_fun(traced), specs, model_name=graph.name,
                     input_names=list(graph.inputs), output_names=list(graph.outputs), return_mode='file',
                     output_path=path)
  finally:
    serde.setLevel(level)


def _write_stablehlo(graph: Graph, path: str) -> None:
  # Lowered for every platform, so a graph exported on a laptop serves on a GPU or TPU (the weights are stored once).
  exported = jax.export.export(jax.jit(graph.fn), platforms=STABLEHLO_PLATFORMS)(*graph.inputs.values())
  with open(path, 'wb') as f:
    f.write(exported.serialize())


WRITERS = {'onnx': _write_onnx, 'stablehlo': _write_stablehlo}


def _signature(graph: Graph) -> dict[str, Any]:
  def describe(names, specs):
    return [{'name': name, 'shape': [d if isinstance(d, int) else str(d) for d in s.shape],
             'dtype': np.dtype(s.dtype).name} for name, s in zip(names, specs)]

  outputs = jax.eval_shape(graph.fn, *graph.inputs.values())
  return {'inputs': describe(graph.inputs, graph.inputs.values()), 'outputs': describe(graph.outputs, outputs)}


def source_files(path: str) -> list[str]:
  """The files a model is read from, relative to a directory model (sorted), or [] for a file model."""
  if os.path.isfile(path):
    return []
  state = checkpoints.params_path(path)
  if state is not None:  # a run directory: its config and the checkpoint `load_model` reads
    roots, files = [state], ['config.json']
  else:
    roots, files = [path], []
  for root in roots:
    for folder, _, names in os.walk(root):
      files += [os.path.relpath(os.path.join(folder, name), path) for name in names]
  return sorted(files)


def _sha256_file(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def source(path: str) -> dict[str, Any]:
  """The manifest's `source`: the model's path, its files (`source_files`) and sha256: the file's, or for a
  directory the sha256 of `sha256sum`'s lines for its files."""
  files = source_files(path)
  if os.path.isfile(path):
    return {'path': path, 'sha256': _sha256_file(path), 'files': files}
  listing = ''.join(f'{_sha256_file(os.path.join(path, name))}  {name}\n' for name in files)
  return {'path': path, 'sha256': hashlib.sha256(listing.encode()).hexdigest(), 'files': files}


def _preprocessing(model: LoadedModel) -> dict[str, Any]:
  c = model.module.config.clip
  return {
      'frames': c.num_frames,
      'sampling': {'num_segments': c.num_frames // model.seg_length, 'seg_length': model.seg_length,
                   'rule': 'evaluation (data_pipelines.sampling.SegmentSampler.eval, one clip): for a video of n '
                           'frames, segment i of num_segments starts at i * n / num_segments and its run at '
                           '(n / num_segments - seg_length) / 2 past that, floored; n <= frames: '
                           'arange(frames) * n // frames'},
      'decode_short_side': model.short_side,
      'decode_resize': "swscale's bilinear, to the short side (null: the stored size), as RGB",
      'resize_short_side': c.image_resolution * 256 // 224,
      'resize': 'bicubic (PIL), the aspect kept: long side round(long * short / min(w, h))',
      'crop': 'centre: offsets round((w - size) / 2), round((h - size) / 2)',
      'size': c.image_resolution,
      'layout': 'uint8 RGB [B, T, size, size, 3]; the graph normalizes (x / 255 - mean) / std',
      'mean': list(augment.CLIP_MEAN),
      'std': list(augment.CLIP_STD),
  }


def export(model: str, out: str, *, format: str = 'onnx',  # pylint: disable=redefined-builtin
           frames: int | None = None, size: int | None = None, labels: str | None = None,
           classes: Sequence[str] | None = None, templates: str | Sequence[str] | None = None) -> dict[str, Any]:
  """Writes the graphs, manifest.json and (class names known) labels.csv and text_features.npz to `out`; returns
  the manifest. Raises ValueError / OSError / ImportError for anything given that does not work, before writing."""
  if format not in FORMATS:
    raise ValueError(f'format {format!r} is not one of {", ".join(FORMATS)}')
  if format == 'onnx':
    _jax2onnx()
  loaded = load_model(model, frames)
  c = loaded.module.config.clip
  if size is not None and size != c.image_resolution:
    raise ValueError(f'size={size}: {model} takes {c.image_resolution}x{c.image_resolution} frames (its positional '
                     'embedding fixes the size)')
  if loaded.sigmoid_bias is not None:
    raise ValueError(f'{model} was trained with solver.loss=sigmoid, which export does not implement yet')
  names = None
  if labels is not None or classes is not None or loaded.label_list is not None:
    names = class_names(loaded, labels, classes)
  template_list = read_templates(templates, loaded)

  os.makedirs(out, exist_ok=True)
  manifest = {'format': format, 'similarity': loaded.module.config.interaction,
              'sim_header': loaded.module.config.sim_header, 'graphs': {}}
  if format == 'stablehlo':
    manifest['platforms'] = list(STABLEHLO_PLATFORMS)
  for graph in graphs(loaded):
    file = graph.name + FORMATS[format]
    WRITERS[format](graph, os.path.join(out, file))
    manifest['graphs'][graph.name] = {'file': file, **_signature(graph)}
    if os.path.isfile(os.path.join(out, file + '.data')):  # jax2onnx keeps large weights beside the graph
      manifest['graphs'][graph.name]['external_data'] = file + '.data'
  manifest.update({
      'preprocessing': _preprocessing(loaded),
      'templates': list(template_list),
      'context_length': c.context_length,
      'dimensions': {'B': 'videos', 'N': 'texts', 'K': 'templates', 'C': 'classes',
                     'L': f'text positions, at most context_length ({c.context_length})'},
      'text_layout': '[K templates, C classes, ...]: text_encoder outputs of the ids of templates[k].format(class c)',
      'logit_scale': scoring.SCALE,
      'learned_logit_scale': float(np.exp(loaded.params['clip']['logit_scale'])),
      'source': source(model),
      'labels': None, 'text_features': None, 'num_classes': None,
  })
  if loaded.threshold is not None:
    manifest['threshold'] = loaded.threshold
  if names is not None:
    _write_classes(loaded, names, template_list, out)
    manifest.update(labels=LABELS, text_features=TEXT_FEATURES, num_classes=len(names))
  with open(os.path.join(out, MANIFEST), 'w') as f:
    json.dump(manifest, f, indent=2)
  return manifest


def _write_classes(model: LoadedModel, names: list[str], templates: Sequence[str], out: str) -> None:
  """labels.csv, and classify's text inputs for `names` under `templates` (the texts `predict` encodes)."""
  annotations.write_label_csv(os.path.join(out, LABELS), names)
  table = prompts.class_token_ids(names, templates, model.module.config.clip.context_length)
  pooled, tokens, mask = scoring.encode_texts(model.module, model.params, table.reshape(-1, table.shape[-1]))
  grid = table.shape[:2]
  if model.module.config.interaction == 'wti':
    features = {'text': np.asarray(tokens).reshape(*grid, *tokens.shape[1:]),
                'mask': np.asarray(mask).reshape(*grid, -1)}
  else:
    features = {'text': np.asarray(pooled).reshape(*grid, -1)}
  np.savez(os.path.join(out, TEXT_FEATURES), **features)


# ------------------------------------------------------------------------------------------------------------------
# Command line.


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m actionclip_jax.export', description=__doc__.split('\n\n')[0])
  parser.add_argument('--model', required=True, help=MODEL_KINDS)
  parser.add_argument('--out', required=True, help='the folder to write the graphs and manifest.json to')
  parser.add_argument('--format', default='onnx', metavar='{onnx,stablehlo}',
                      help='onnx (jax2onnx; run with onnxruntime) or stablehlo (a serialized jax.export)')
  parser.add_argument('--frames', type=positive_int, help="frames per clip (default: the model's; 8 for a plain "
                      'CLIP)')
  parser.add_argument('--size', type=positive_int, help="frame size S; must be the model's own")
  add_class_arguments(parser, 'class names for text_features.npz')
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  classes = args.classes.split(',') if args.classes is not None else None
  try:
    manifest = export(args.model, args.out, format=args.format, frames=args.frames, size=args.size,
                      labels=args.labels, classes=classes, templates=args.templates)
  except (ValueError, OSError, ImportError) as e:  # what the user gave does not work: say so
    print(f'error: {e}', file=sys.stderr)
    return 2
  files = [f for g in manifest['graphs'].values() for f in (g['file'], g.get('external_data')) if f]
  extra = [name for name in (manifest['labels'], manifest['text_features']) if name]
  print(f'wrote {", ".join([*files, MANIFEST, *extra])} to {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
