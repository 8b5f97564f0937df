"""Every config's `:runlocal` variant runs through `launch.py` on the CPU, in its mode; `--mode=eval` on an
official-format ActionCLIP checkpoint of each visual prompt gives the PyTorch model's per-video predictions."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import launch_helpers
import torch_actionclip
import torch_heads
from actionclip_jax.runs import builders, evaluate, inputs
from data_pipelines import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The `tiny` CLIP preset, as an OpenAI-layout PyTorch model.
TINY = dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
            context_length=16, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=2)


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  return synthetic.make_dataset(str(tmp_path_factory.mktemp('data')))


@pytest.fixture(scope='module')
def env(xla_cache):
  return launch_helpers.environment(xla_cache)


def launch(config, workdir, dataset, env, *extra, mode='train'):
  args = [sys.executable, os.path.join(REPO, 'launch.py'), f'--config={os.path.join(REPO, config)}',
          f'--workdir={workdir}', f'--mode={mode}', f'--config.data.root={dataset["root"]}',
          f'--config.data.train_list={dataset["train_list"]}', f'--config.data.val_list={dataset["val_list"]}',
          f'--config.data.label_list={dataset["label_list"]}', *extra]
  done = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=400)
  assert done.returncode == 0, done.stderr[-4000:]


def eval_results(workdir):
  names = [n for n in os.listdir(workdir) if n.startswith('eval_') and n.endswith('.json')]
  assert len(names) == 1, names
  with open(os.path.join(workdir, names[0])) as f:
    return json.load(f)


@pytest.fixture(scope='module')
def trained(dataset, env, tmp_path_factory):
  """k400:runlocal trained for its few steps (and evaluated at the end)."""
  workdir = str(tmp_path_factory.mktemp('k400'))
  launch('configs/k400.py:runlocal', workdir, dataset, env, '--config.solver.total_steps=2')
  return workdir


def test_k400_runlocal_trains_and_evaluates(trained):
  results = eval_results(trained)
  assert results['videos'] == 6 and 0 <= results['top1'] <= 100 and 'mean_class' in results


@pytest.mark.parametrize('config', ['hmdb51.py:runlocal', 'ucf101.py:runlocal,wti'])
def test_finetuning_configs_train_from_a_run_dir(config, trained, dataset, env, tmp_path):
  launch(f'configs/{config}', tmp_path, dataset, env, f'--config.init_from={trained}',
         '--config.solver.total_steps=2')
  assert eval_results(tmp_path)['videos'] == 6


def test_zero_shot_half_class_protocol(trained, dataset, env, tmp_path):
  launch('configs/zero_shot.py:runlocal,protocol=half', tmp_path, dataset, env, f'--config.init_from={trained}',
         f'--config.data.val_lists=("{dataset["val_list"]}", "{dataset["train_list"]}")', '--config.eval.max_videos=0',
         mode='zero_shot')
  results = eval_results(tmp_path)
  assert results['splits'] == 2 and len(results['top1_per_split']) == len(results['per_split']) == 2
  assert np.isclose(results['top1_mean'], np.mean(results['top1_per_split']))
  assert np.isclose(results['top1_std'], np.std(results['top1_per_split']))
  listed = results['measured']['lists'][0]
  assert listed["videos_in_lists"] == listed["videos_scored"] == 6 + 12  # the whole dataset, each video once


def test_few_shot_with_a_csv_train_list(trained, dataset, env, tmp_path):
  """Lin et al.'s protocol over 2 seeds (runlocal), from a `path,label_name` CSV train list."""
  names = inputs.label_names(ml_data(dataset))
  rows = [line.split() for line in open(dataset['train_list'])]
  csv_list = tmp_path / 'train.csv'
  csv_list.write_text(''.join(f'{path},{names[int(label)]}\n' for path, _, label in rows))
  launch('configs/few_shot.py:runlocal,shots=2', tmp_path, dataset, env, f'--config.init_from={trained}',
         f'--config.data.train_list={csv_list}', mode='few_shot')
  results = eval_results(tmp_path)
  assert results['shots'] == 2 and results['videos'] == 6 and results['logit_scale'] == 100.0
  assert [r['seed'] for r in results['per_seed']] == [1, 2] and results['splits'] == 2
  assert np.isclose(results['top1'], np.mean([r['top1'] for r in results['per_seed']]))
  for seed in (1, 2):
    with open(os.path.join(tmp_path, f'fewshot_2shot_seed{seed}_train.csv')) as f:
      assert len(f.readlines()) == 2 * 3  # 2 videos of each of the 3 classes, as path,label_name


def ml_data(dataset):
  import ml_collections
  return ml_collections.ConfigDict({'label_list': dataset['label_list'], 'root': dataset['root']})


PROMPTS = ('meanP', 'Conv_1D', 'LSTM', 'Transf', 'Transf_cls')
# launch.py's main once per argv, in one process: the tiny runs cost their compilation, not an interpreter each.
LAUNCH_MANY = """
import json, sys
import launch
from absl import app, flags
for argv in json.loads(sys.argv[1]):
  for name in [n for n in flags.FLAGS if n.startswith('config.')]:  # the previous run's --config.* overrides
    delattr(flags.FLAGS, name)
  sys.argv = ['launch.py'] + argv  # config_flags reads the overrides from sys.argv
  try:
    app.run(launch.main, flags_parser=launch.parse_flags)
  except SystemExit as e:
    if e.code not in (0, None):
      raise
"""


def official_eval_args(dataset, workdir, ckpt, head):
  """--mode=eval of an official checkpoint on the official eval path (full-size frames, one bicubic resize; the
  last partial batch dropped), with bfloat16 as the network's dtype: eval.dtype's float32 default applies."""
  return [f'--config={os.path.join(REPO, "configs/k400.py:runlocal")}', f'--workdir={workdir}', '--mode=eval',
          f'--config.data.root={dataset["root"]}', f'--config.data.val_list={dataset["val_list"]}',
          f'--config.data.label_list={dataset["label_list"]}', f'--config.init_from={ckpt}',
          f'--config.network.sim_header={head}', '--config.network.dtype=bfloat16', '--config.eval.num_clips=2',
          '--config.eval.prescale=False', '--config.eval.drop_last=True']


@pytest.fixture(scope='module')
def official_evals(dataset, env, tmp_path_factory):
  """Each visual prompt's official-format checkpoint, evaluated by launch.py: {head: (workdir, ckpt, torch model,
  torch fusion)}."""
  base = tmp_path_factory.mktemp('official')
  runs, out = [], {}
  for head in PROMPTS:
    ckpt, workdir = base / f'{head}.pt', base / head
    model, fusion = torch_actionclip.official_checkpoint(TINY, ckpt, head, frames=4)
    if head == 'Conv_1D':  # trained-like kernels: under the mean over time the shift init hides which reshape ran
      torch_heads.randomize_(fusion, scale=0.5, seed=1)
      saved = torch.load(ckpt, weights_only=True)
      saved['fusion_model_state_dict'] = {f'module.{k}': v for k, v in fusion.state_dict().items()}
      torch.save(saved, ckpt)
    out[head] = (workdir, ckpt, model, fusion)
    runs.append(official_eval_args(dataset, workdir, ckpt, head))
  done = subprocess.run([sys.executable, '-c', LAUNCH_MANY, json.dumps([[str(a) for a in r] for r in runs])],
                        env=env, cwd=REPO, capture_output=True, text=True, timeout=400)
  assert done.returncode == 0, done.stderr[-4000:]
  return out


def torch_predictions(config, workdir, model, fusion):
  """The official test.py on the same clips: per video (video_id, label, predicted class, probabilities)."""
  names = inputs.label_names(config.data)
  table = builders.class_table(config, names, 16)
  _, data = inputs.eval_dataset(config, str(workdir), config.data.val_list, names)
  mean = np.array((0.48145466, 0.4578275, 0.40821073), np.float32)
  std = np.array((0.26862954, 0.26130258, 0.27577711), np.float32)
  ids, labels, probs = [], [], []
  with torch.no_grad():
    text = model.encode_text(torch.from_numpy(table.reshape(-1, 16)).long())
    text = text / text.norm(dim=-1, keepdim=True)
    for batch in data:
      frames = (batch['frames'].astype(np.float32) / 255 - mean) / std  # [B, V, T, H, W, 3]
      b, v, t = frames.shape[:3]
      image = model.encode_image(torch.from_numpy(frames.reshape(b * v * t, 32, 32, 3)).permute(0, 3, 1, 2))
      pooled = fusion(image.view(b * v, t, -1))[0]
      pooled = pooled / pooled.norm(dim=-1, keepdim=True)
      sim = (100.0 * pooled @ text.T).view(b * v, table.shape[0], -1).softmax(dim=-1).mean(dim=1)
      probs.append(sim.view(b, v, -1).mean(dim=1).numpy()[batch['mask']])
      labels.append(batch['label'][batch['mask']])
      ids.append(batch['video_id'][batch['mask']])
  return np.concatenate(ids), np.concatenate(labels), np.concatenate(probs)


@pytest.mark.parametrize('head', PROMPTS)
def test_eval_of_an_official_checkpoint_through_launch_gives_the_pytorch_predictions(official_evals, dataset, head):
  """Two temporal views per video: the per-view probabilities are averaged, as the official multi-view test."""
  from configs import k400
  workdir, ckpt, model, fusion = official_evals[head]
  config = k400.get_config('runlocal')
  with open(os.path.join(workdir, 'config.json')) as f:
    written = json.load(f)
  config.data.update({k: written['data'][k] for k in ('root', 'val_list', 'label_list')})
  config.eval.update({k: written['eval'][k] for k in ('num_clips', 'batch_size', 'max_videos', 'prescale',
                                                      'drop_last')})
  ids, labels, probs = torch_predictions(config, workdir / 'torch', model, fusion)
  with open(os.path.join(workdir, 'predictions_eval_k400_val.csv')) as f:
    rows = [tuple(int(x) for x in line.split(',')) for line in f.read().splitlines()[1:]]
  assert rows == list(zip(ids.tolist(), labels.tolist(), probs.argmax(axis=1).tolist()))
  results = eval_results(workdir)
  want = evaluate.accuracy(probs, labels)
  assert {k: results[k] for k in want} == pytest.approx(want)
  measured = results['measured']
  assert measured['dtype'] == 'float32' and measured['views'] == {'clips': 2, 'crops': 1, 'per_video': 2}
  assert measured['prescale'] is False and measured['drop_last'] is True and len(measured['templates']) == 16
  import hashlib
  assert measured['checkpoint'] == {'path': str(ckpt), 'sha256': hashlib.sha256(ckpt.read_bytes()).hexdigest()}
  listed = measured['lists'][0]
  assert listed['sha256'] == hashlib.sha256(open(dataset['val_list'], 'rb').read()).hexdigest()
  # 6 videos, eval batches of 4: the official test's last partial batch (2 videos) is dropped.
  assert (listed['videos_listed'], listed['videos_dropped'], listed['videos_scored'], listed['videos_skipped']) == (
      6, 2, 4, 0)
