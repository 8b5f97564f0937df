"""Exported graphs give `predict`'s probabilities: ONNX (jax2onnx, run with onnxruntime) and StableHLO (jax.export,
reloaded), global and WTI models, batches of 1 and 3 videos and two class lists scored with the same files; the
onnxruntime-only serving example (docs/serve_onnx.py) gives them for a folder of videos without importing JAX;
bad input is one line.

Tolerance: probabilities within 1e-4 absolute (the issue's bound). They are softmaxes of logits 100 * cos, which
reach |100|, where float32 values are 7.6e-6 apart, so two correct float32 computations in other kernels and
summation orders (onnxruntime vs XLA; WTI unchunked in the graph, chunked in `predict`) may differ by some 1e-5; a
wrong frame, crop, template, normalization or class order moves them by far more (> 1e-3).
"""
import functools
import hashlib
import importlib.util
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import actionclip_jax
import torch_actionclip
from actionclip_jax import export
from actionclip_jax.model import clip, prompts
from actionclip_jax.predict import Predictor
# The prediction tests' models and videos: a tiny official checkpoint (global) and a tiny WTI run directory.
from test_predict import (  # noqa: F401  pylint: disable=unused-import
    TINY, dataset, label_names, official, run_dir, val_videos)

TOL = 1e-4
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASS_LISTS = (['archery', 'juggling balls'], ['abseiling', 'yoga', 'surfing water', 'bowling', 'archery'])


NEEDS_ONNX = pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ('jax2onnx', 'onnxruntime')),
                                reason='ONNX export needs jax2onnx and onnxruntime (the [export] extra, then pip '
                                'install --no-deps jax2onnx)')


def runner(out: str, manifest: dict):
  """graph name, named inputs -> named outputs, by onnxruntime or the deserialized jax.export."""
  @functools.cache
  def load(name):
    path = os.path.join(out, manifest['graphs'][name]['file'])
    if manifest['format'] == 'onnx':
      import onnxruntime  # pylint: disable=import-outside-toplevel  # an optional dependency
      options = onnxruntime.SessionOptions()
      options.log_severity_level = 3  # not its notes on constants it folds away
      return onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider']).run
    with open(path, 'rb') as f:
      call = jax.export.deserialize(bytearray(f.read())).call
    return lambda outputs, inputs: call(*(inputs[i['name']] for i in manifest['graphs'][name]['inputs']))

  def run(name, **inputs):
    outputs = [o['name'] for o in manifest['graphs'][name]['outputs']]
    return dict(zip(outputs, map(np.asarray, load(name)(outputs, inputs))))
  return run


@pytest.fixture(scope='module')
def exported(official, run_dir, tmp_path_factory):
  """(format, similarity) -> (model path, frames, out folder, manifest), each exported once."""
  models = {'global': (official[0], 4), 'wti': (run_dir[0], None)}
  done = {}

  def get(fmt, similarity):
    if (fmt, similarity) not in done:
      model, frames = models[similarity]
      out = str(tmp_path_factory.mktemp(f'{fmt}_{similarity}'))
      done[fmt, similarity] = model, frames, out, export.export(model, out, format=fmt, frames=frames)
    return done[fmt, similarity]
  return get


def assert_matches_predict(model, frames, out, manifest, trims=(False, True), seed=0):
  """B = 1 and 3 random clips through video_encoder once, then classify against each class list's texts from
  text_encoder (padded to the context length, or cut to the texts' length as `trims` says), against
  Predictor.probabilities of the same clips as one view."""
  run = runner(out, manifest)
  _, t, s, _, _ = manifest['graphs']['video_encoder']['inputs'][0]['shape']
  scorers = []  # (predictor, text inputs of classify) per class list
  for classes, trim in zip(CLASS_LISTS, trims):
    predictor = Predictor(model, classes=classes, frames=frames)
    table = prompts.class_token_ids(classes, predictor.templates, manifest['context_length'])
    if trim:  # the texts' own length L < L0, as predict encodes them
      table = prompts.trim_padding(table)
    text = run('text_encoder', ids=table.reshape(-1, table.shape[-1]))
    scorers.append((predictor, {k: v.reshape(*table.shape[:2], *v.shape[1:]) for k, v in text.items()}))
  rng = np.random.default_rng(seed)
  for b in (1, 3):
    clips = rng.integers(0, 256, (b, t, s, s, 3), dtype=np.uint8)
    video = run('video_encoder', frames=clips)
    for predictor, text in scorers:
      got = run('classify', **video, **text)
      assert got['probs'].shape == (b, len(predictor.names))
      np.testing.assert_allclose(got['probs'], predictor.probabilities(clips[:, None]), atol=TOL, rtol=0)
      # logits are 100 x the scores the probabilities come from
      np.testing.assert_allclose(jax.nn.softmax(got['logits'], axis=-1).mean(axis=1), got['probs'], atol=1e-6)


@pytest.mark.parametrize('similarity', ['global', 'wti'])
@pytest.mark.parametrize('fmt', [pytest.param('onnx', marks=NEEDS_ONNX), 'stablehlo'])
def test_exported_graphs_give_the_probabilities_of_predict(exported, fmt, similarity):
  model, frames, out, manifest = exported(fmt, similarity)
  assert manifest['similarity'] == similarity
  graph_files = [f for g in manifest['graphs'].values() for f in (g['file'], g.get('external_data')) if f]
  assert sorted(os.listdir(out)) == sorted([*graph_files, 'manifest.json',
                                            *(['labels.csv', 'text_features.npz'] if similarity == 'wti' else [])])
  assert_matches_predict(model, frames, out, manifest)


def test_the_manifest_describes_the_graphs_and_the_source(exported):
  model, _, out, manifest = exported('stablehlo', 'wti')
  with open(os.path.join(out, 'manifest.json')) as f:
    assert json.load(f) == manifest
  graphs = manifest['graphs']
  s, d = TINY['image_resolution'], TINY['embed_dim']
  assert graphs['video_encoder']['inputs'] == [{'name': 'frames', 'shape': ['B', 4, s, s, 3], 'dtype': 'uint8'}]
  assert graphs['video_encoder']['outputs'] == [{'name': 'video', 'shape': ['B', 4, d], 'dtype': 'float32'}]
  assert graphs['text_encoder']['inputs'] == [{'name': 'ids', 'shape': ['N', 'L'], 'dtype': 'int32'}]
  assert graphs['text_encoder']['outputs'] == [{'name': 'text', 'shape': ['N', 'L', d], 'dtype': 'float32'},
                                               {'name': 'mask', 'shape': ['N', 'L'], 'dtype': 'bool'}]
  assert [i['shape'] for i in graphs['classify']['inputs']] == [['B', 4, d], ['K', 'C', 'L', d], ['K', 'C', 'L']]
  assert [o['shape'] for o in graphs['classify']['outputs']] == [['B', 'C'], ['B', 'K', 'C']]
  pre = manifest['preprocessing']
  assert (pre['frames'], pre['size'], pre['resize_short_side'], pre['decode_short_side']) == (4, s, s * 256 // 224, 40)
  assert manifest['templates'] == list(prompts.TEMPLATES) and manifest['logit_scale'] == 100.0
  # The sha256 of `sha256sum`'s listing of the files read: config.json and the checkpoint's state.
  files = manifest['source']['files']
  assert files == sorted(files) and 'config.json' in files and len(files) > 1
  assert all(f.startswith(os.path.join('checkpoints', '1', 'state', '')) for f in files if f != 'config.json')
  listing = subprocess.run(['sha256sum', *files], cwd=model, capture_output=True, check=True).stdout
  assert manifest['source']['sha256'] == subprocess.run(['sha256sum'], input=listing, capture_output=True,
                                                        check=True).stdout.split()[0].decode()


@NEEDS_ONNX
def test_the_serving_example_runs_with_onnxruntime_alone(exported, dataset, tmp_path):
  """docs/serve_onnx.py on a folder of the validation videos, with `import jax` and `import actionclip_jax` failing:
  `predict`'s probabilities under the run's own labels, from text_features.npz."""
  model, _, out, manifest = exported('onnx', 'wti')
  folder = tmp_path / 'videos'
  folder.mkdir()
  videos = val_videos(dataset)[:3]
  for path in videos:
    os.symlink(path, folder / os.path.basename(path))
  no_jax = ("import runpy, sys; sys.modules['jax'] = sys.modules['actionclip_jax'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
  done = subprocess.run([sys.executable, '-c', no_jax, os.path.join(REPO, 'docs', 'serve_onnx.py'), out, str(folder),
                         '--top_k', str(manifest['num_classes']), '--json'], capture_output=True, text=True,
                        timeout=120)
  assert done.returncode == 0, done.stderr[-3000:]
  got = json.loads(done.stdout)
  want = actionclip_jax.predict(sorted(str(folder / os.path.basename(p)) for p in videos), model, top_k=1)
  assert [g['path'] for g in got] == [w.path for w in want]
  names = label_names(dataset)
  for g, w in zip(got, want):
    probs = {t['class']: t['prob'] for t in g['top']}
    np.testing.assert_allclose([probs[name] for name in names], w.probs, atol=TOL, rtol=0)


def test_bad_input_is_one_line_exit_status_2_and_nothing_written(official, tmp_path, capsys):
  out = tmp_path / 'out'
  cases = [(['--model', str(tmp_path / 'missing.pt')], 'No model at'),
           (['--model', official[0], '--frames', '4', '--format', 'tflite'], "format 'tflite' is not one of"),
           (['--model', official[0], '--frames', '4', '--size', '64'], 'takes 32x32 frames')]
  for args, message in cases:
    assert export.main([*args, '--out', str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == '' and captured.err.count('\n') == 1 and message in captured.err, captured.err
  assert not out.exists()


def test_the_module_runs_as_a_program_and_writes_the_class_texts(official, tmp_path):
  """StableHLO with --classes: labels.csv and text_features.npz hold the text encoder's outputs for the classes'
  prompts, laid out [K templates, C classes, D]."""
  out = tmp_path / 'served'
  done = subprocess.run([sys.executable, '-m', 'actionclip_jax.export', '--model', official[0], '--out', str(out),
                         '--format', 'stablehlo', '--frames', '4', '--size', str(TINY['image_resolution']),
                         '--classes', 'archery,juggling balls'], cwd=REPO, capture_output=True, text=True,
                        timeout=300, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.startswith('wrote ') and str(out) in done.stdout
  with open(out / 'manifest.json') as f:
    manifest = json.load(f)
  assert (manifest['labels'], manifest['text_features'], manifest['num_classes']) == ('labels.csv',
                                                                                      'text_features.npz', 2)
  assert (out / 'labels.csv').read_text() == 'id,name\n0,archery\n1,juggling balls\n'
  with open(official[0], 'rb') as f:
    assert manifest['source'] == {'path': official[0], 'sha256': hashlib.sha256(f.read()).hexdigest(), 'files': []}
  table = prompts.class_token_ids(['archery', 'juggling balls'], prompts.TEMPLATES, TINY['context_length'])
  (want,) = runner(str(out), manifest)('text_encoder', ids=table.reshape(-1, table.shape[-1])).values()
  got = np.load(out / 'text_features.npz')['text']
  assert got.shape == (len(prompts.TEMPLATES), 2, TINY['embed_dim'])
  np.testing.assert_allclose(got, want.reshape(got.shape), atol=1e-5 * np.abs(want).max())


@pytest.mark.slow
@NEEDS_ONNX
def test_a_vit_b32_exports_to_onnx_with_the_probabilities_of_predict(tmp_path):
  """ViT-B/32 with random weights (an official-format checkpoint, Transf over 2 frames: the full towers at a quarter of
  the usual frames), the same checks as the tiny models' with the texts cut to their length (all 77 positions cost
  the text tower 5 s more here). 85 s of CPU time: 40-75 s on two shared cores."""
  preset = clip.get_preset('ViT-B/32')
  path = str(tmp_path / 'vit-b-32.pt')
  torch_actionclip.official_checkpoint({k: getattr(preset, k) for k in TINY}, path, 'Transf', frames=2)
  out = str(tmp_path / 'served')
  assert_matches_predict(path, 2, out, export.export(path, out, frames=2), trims=(True, True))
