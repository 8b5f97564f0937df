"""MetricWriter (JSONL, TensorBoard event files, eval JSON), Progress, param_table and check_finite."""
import glob
import json
import math
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import masked_crc32c

from actionclip_jax.runs import metrics


def read_events(directory):
  """Every Event in the directory's event files, in file then record order, checking the TFRecord framing."""
  events = []
  for path in sorted(glob.glob(os.path.join(directory, 'events.out.tfevents.*'))):
    with open(path, 'rb') as f:
      data = f.read()
    offset = 0
    while offset < len(data):
      header = data[offset:offset + 8]
      (length,) = struct.unpack('<Q', header)
      (header_crc,) = struct.unpack('<I', data[offset + 8:offset + 12])
      assert header_crc == masked_crc32c(header), path
      payload = data[offset + 12:offset + 12 + length]
      (payload_crc,) = struct.unpack('<I', data[offset + 12 + length:offset + 16 + length])
      assert payload_crc == masked_crc32c(payload), path
      offset += 16 + length
      event = event_pb2.Event()
      event.ParseFromString(payload)
      events.append(event)
  return events


def scalars(events):
  """{tag: [(step, value), ...]} of the events' simple values."""
  out = {}
  for event in events:
    for value in event.summary.value:
      out.setdefault(value.tag, []).append((event.step, value.simple_value))
  return out


def test_jsonl_tensorboard_and_eval(tmp_path):
  with metrics.MetricWriter(tmp_path, enabled=True) as writer:
    for step in (10, 20, 30):
      writer.write(step, {'loss': jnp.float32(1.0 / step), 'lr': np.float64(5e-6), 'clips_per_sec': 123.5,
                          'nan_metric': float('nan')})
    path = writer.write_eval('k400_val', {'top1': np.float32(0.75), 'top5': 0.9, 'step': 30,
                                          'half_classes': {'mean': 0.5, 'std': 0.1, 'splits': [0.4, 0.6]}})
  records = metrics.read_metrics(tmp_path)
  assert [r['step'] for r in records] == [10, 20, 30]
  assert set(records[0]) == {'step', 'loss', 'lr', 'clips_per_sec', 'nan_metric'}
  assert records[1]['loss'] == pytest.approx(0.05) and records[0]['lr'] == 5e-6
  assert records[0]['nan_metric'] is None  # strict JSON: NaN becomes null
  with open(tmp_path / 'metrics.jsonl') as f:
    for line in f:
      json.loads(line, parse_constant=lambda c: pytest.fail(f'non-standard JSON constant {c}'))

  assert path == str(tmp_path / 'eval_k400_val.json')
  with open(path) as f:
    results = json.load(f)
  assert results['top1'] == pytest.approx(0.75) and results['half_classes']['splits'] == [0.4, 0.6]

  tb = scalars(read_events(tmp_path / 'tensorboard'))
  assert [s for s, _ in tb['train/loss']] == [10, 20, 30]
  assert [v for _, v in tb['train/loss']] == pytest.approx([0.1, 0.05, 1 / 30])
  assert tb['train/clips_per_sec'][0] == (10, 123.5)
  assert 'train/nan_metric' not in tb  # nothing non-finite reaches TensorBoard
  assert tb['k400_val/top1'] == [(30, pytest.approx(0.75))] and 'k400_val/half_classes' not in tb


def test_truncate_after_resume(tmp_path):
  with metrics.MetricWriter(tmp_path, enabled=True) as writer:
    for step in range(1, 7):
      writer.write(step, {'loss': float(step), 'lr': 0.1, 'clips_per_sec': 1.0})
  with open(tmp_path / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 7, "lo')  # a line torn by SIGKILL

  with metrics.MetricWriter(tmp_path, enabled=True) as writer:  # the resumed run; its checkpoint is step 4
    writer.truncate_after(4)
    assert [r['step'] for r in metrics.read_metrics(tmp_path)] == [1, 2, 3, 4]
    for step in (5, 6):
      writer.write(step, {'loss': 10.0 * step, 'lr': 0.1, 'clips_per_sec': 1.0})
  records = metrics.read_metrics(tmp_path)
  assert [(r['step'], r['loss']) for r in records] == [(1, 1), (2, 2), (3, 3), (4, 4), (5, 50), (6, 60)]

  events = read_events(tmp_path / 'tensorboard')
  purges = [e.step for e in events if e.HasField('session_log') and e.session_log.status == e.session_log.START]
  assert purges == [5]  # TensorBoard drops the first attempt's steps >= 5
  assert len(glob.glob(str(tmp_path / 'tensorboard' / 'events.out.tfevents.*'))) == 2

  with metrics.MetricWriter(tmp_path, enabled=True) as writer:
    writer.truncate_after(0)  # resuming from scratch keeps nothing
  assert metrics.read_metrics(tmp_path) == []


def test_disabled_writer_touches_nothing(tmp_path):
  workdir = tmp_path / 'run'
  with metrics.MetricWriter(workdir, enabled=False) as writer:
    writer.write(1, {'loss': 1.0, 'lr': 0.1, 'clips_per_sec': 1.0})
    writer.truncate_after(0)
    assert writer.write_eval('val', {'top1': 1.0}) is None
  assert not workdir.exists()


def test_closed_writer_refuses(tmp_path):
  writer = metrics.MetricWriter(tmp_path, enabled=True)
  writer.close()
  writer.close()  # idempotent
  with pytest.raises(RuntimeError, match='closed'):
    writer.write(1, {'loss': 1.0})


def test_param_table():
  params = {'clip': {'visual': {'conv1': {'kernel': jnp.zeros((8, 8, 3, 16))}, 'ln_post': {'scale': jnp.zeros(16)}},
                     'logit_scale': jnp.zeros(())},
            'fusion': {'frame_position_embeddings': {'embedding': jax.ShapeDtypeStruct((77, 16), jnp.float32)}}}
  total = 8 * 8 * 3 * 16 + 16 + 1 + 77 * 16
  table = metrics.param_table(params)
  lines = table.splitlines()
  assert 'clip/visual/conv1/kernel' in table and '(8, 8, 3, 16)' in table and '3,072' in table
  assert lines[-2].split()[0] == 'Total' and lines[-2].split()[-1] == f'{total:,}'
  assert '4 arrays' in lines[-2] and lines[-1] == f'({total / 1e6:.2f}M parameters)'
  grouped = metrics.param_table(params, depth=2)
  assert 'clip/visual' in grouped and '2 arrays' in grouped and 'conv1' not in grouped
  assert grouped.splitlines()[-2].split()[-1] == f'{total:,}'


def test_param_table_of_boxed_flax_params():
  from actionclip_jax.model import clip, video
  config = video.ActionCLIPConfig(clip.get_preset('tiny', num_frames=2), sim_header='meanP')
  shapes = jax.eval_shape(lambda: video.init_params(config, jax.random.key(0), boxed=True))
  count = sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(video.param_shapes(config)))
  table = metrics.param_table(shapes, depth=2)
  assert table.splitlines()[-2].split()[-1] == f'{count:,}'
  assert 'value' not in table  # unboxed, no `.value` path parts


def test_check_finite():
  metrics.check_finite(3, jnp.float32(0.5))
  for bad in (float('nan'), float('inf'), jnp.float32(-jnp.inf)):
    with pytest.raises(FloatingPointError, match='at step 12') as err:
      metrics.check_finite(12, bad)
    assert 'last good checkpoint' in str(err.value)
  with pytest.raises(FloatingPointError, match=r'checkpoint \(step 10\)'):
    metrics.check_finite(12, float('nan'), last_checkpoint_step=10)


def test_progress(capsys):
  with metrics.Progress(10, initial=4, enabled=True) as bar:
    assert bar.enabled
    bar.update(6, loss=1.25, clips_per_sec=50.0)
    bar.update(10, loss=jnp.float32(1.0), clips_per_sec=51.0, lr=1e-5, eta_s=3725)
  err = capsys.readouterr().err
  assert '10/10' in err and 'loss=1.0000' in err and 'clips/s=51.0' in err and 'finish in=1:02:05' in err
  quiet = metrics.Progress(10, enabled=False)
  quiet.update(3, loss=1.0)
  quiet.close()
  assert not quiet.enabled and capsys.readouterr().err == ''


class FakeClock:

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_step_timer_splits_data_wait_from_step_time_and_reports_mfu_and_eta(caplog):
  clock = FakeClock()
  timer = metrics.StepTimer(batch_size=8, total_steps=100, start_step=10, flops_per_step=10e12, peak=10e12,
                            devices=2, clock=clock)
  for _ in range(2):  # two steps of 1 s each, 0.1 s of it waiting for a batch
    with timer.data_wait():
      clock.now += 0.1
    clock.now += 0.9
  with timer.excluded():  # an evaluation: neither step nor data time
    clock.now += 50
  out = timer.lap(12)
  assert out == pytest.approx({'data_wait_s': 0.1, 'step_s': 1.0, 'clips_per_sec': 8.0, 'mfu': 0.5, 'eta_s': 88.0,
                               'flops_per_step': 10e12})  # the step's FLOPs over 2 devices' peak; given once
  assert 'input-bound' not in caplog.text
  with timer.data_wait():  # a starved step: 0.8 of 1 s waiting
    clock.now += 0.8
  clock.now += 0.2
  out = timer.lap(13)
  assert out['data_wait_s'] == pytest.approx(0.8) and out['step_s'] == pytest.approx(1.0)
  assert 'flops_per_step' not in out
  assert 'input-bound' in caplog.text and '80%' in caplog.text


def test_no_mfu_without_a_known_peak():
  assert metrics.peak_flops('cpu') is None
  assert metrics.peak_flops('NVIDIA H100 80GB HBM3') == 989e12 and metrics.peak_flops('NVIDIA A100-SXM4-40GB') == 312e12
  assert metrics.peak_flops('TPU v5 lite') == 197e12
  clock = FakeClock()
  timer = metrics.StepTimer(4, 10, flops_per_step=1e9, peak=metrics.peak_flops('cpu'), clock=clock)
  clock.now += 2
  assert 'mfu' not in timer.lap(1)
