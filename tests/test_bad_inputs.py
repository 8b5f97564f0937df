"""Fault injection through `launch.py` on `configs/k400.py:runlocal`; each test's name states the promised outcome.

A bad list line, label CSV or `init_from` file is rejected by the config checks, before anything compiles: launch
exits non-zero with one message naming the file and line. A bad video met during training is skipped, listed in
WORKDIR/bad_videos.jsonl, and the run finishes.

Training runs are 2 steps of 8 clips (`launch_helpers.launch_args`). Every video has 4 frames, so the 4 segments
read each of its frames, and the lists are at most 8 videos long: the first batch covers a whole epoch, every bad
video included.
"""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from actionclip_jax.runs import metrics
from data_pipelines import synthetic
from data_pipelines.bad_videos import read_bad_videos
from launch_helpers import REPO, environment, launch_args
from untrusted import CreatesFileOnLoad

FRAMES = 4


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  """3 classes, 2 training videos each, no validation list (no evaluation: these runs are about training data)."""
  return synthetic.make_dataset(str(tmp_path_factory.mktemp('data')), train_per_class=2, val_per_class=0,
                                num_frames=FRAMES)


def launch(dataset, workdir, xla_cache, *extra, **lists):
  """launch.py for 2 steps on `dataset`, with any of its lists (train_list=, label_list=) replaced."""
  args = launch_args(dict(dataset, **{k: str(v) for k, v in lists.items()}), workdir, *extra, steps=2)
  return subprocess.run(args, env=environment(xla_cache), cwd=REPO, capture_output=True, text=True, timeout=400)


def assert_rejected_before_compiling(done, workdir, *expected):
  assert done.returncode != 0, done.stderr[-4000:]
  assert 'Traceback' not in done.stderr, done.stderr[-4000:]
  for text in expected:
    assert text in done.stderr, done.stderr[-4000:]
  # The resolved config is written first; a run that passed the checks would go on to compile and checkpoint.
  assert os.listdir(workdir) == ['config.json']


def assert_finished_with_bad_videos(done, workdir, bad: dict[str, str]):
  """The run trained its 2 steps; `bad` (path -> a part of the reason) is exactly what bad_videos.jsonl lists."""
  assert done.returncode == 0, done.stderr[-4000:]
  assert [r['step'] for r in metrics.read_metrics(str(workdir))] == [1, 2]
  reported = read_bad_videos(str(workdir))
  assert set(reported) == set(bad), reported
  for path, reason in bad.items():
    assert all(reason in r for r in reported[path]), reported[path]


def lines_of(path) -> list[bytes]:
  with open(path, 'rb') as f:
    return f.read().splitlines(keepends=True)


# name -> (the list file's lines, the label CSV's lines) from the good ones, and what the one message must hold.
BAD_LISTS = {
    'label_out_of_range': (lambda lines, labels: (lines[:2] + [b'videos/train_0_0.mp4 4 3\n'] + lines[2:], labels),
                           'train.txt:3: label 3 is not in the label CSV (ids 0..2)'),
    'duplicate_label_id': (lambda lines, labels: (lines, labels + [b'1,javelin throw\n']),
                           'labels.csv:5: label id 1 appears twice'),
    # A list written in Latin-1 names its videos wrongly: rejected at once, not one bad video per line mid-run.
    'path_not_utf8': (lambda lines, labels: (lines[:1] + [b'videos/caf\xe9.mp4 4 0\n'] + lines[1:], labels),
                      "train.txt:2: not UTF-8 text (byte 0xe9 at character 11): b'videos/caf\\xe9.mp4 4 0'"),
}


@pytest.mark.parametrize('fault', sorted(BAD_LISTS))
def test_bad_list_or_label_csv_is_rejected_before_compiling_with_file_and_line(dataset, xla_cache, tmp_path, fault):
  edit, message = BAD_LISTS[fault]
  lines, labels = edit(lines_of(dataset['train_list']), lines_of(dataset['label_list']))
  (tmp_path / 'lists').mkdir()
  train_list, label_list = tmp_path / 'lists' / 'train.txt', tmp_path / 'lists' / 'labels.csv'
  train_list.write_bytes(b''.join(lines))
  label_list.write_bytes(b''.join(labels))
  workdir = tmp_path / 'run'
  done = launch(dataset, workdir, xla_cache, train_list=train_list, label_list=label_list)
  assert_rejected_before_compiling(done, workdir, f'{tmp_path / "lists"}/{message}')


def test_init_from_pickle_that_would_run_code_is_refused_before_compiling_and_never_runs(dataset, xla_cache,
                                                                                           tmp_path):
  marker, evil = tmp_path / 'marker', tmp_path / 'clip.pt'
  torch.save(CreatesFileOnLoad(marker), evil)
  workdir = tmp_path / 'run'
  done = launch(dataset, workdir, xla_cache, f'--config.init_from={evil}')
  assert_rejected_before_compiling(done, workdir, f'init_from: {evil} is refused: ', 'whose pickle names io.open:')
  assert not marker.exists()
  assert 'weights_only' not in done.stderr  # torch's advice to load the file unsafely never reaches the user


def test_video_that_decodes_to_zero_frames_is_skipped_and_reported_and_the_run_finishes(dataset, xla_cache, tmp_path):
  # An AVI cut right after its header: the header promises 4 frames, the file holds none.
  synthetic.write_video(str(tmp_path / 'full.avi'), np.full((FRAMES, 40, 48, 3), 128, np.uint8))
  data = (tmp_path / 'full.avi').read_bytes()
  header_only = tmp_path / 'header_only.avi'
  header_only.write_bytes(data[:data.index(b'movi') + 4])
  train_list = tmp_path / 'train.txt'
  train_list.write_bytes(b''.join(lines_of(dataset['train_list'])) + f'{header_only} {FRAMES} 0\n'.encode())
  workdir = tmp_path / 'run'
  done = launch(dataset, workdir, xla_cache, train_list=train_list)  # an absolute path in a list ignores the root
  assert_finished_with_bad_videos(done, workdir, {str(header_only): 'the video stream holds no frames'})


def corrupt_packed_frame(packed_dir, example: int):
  """Overwrites the JPEG header of one frame record; rewritten through array_record, so its compression stays."""
  from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter
  shard, = glob.glob(os.path.join(packed_dir, '**', '*.array_record-*'), recursive=True)
  reader = ArrayRecordReader(shard)
  options, records = reader.writer_options_string(), reader.read_all()
  reader.close()
  record = records[example]
  start = record.index(b'\xff\xd8\xff')  # the JPEG's start-of-image marker inside the serialized example
  records[example] = record[:start] + bytes(32) + record[start + 32:]
  writer = ArrayRecordWriter(shard, options)
  for record in records:
    writer.write(record)
  writer.close()


def test_corrupt_jpeg_in_a_packed_shard_is_skipped_and_reported_and_the_run_finishes(dataset, xla_cache, tmp_path):
  packed = tmp_path / 'packed'
  subprocess.run([sys.executable, '-m', 'data_pipelines.pack', '--list', dataset['train_list'], '--labels',
                  dataset['label_list'], '--out', str(packed), '--root', dataset['root'], '--short_side', '40',
                  '--workers', '1'], env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO, check=True, capture_output=True,
                 timeout=300)
  with open(packed / 'records.jsonl') as f:
    records = [json.loads(line) for line in f]
  assert [r['num_frames'] for r in records] == [FRAMES] * 6
  corrupt_packed_frame(packed, example=1 * FRAMES + 2)  # the third frame of the second video
  workdir = tmp_path / 'run'
  done = launch(dataset, workdir, xla_cache, '--config.data.source=packed', train_list=packed)
  assert_finished_with_bad_videos(done, workdir, {records[1]['path']: 'undecodable frame'})
