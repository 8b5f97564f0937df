"""Prediction from the three model kinds (a run directory, an official ActionCLIP checkpoint, a plain CLIP) gives the
evaluation's probabilities on the evaluation's clips; bad videos are reported per video; bad models fail with one line.

Tolerance: probabilities are compared at 1e-5 absolute, rtol 0. They are softmaxes of logits 100 * cos, which reach
|100|, where float32 values are 7.6e-6 apart: rounding a logit alone moves a probability p by up to p * 7.6e-6, so
two correct float32 computations (XLA vs ATen, other batch shapes and summation orders) may differ by that much.
A wrong frame, crop, template or normalization moves them by far more (> 1e-3).
"""
import json
import os
import re
import subprocess
import sys

import grain
import jax
import numpy as np
import pytest
import torch

import actionclip_jax
import torch_actionclip
import torch_clip
import torch_heads
from actionclip_jax.model import clip, prompts, video
from actionclip_jax.runs import builders, checkpoints, evaluate, inputs, scoring, sharding
from actionclip_jax.predict import main
from configs import k400
from data_pipelines import annotations, augment, synthetic

TOL = 1e-5
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The `tiny` CLIP preset, as the PyTorch CLIP's arguments.
TINY = {k: getattr(clip.get_preset('tiny'), k) for k in (
    'embed_dim', 'image_resolution', 'vision_layers', 'vision_width', 'vision_patch_size', 'context_length',
    'vocab_size', 'transformer_width', 'transformer_heads', 'transformer_layers')}
# The frame size `--mode=eval` decodes to for a model that does not say (256 for 224 input).
SHORT_SIDE = TINY['image_resolution'] * 256 // 224


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  return synthetic.make_dataset(str(tmp_path_factory.mktemp('data')), train_per_class=1, val_per_class=2)


def local_config(dataset, arg='runlocal'):
  config = k400.get_config(arg)
  config.data.update(root=dataset['root'], train_list=dataset['train_list'], val_list=dataset['val_list'],
                     label_list=dataset['label_list'])
  return config


def val_videos(dataset) -> list[str]:
  return [r.path for r in annotations.read_list_file(dataset['val_list'], 3, root=dataset['root'])]


def label_names(dataset) -> list[str]:
  return annotations.read_label_csv(dataset['label_list'])


def eval_clips(dataset, workdir, *, frames, views):
  """The clips `--mode=eval` reads from the validation list: uint8 [N, V, T, S, S, 3], in list order."""
  config = local_config(dataset)
  config.data.num_segments, config.data.short_side = frames, SHORT_SIDE
  config.eval.num_clips, config.eval.num_crops = views
  _, data = inputs.eval_dataset(config, str(workdir), config.data.val_list, label_names(dataset))
  return np.concatenate([batch['frames'][batch['mask']] for batch in data])


def torch_probs(model, fusion, clips, names):
  """The official test.py on clips [N, V, T, S, S, 3]: each view's softmax of 100 * cos over the classes of each
  template, averaged over templates, then over views."""
  table = prompts.class_token_ids(names, prompts.TEMPLATES, TINY['context_length'])
  mean, std = torch.tensor(augment.CLIP_MEAN), torch.tensor(augment.CLIP_STD)
  n, v, t, s = clips.shape[:4]
  with torch.no_grad():
    text = model.encode_text(torch.from_numpy(table.reshape(-1, table.shape[-1])).long())
    text = text / text.norm(dim=-1, keepdim=True)
    frames = (torch.from_numpy(clips).float() / 255 - mean) / std
    image = model.encode_image(frames.reshape(n * v * t, s, s, 3).permute(0, 3, 1, 2))
    pooled = fusion(image.view(n * v, t, -1))[0]
    pooled = pooled / pooled.norm(dim=-1, keepdim=True)
    probs = (100.0 * pooled @ text.T).view(n * v, len(prompts.TEMPLATES), -1).softmax(dim=-1).mean(dim=1)
  return probs.view(n, v, -1).mean(dim=1).numpy()


def assert_ranked(prediction, names, k):
  """`top` is the k most probable classes of `probs`, in order, and `probs` is a distribution."""
  np.testing.assert_allclose(prediction.probs.sum(), 1.0, atol=TOL)
  assert [name for name, _ in prediction.top] == [names[c] for c in np.argsort(-prediction.probs)[:k]]
  assert [p for _, p in prediction.top] == sorted(prediction.probs, reverse=True)[:k]


@pytest.fixture(scope='module')
def official(tmp_path_factory):
  """An official-format ActionCLIP checkpoint (Transf, 4 frames) and its PyTorch model."""
  path = tmp_path_factory.mktemp('official') / 'transf.pt'
  model, fusion = torch_actionclip.official_checkpoint(TINY, path, 'Transf', frames=4)
  return str(path), model, fusion


def test_an_official_checkpoint_predicts_the_pytorch_probabilities(official, dataset, tmp_path):
  """Two temporal views; six videos in batches of four, so the last batch is padded."""
  path, model, fusion = official
  names = label_names(dataset)
  got = actionclip_jax.predict(val_videos(dataset), path, labels=dataset['label_list'], views=(2, 1), frames=4,
                               top_k=2, batch_size=4)
  want = torch_probs(model, fusion, eval_clips(dataset, tmp_path, frames=4, views=(2, 1)), names)
  np.testing.assert_allclose(np.stack([p.probs for p in got]), want, atol=TOL, rtol=0)
  for prediction in got:
    assert prediction.error is None
    assert_ranked(prediction, names, 2)


def test_a_plain_clip_predicts_zero_shot_from_the_mean_of_eight_frames(dataset, tmp_path):
  torch.manual_seed(0)
  model = torch_clip.CLIP(**TINY).eval()
  torch.save(model.state_dict(), tmp_path / 'clip.pt')
  classes = ['juggling balls', 'archery', 'abseiling']
  got = actionclip_jax.predict(val_videos(dataset), str(tmp_path / 'clip.pt'), classes=classes, top_k=3)
  mean_p = torch_heads.VisualPrompt('meanP', TINY['embed_dim'], 8, 1)
  want = torch_probs(model, mean_p, eval_clips(dataset, tmp_path, frames=8, views=(1, 1)), classes)
  np.testing.assert_allclose(np.stack([p.probs for p in got]), want, atol=TOL, rtol=0)
  for prediction in got:
    assert_ranked(prediction, classes, 3)


@pytest.fixture(scope='module')
def run_dir(dataset, tmp_path_factory):
  """A `k400.py:runlocal,wti` run directory as launch.py leaves one: config.json and a checkpoint of the params."""
  workdir = str(tmp_path_factory.mktemp('run'))
  config = local_config(dataset, 'runlocal,wti')
  builders.write_config(config, workdir)
  # Random values of the model's shapes: compiling `video.init_params` takes longer than the rest of this test.
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: rng.normal(0, 0.05, s.shape).astype(s.dtype),
                        video.param_shapes(builders.model_config(config)))
  state = {'params': params, 'step': 1}
  ckpt = checkpoints.Checkpoints(workdir, keep=1, enable_async=False)
  ckpt.save(1, state, iter(grain.MapDataset.range(1).to_iter_dataset()), json.loads(config.to_json_best_effort()))
  ckpt.close()
  return workdir, config


def test_a_run_directory_predicts_what_its_evaluation_computes(run_dir, dataset, tmp_path):
  """Its own labels and templates, WTI scores, 2 clips x 3 crops: the probabilities of evaluate.collect_probs."""
  workdir, config = run_dir
  got = actionclip_jax.predict(val_videos(dataset), workdir, views=(2, 3), top_k=1, batch_size=4)

  config = config.copy_and_resolve_references()
  config.eval.num_clips, config.eval.num_crops = 2, 3
  module = video.ActionCLIP(builders.model_config(config))
  params = checkpoints.read_params(workdir)
  names = label_names(dataset)
  table = builders.class_table(config, names, module.config.clip.context_length)
  texts = scoring.encode_texts(module, params, table.reshape(-1, table.shape[-1]))
  (want,), _, _ = evaluate.collect_probs(config, str(tmp_path), module, params, sharding.make_mesh(config.mesh),
                                         config.data.val_list, names, texts)
  np.testing.assert_allclose(np.stack([p.probs for p in got]), want, atol=TOL, rtol=0)
  for prediction in got:
    assert_ranked(prediction, names, 1)


def test_the_command_line_prints_the_top_k_of_each_video(official, dataset, tmp_path, capsys):
  videos = val_videos(dataset)[:3]
  templates = tmp_path / 'templates.txt'
  templates.write_text('a video of {}\n\n{}, an action\n')
  args = [*videos, '--model', official[0], '--labels', dataset['label_list'], '--frames', '4', '--top_k', '2',
          '--templates', str(templates), '--batch_size', '2']
  assert main(args) == 0
  table = capsys.readouterr().out
  assert main([*args, '--json']) == 0
  document = json.loads(capsys.readouterr().out)

  want = actionclip_jax.predict(videos, official[0], labels=dataset['label_list'], frames=4, top_k=2,
                                templates=['a video of {}', '{}, an action'], batch_size=2)
  assert document == [{'path': p.path, 'top': [{'class': c, 'prob': pytest.approx(prob, abs=TOL)} for c, prob in p.top],
                       'error': None} for p in want]
  blocks = table.strip().split('\n\n')
  assert [block.splitlines()[0] for block in blocks] == videos
  for block, p in zip(blocks, want):
    rows = [re.fullmatch(r' +(\d+) +([\d.]+)% +(.+)', line).groups() for line in block.splitlines()[1:]]
    assert [(int(rank), name) for rank, _, name in rows] == [(1, p.top[0][0]), (2, p.top[1][0])]
    np.testing.assert_allclose([float(percent) for _, percent, _ in rows], [100 * prob for _, prob in p.top],
                               atol=0.005 + 100 * TOL)  # two decimals


def test_unreadable_videos_are_reported_and_the_others_predicted(official, dataset, tmp_path, capsys):
  garbage = tmp_path / 'garbage.mp4'
  garbage.write_bytes(np.random.default_rng(0).bytes(4096))
  good = val_videos(dataset)[:2]
  videos = [good[0], str(garbage), str(tmp_path / 'missing.mp4'), good[1]]
  classes = 'juggling balls,archery,abseiling'
  assert main([*videos, '--model', official[0], '--classes', classes, '--frames', '4', '--batch_size', '2',
               '--json']) == 1
  captured = capsys.readouterr()
  document = json.loads(captured.out)
  assert [d['path'] for d in document] == videos
  assert [d['error'] is None for d in document] == [True, False, False, True]
  assert document[1]['top'] == document[2]['top'] == []
  assert 'not found' in document[2]['error']
  assert '2 of 4 videos' in captured.err
  # The good videos get what they get without the bad ones beside them.
  alone = actionclip_jax.predict(good, official[0], classes=classes.split(','), frames=4, top_k=3, batch_size=2)
  for d, p in zip((document[0], document[3]), alone):
    assert d['top'] == [{'class': c, 'prob': pytest.approx(prob, abs=TOL)} for c, prob in p.top]


def test_a_model_that_does_not_load_is_one_line_and_exit_status_2(dataset, tmp_path, capsys):
  video_path = val_videos(dataset)[0]
  garbage = tmp_path / 'model.pt'
  garbage.write_bytes(np.random.default_rng(0).bytes(4096))
  for model in (str(tmp_path / 'missing.pt'), str(garbage)):
    assert main([video_path, '--model', model, '--classes', 'a,b']) == 2
    captured = capsys.readouterr()
    assert captured.out == '' and captured.err.count('\n') == 1 and model in captured.err, captured.err


def test_class_names_take_a_shipped_label_list_by_name(tmp_path):
  """`--labels hmdb51` needs no file of one's own; a run saved with `data.label_list=ucf101` names its classes too."""
  from actionclip_jax import labels
  from actionclip_jax.predict import LoadedModel, class_names
  plain = LoadedModel(module=None, params=None, seg_length=1, short_side=None)
  names = class_names(plain, 'hmdb51', None)
  assert len(names) == 51 and names[0] == 'brush hair' and names == labels.read('hmdb51')
  run = LoadedModel(module=None, params=None, seg_length=1, short_side=None, label_list='ucf101')
  assert class_names(run, None, None) == labels.read('ucf101')
  gone = LoadedModel(module=None, params=None, seg_length=1, short_side=None, label_list=str(tmp_path / 'gone.csv'))
  with pytest.raises(FileNotFoundError, match=r"not a shipped label list \(k400, .*\) \(the run's own label list"):
    class_names(gone, None, None)


def test_the_module_runs_as_a_program(tmp_path):
  done = subprocess.run([sys.executable, '-m', 'actionclip_jax.predict', 'a.mp4', '--model', str(tmp_path / 'none'),
                         '--classes', 'a,b'], cwd=REPO, capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert done.returncode == 2 and done.stderr.count('\n') == 1 and 'No model at' in done.stderr, done.stderr
