"""Multi-label runs end to end through `launch.py`: Charades' own file formats (generated videos), interval
sampling, bad rows reported and left out, training that resumes, mAP and per-class AP, the sigmoid loss, and
`predict` naming every class above the run's threshold."""
import csv
import json
import os
import sys

import pytest

from actionclip_jax.runs import evaluate
from data_pipelines import synthetic
from launch_helpers import REPO, environment, finished_steps, run

CONFIG = os.path.join(REPO, 'configs', 'charades.py')


@pytest.fixture(scope='module')
def world(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('charades'))
  paths = synthetic.make_multilabel_world(out, train_videos=8, val_videos=4, heldout_videos=2, frames=(12, 16),
                                          charades=True)
  # Three bad rows in Charades' train CSV: an unknown class, an action ending before it starts, a missing video.
  with open(paths['charades_train'], 'a', newline='') as f:
    writer = csv.writer(f)
    first = synthetic_first_id(paths)
    writer.writerow((first, 'x', 'c999 0.0 1.0', '2.0'))
    writer.writerow((first, 'x', 'c000 1.5 0.5', '2.0'))
    writer.writerow(('no_such_video', 'x', 'c000 0.0 1.0', '2.0'))
  return paths


def synthetic_first_id(paths) -> str:
  with open(paths['charades_train'], newline='') as f:
    return next(csv.DictReader(f))['id']


def launch(world, workdir, *extra, mode='train', steps=4, variant='runlocal,sampling=interval'):
  return run([sys.executable, os.path.join(REPO, 'launch.py'), f'--config={CONFIG}:{variant}', f'--mode={mode}',
              f'--workdir={workdir}', f'--config.data.root={world["charades_root"]}',
              f'--config.data.train_list={world["charades_train"]}', f'--config.data.val_list={world["charades_val"]}',
              f'--config.data.label_list={world["charades_classes"]}', '--config.data.batch_size=4',
              '--config.eval.batch_size=4', f'--config.solver.total_steps={steps}', '--config.eval.every_steps=2',
              '--config.checkpoint_every_steps=2', *extra], environment(workdir.parent / 'xla_cache'), timeout=400)


def read_json(path):
  with open(path) as f:
    return json.load(f)


def test_charades_run_trains_resumes_evaluates_and_predicts(world, tmp_path):
  workdir = tmp_path / 'run'
  done = launch(world, workdir)
  # Bad rows: reported with file:line, and the run went on.
  log = done.stderr
  train_csv = world['charades_train']
  rows = sum(1 for _ in open(train_csv)) - 1
  assert f'{train_csv}:{rows - 1}' in log and 'c999' in log  # the unknown class, on its line
  assert f'{train_csv}:{rows}' in log and 'before it starts' in log
  assert f'{train_csv}:{rows + 1}' in log and 'not found' in log
  assert finished_steps(workdir) == [2, 4]
  result = read_json(workdir / 'eval_charades_val_step4.json')
  names = open(world['charades_classes']).read().splitlines()
  assert set(result['per_class_ap']) | set(result['classes_without_positives']) <= {n.split(' ', 1)[1] for n in names}
  assert 0 <= result['mAP'] <= 100 and result['classes_scored'] == len(result['per_class_ap']) > 0
  assert result['chance_mAP'] > 0 and 'threshold' in result and result['measured']['lists']
  assert read_json(workdir / evaluate.THRESHOLD_FILE)['threshold'] == result['threshold']
  # Resumes: two more steps from the checkpoint of step 4.
  done = launch(world, workdir, steps=6)
  assert 'at step 4' in done.stderr  # builders.start_state: 'Resumed <workdir> at step 4'
  assert finished_steps(workdir)[-1] == 6 and os.path.exists(workdir / 'eval_charades_val_step6.json')
  # Multi-view evaluation of the run: views averaged before AP.
  launch(world, workdir, '--config.eval.num_clips=2', mode='eval', steps=6)
  assert 'mAP' in read_json(workdir / 'eval_eval_charades_val.json')
  # predict: top-k and every class above the run's own threshold.
  video = os.path.join(world['charades_root'], f'{synthetic_first_id(world)}.mp4')
  done = run([sys.executable, '-m', 'actionclip_jax.predict', video, f'--model={workdir}', '--top_k=2', '--json'],
             environment(tmp_path / 'xla_cache'))
  (prediction,) = json.loads(done.stdout)
  assert len(prediction['top']) == 2 and 'above' in prediction
  threshold = read_json(workdir / evaluate.THRESHOLD_FILE)['threshold']
  assert all(entry['prob'] > threshold for entry in prediction['above'])


def test_sigmoid_loss_run(world, tmp_path):
  workdir = tmp_path / 'sigmoid'
  launch(world, workdir, steps=2, variant='runlocal,loss=sigmoid')
  result = read_json(workdir / 'eval_charades_val_step2.json')
  assert 0 <= result['mAP'] <= 100
