"""The demo: CLIP pre-training's loss and step against PyTorch's cross-entropy, its data and start-up checks, and the
whole `make demo` job in its `--quick` form (a tiny world, four steps, the `transf` run with K = 4), end to end
through launch.py, and its `--multilabel` form."""
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from actionclip_jax.model import clip
from actionclip_jax.runs import checkpoints, config_checks, optim, pretrain
from actionclip_jax import demo, tokenize
from data_pipelines import annotations, augment, pipeline, sampling, sources
from data_pipelines.annotations import AnnotationError
from data_pipelines.bad_videos import BadVideoLog, read_bad_videos
from tolerance import rounding

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # config files import `configs.common`, as under `python launch.py` from the repo root
  sys.path.insert(0, REPO)
from configs import demo as demo_config  # pylint: disable=wrong-import-position

# Embeddings within the whole-model float32 bar of docs/fidelity.md (1e-5 of their norm) move a cosine by at most twice
# that, a logit by exp(logit_scale) times as much, and a cross-entropy (log-softmax is 2-Lipschitz in the max norm) by
# twice the largest logit change.
EMBEDDING_BAR = 1e-5


def torch_clip_loss(logits: np.ndarray, captions: np.ndarray) -> float:
  """CLIP's loss with torch: cross-entropy both ways, the target of a row spread over the columns of its caption."""
  logits, captions = torch.from_numpy(np.asarray(logits, np.float64)), torch.from_numpy(captions)
  same = (captions[:, None] == captions[None, :]).double()
  targets = same / same.sum(1, keepdim=True)
  return float((F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2)


def test_contrastive_loss_is_clips_symmetric_cross_entropy():
  rng = np.random.default_rng(0)
  b = 12
  logits = rng.normal(0, 5, (b, b)).astype(np.float32)
  distinct = np.arange(b, dtype=np.int32)
  got = float(pretrain.contrastive_loss(jnp.asarray(logits), jnp.asarray(distinct)))
  arange = torch.arange(b)
  want = float((F.cross_entropy(torch.from_numpy(logits).double(), arange)
                + F.cross_entropy(torch.from_numpy(logits).double().T, arange)) / 2)
  tol = rounding(2 * b, logits)  # a log-sum-exp over b terms, then a mean over b rows
  assert abs(got - want) <= tol
  # A caption twice in the batch is one text: both its columns are right for both its images.
  repeated = np.array([0, 1, 2, 1, 3, 0, 4, 5, 6, 7, 8, 9], np.int32)
  got = float(pretrain.contrastive_loss(jnp.asarray(logits), jnp.asarray(repeated)))
  assert abs(got - torch_clip_loss(logits, repeated)) <= tol
  assert abs(got - want) > 100 * tol  # and that changes the loss: the targets are not the diagonal


def test_pretrain_step_reports_the_clip_loss_of_its_batch():
  """The jitted step's loss is CLIP's loss of the batch's images against their own captions, from embeddings the
  model computes on its own (torch does the loss)."""
  config = demo_config.get_config('pretrain')
  clip_config = clip.get_preset('tiny', image_resolution=config.data.input_size)
  module = clip.CLIP(clip_config)
  params = pretrain.init_params(clip_config, jax.random.key(1))
  tx = optim.make(config.solver, config.network, 0, 10, params)  # no warm-up: the first step moves the params
  state = {'params': params, 'opt': tx.init(params), 'step': jnp.zeros((), jnp.int32)}
  rng = np.random.default_rng(2)
  b, size = 8, config.data.input_size
  frames = rng.integers(0, 256, (b, 1, size, size, 3), dtype=np.uint8)
  table = tokenize([f'a {c} circle at the {p}' for c in ('red', 'blue') for p in ('top', 'left')],
                   clip_config.context_length)
  captions = np.array([0, 1, 2, 3, 0, 1, 3, 3], np.int32)  # repeats, as a batch of a small world has
  step = jax.jit(pretrain.make_train_step(module, tx, table, jnp.float32))
  new_state, stats = step(state, {'frames': frames, 'label': captions, 'video_id': np.arange(b, dtype=np.int32)},
                          jax.random.key(3))

  image_emb, text_emb, logit_scale = jax.jit(lambda p, f, t: module.apply({'params': p}, f, t))(
      params['clip'], augment.normalize(frames), table[captions])
  image_emb, text_emb = (np.asarray(x, np.float64) for x in (image_emb[:, 0], text_emb))
  image_emb /= np.linalg.norm(image_emb, axis=1, keepdims=True)
  text_emb /= np.linalg.norm(text_emb, axis=1, keepdims=True)
  scale = math.exp(float(logit_scale))
  want = torch_clip_loss(scale * image_emb @ text_emb.T, captions)
  tol = 2 * scale * 2 * EMBEDDING_BAR
  assert abs(float(stats['loss']) - want) <= tol
  # Captions paired with the wrong images give another loss: the step pairs them as the batch says.
  assert abs(torch_clip_loss(scale * image_emb @ np.roll(text_emb, 1, axis=0).T, captions) - want) > 100 * tol
  assert int(new_state['step']) == 1
  # The demo's pre-training moves the image tower and keeps the text tower (and logit_scale) as drawn.
  assert config.network.fix_text
  old, new = params['clip'], new_state['params']['clip']
  assert not np.allclose(new['visual']['conv1']['kernel'], old['visual']['conv1']['kernel'])
  for name in set(old) - {'visual'}:
    jax.tree_util.tree_map(np.testing.assert_array_equal, new[name], old[name])


def test_bad_captions_fail_the_start_up_check_with_file_and_line(tmp_path):
  captions = tmp_path / 'captions.csv'
  captions.write_text('path,caption\nimages/0.png,a red circle\nimages/1.png\n')
  with pytest.raises(AnnotationError, match=f'{captions}:3'):
    annotations.read_captions(str(captions))
  config = demo_config.get_config('pretrain')
  config.data.train_list = str(captions)
  config.network.tsm = True
  with pytest.raises(ValueError) as err:
    config_checks.check(config, 'pretrain', 1, 1)
  message = str(err.value)
  assert f'{captions}:3' in message and 'network.tsm=True' in message and '2 problems' in message
  captions.write_text('path,caption\nimages/0.png,a red circle\n"images/1.png","a blue square, small"\n')
  records, texts = annotations.read_captions(str(captions), root='/data')
  assert [r.path for r in records] == ['/data/images/0.png', '/data/images/1.png']
  assert texts == ['a red circle', 'a blue square, small'] and [r.label for r in records] == [0, 1]
  config.network.tsm = False
  config_checks.check(config, 'pretrain', 1, 1)


def test_pretraining_images_are_centre_crops_and_a_bad_one_is_reported_and_replaced(tmp_path):
  rng = np.random.default_rng(4)
  pictures = rng.integers(0, 256, (3, 40, 48, 3), dtype=np.uint8)
  rows = []
  for i, picture in enumerate(pictures):
    Image.fromarray(picture).save(tmp_path / f'{i}.png')
    rows.append(f'{i}.png,caption {i % 2}\n')
  (tmp_path / 'broken.png').write_bytes(b'not a png')
  (tmp_path / 'captions.csv').write_text('path,caption\n' + ''.join(rows) + 'broken.png,caption 0\n')
  records, captions = annotations.read_captions(str(tmp_path / 'captions.csv'), root=str(tmp_path))
  assert captions == ['caption 0', 'caption 1'] and [r.label for r in records] == [0, 1, 0, 0]
  size = 32
  data = pipeline.train_dataset(sources.CaptionedImages(records, None), sampling.SegmentSampler(1),
                                augment.CentreCrop(size), batch_size=8, seed=0,
                                bad_videos=BadVideoLog(str(tmp_path / 'run')))
  batch = next(iter(data))
  assert batch['frames'].shape == (8, 1, size, size, 3)
  crops = augment.EvalAugment(size)(pictures[:, None])[:, 0]  # [3, S, S, 3]: the evaluation's centre crops
  for frames, label, index in zip(batch['frames'], batch['label'], batch['video_id']):
    assert index != 3 and label == records[index].label  # the broken picture never reaches a batch
    np.testing.assert_array_equal(frames[0], crops[index])  # no flip, crop or colour change: captions stay true
  assert set(read_bad_videos(str(tmp_path / 'run'))) == {str(tmp_path / 'broken.png')}


@pytest.fixture(scope='module')
def xla_cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp('xla_cache'))  # both quick demos pre-train the same CLIP: one compile


def run_quick_demo(workdir, xla_cache, *flags):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO, JAX_COMPILATION_CACHE_DIR=xla_cache)
  done = subprocess.run([sys.executable, '-m', 'actionclip_jax.demo', f'--workdir={workdir}', '--quick', *flags],
                        env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-4000:]
  with open(workdir / 'results.json') as f:
    return str(workdir), json.load(f)


@pytest.fixture(scope='module')
def quick_demo(tmp_path_factory, xla_cache):
  return run_quick_demo(tmp_path_factory.mktemp('demo'), xla_cache)


def test_quick_demo_runs_every_stage(quick_demo):
  workdir, results = quick_demo
  runs, shots = demo.QUICK_RUNS, demo.QUICK_SHOTS
  with open(os.path.join(workdir, 'data', 'world.json')) as f:
    classes = json.load(f)['classes']
  seen = sum(c['split'] == 'seen' for c in classes)
  heldout = len(classes) - seen
  world = results['world']
  assert (world['classes_seen'], world['classes_heldout']) == (seen, heldout)
  videos = world['videos']
  for split in ('train', 'val', 'heldout_train', 'heldout'):
    with open(os.path.join(workdir, 'data', f'{split}.txt')) as f:
      assert videos[split] == len(f.readlines())

  stages = ['world', 'pretrain', *(f'{run}{part}' for run in runs
                                   for part in ('', '_direction', '_zero_shot', *(f'_few_shot_{k}' for k in shots))),
            'report', 'total']
  assert set(results['timing_s']) >= set(stages)
  assert all(results['timing_s'][s] > 0 for s in stages)

  assert os.path.isfile(os.path.join(workdir, 'report.md'))
  quick = demo_config.get_config('pretrain,quick')
  assert results['pretrain']['steps'] == quick.solver.total_steps
  assert math.isfinite(results['pretrain']['final_loss'])
  pretrained = checkpoints.read_params(os.path.join(workdir, 'pretrain'))
  assert set(pretrained) == {'clip'}

  # The validation videos of direction classes, which val_direction is over.
  verbs = {c['id']: c['verb'] for c in classes if c['split'] == 'seen'}
  with open(os.path.join(workdir, 'data', 'val.txt')) as f:
    direction_videos = sum(verbs[int(line.split()[-1])].startswith('moving ') for line in f)

  def shapes(tree):
    return jax.tree_util.tree_map(np.shape, tree)

  assert set(results['runs']) == set(runs)
  for run in runs:
    run_dir = os.path.join(workdir, run)
    r = results['runs'][run]
    assert r['val']['videos'] == videos['val'] and 0 <= r['val']['top1'] <= r['val']['top5'] <= 100
    assert 0 <= r['val_direction']['top1'] <= 100 and r['val_direction']['videos'] == direction_videos
    assert r['zero_shot']['classes'] == heldout and r['zero_shot']['videos'] == videos['heldout']
    assert math.isclose(r['zero_shot']['chance'], 100 / heldout)
    assert {k for k in r if k.startswith('few_shot_')} == {f'few_shot_{k}' for k in shots}
    assert set(r) == set(results['evaluations'])
    with open(os.path.join(run_dir, 'val_direction_predictions.json')) as f:
      assert len(json.load(f)) == direction_videos > 0
    for k in shots:
      few = r[f'few_shot_{k}']
      assert few['shots'] == k and few['videos'] == videos['heldout']
      draws = [name for name in os.listdir(os.path.join(run_dir, f'few_shot_{k}')) if name.endswith('_train.txt')]
      assert draws, f'few_shot_{k} wrote no K-shot list'
      for name in draws:
        with open(os.path.join(run_dir, f'few_shot_{k}', name)) as f:
          assert len(f.readlines()) == k * heldout  # K videos of each held-out class
    # The fine-tune started from the pre-trained CLIP: same tree, same shapes.
    assert shapes(checkpoints.read_params(run_dir)['clip']) == shapes(pretrained['clip'])
    with open(os.path.join(workdir, 'logs', f'{run}.log')) as f:
      assert f'Initialized from {os.path.join(workdir, "pretrain")}' in f.read()
    with open(os.path.join(run_dir, 'config.json')) as f:
      network = json.load(f)['network']
    assert (network['sim_header'], network['interaction']) == demo_config.RUNS[run]


def test_the_full_demo_runs_every_variant_of_the_config():
  """The quick demo trains one run; the full one trains every fine-tune variant of configs/demo.py, with their
  evaluations."""
  assert set(demo.RUNS) == set(demo_config.RUNS) and set(demo.QUICK_RUNS) <= set(demo.RUNS)
  assert set(demo.QUICK_SHOTS) <= set(demo.SHOTS)
  for run in demo.RUNS:
    config = demo_config.get_config(run)
    assert (config.network.sim_header, config.network.interaction) == demo_config.RUNS[run]


def test_quick_multilabel_demo_reports_map_against_chance(tmp_path, xla_cache):
  workdir, results = run_quick_demo(tmp_path, xla_cache, '--multilabel')
  run = f'multilabel_seed{demo.MULTILABEL_SEEDS[0]}'
  assert set(results['runs']) == {run}
  with open(os.path.join(workdir, 'data', 'val.txt')) as f:
    val = [[int(c) for c in line.split()[-1].split(',')] for line in f]
  r = results['runs'][run]
  assert r['val']['videos'] == len(val) == results['world']['videos']['val']
  labels = np.zeros((len(val), 1 + max(max(v) for v in val)), bool)
  for i, classes in enumerate(val):
    labels[i, classes] = True
  scored = labels.any(axis=0)
  assert r['val']['classes_scored'] == scored.sum()
  assert math.isclose(r['val']['chance_mAP'], 100 * labels[:, scored].mean())  # each scored class's prevalence
  assert 0 <= r['val']['mAP'] <= 100 and 0 <= r['zero_shot']['mAP'] <= 100
  assert results['summary']['val']['mAP'] == [r['val']['mAP']]
  assert {'world', 'pretrain', run, f'{run}_heldout', 'report', 'total'} <= set(results['timing_s'])
  report = open(os.path.join(workdir, 'report.md')).read()
  assert f'| {run} | {r["val"]["mAP"]:.1f} |' in report
  assert os.path.isfile(os.path.join(workdir, 'plots', 'per_class_ap.png'))
  with open(os.path.join(workdir, run, 'config.json')) as f:
    assert json.load(f)['data']['multilabel'] is True
