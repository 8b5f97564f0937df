"""Every config's `:runlocal` variant runs through `launch.py` on the CPU, in its mode; `--mode=eval` on an
official-format ActionCLIP checkpoint gives the PyTorch model's top-1 on the same clips."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import torch_actionclip
from actionclip_jax import evaluate, inputs, train
from data_pipelines import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The `tiny` CLIP preset, as an OpenAI-layout PyTorch model.
TINY = dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
            context_length=16, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=2)


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  return synthetic.make_dataset(str(tmp_path_factory.mktemp('data')))


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  return dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO, XLA_FLAGS='--xla_force_host_platform_device_count=1',
              JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp('xla_cache')),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')


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
  launch('configs/zero_shot.py:runlocal,protocol=half', tmp_path, dataset, env, f'--config.init_from={trained}', mode='zero_shot')
  half = eval_results(tmp_path)['half_classes']
  assert half['splits'] == 2 and len(half['top1_per_split']) == 2
  assert np.isclose(half['top1_mean'], np.mean(half['top1_per_split']))


def test_few_shot(trained, dataset, env, tmp_path):
  launch('configs/few_shot.py:runlocal,shots=2', tmp_path, dataset, env, f'--config.init_from={trained}', mode='few_shot')
  results = eval_results(tmp_path)
  assert results['shots'] == 2 and results['videos'] == 6
  with open(os.path.join(tmp_path, 'fewshot_2shot_train.txt')) as f:
    assert len(f.readlines()) == 2 * 3  # 2 videos of each of the 3 classes


def test_eval_of_an_official_checkpoint_gives_the_pytorch_top1(dataset, tmp_path):
  """Two temporal views per video: the per-view probabilities are averaged, as the official multi-view test."""
  from configs import k400
  ckpt = tmp_path / 'official.pt'
  model, fusion = torch_actionclip.official_checkpoint(TINY, ckpt, 'Transf', frames=4)
  config = k400.get_config('runlocal')
  config.data.update(root=dataset['root'], train_list=dataset['train_list'], val_list=dataset['val_list'],
                     label_list=dataset['label_list'])
  config.init_from = str(ckpt)
  config.eval.num_clips = 2
  ours = evaluate.run(config, str(tmp_path / 'eval'), 'eval')

  names = inputs.label_names(config.data)
  table = train.class_table(config, names, 16)
  _, data = inputs.eval_dataset(config, str(tmp_path / 'torch'), config.data.val_list, names)
  mean = np.array((0.48145466, 0.4578275, 0.40821073), np.float32)
  std = np.array((0.26862954, 0.26130258, 0.27577711), np.float32)
  probs, labels = [], []
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
  want = evaluate.accuracy(np.concatenate(probs), np.concatenate(labels))
  assert ours == pytest.approx(want)
