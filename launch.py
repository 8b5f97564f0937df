"""Runs a config on one CPU, one GPU, or every host of a TPU pod slice / GPU cluster.

  python launch.py --config=configs/k400.py:arch=ViT-B/16,frames=8 --workdir=/tmp/k400 [--config.solver.lr=1e-5]
  python launch.py --config=configs/zero_shot.py:dataset=ucf101 --workdir=... --mode=zero_shot
  python launch.py --config=configs/demo.py:pretrain --workdir=... --mode=pretrain   # CLIP on image-caption pairs

The resolved config is written to WORKDIR/config.json before anything else, and checked (lists exist, batch
divisible by the data-parallel size, ...) before anything compiles. Run the same command on every host of a
multi-host job with --config.distributed=True.
"""
from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'A configs/*.py file, with `:variant` args.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and results go.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'pretrain', 'eval', 'zero_shot', 'few_shot'], 'What to run.')
# Multi-process without cluster auto-detection (SLURM, Open MPI, Cloud TPU and Kubernetes are detected by
# `--config.distributed=True` alone): the same command on every process, each with its own --process_id.
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process, 0 .. num_processes - 1.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  import jax

  config = _CONFIG.value
  if _COORDINATOR.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  elif config.distributed:
    jax.distributed.initialize()  # the coordinator and process ids come from the TPU / SLURM / MPI environment

  from actionclip_jax import config_checks, train

  train.write_config(config, _WORKDIR.value)
  try:
    config_checks.check(config, _MODE.value, jax.device_count(), jax.process_count())
  except ValueError as e:
    raise SystemExit(str(e)) from None  # one message, no traceback: nothing has started yet
  logging.info('Running %s in %s on %d devices', _MODE.value, _WORKDIR.value, jax.device_count())
  if _MODE.value == 'train':
    results = train.train(config, _WORKDIR.value)
  elif _MODE.value == 'pretrain':
    from actionclip_jax import pretrain
    results = pretrain.train(config, _WORKDIR.value)
  else:
    from actionclip_jax import evaluate
    results = evaluate.run(config, _WORKDIR.value, _MODE.value)
  logging.info('Results: %s', results)


def parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except AttributeError as e:  # ml_collections' answer to `--config.no_such_field=...`
    message = ' '.join(str(e).strip('\'"').replace("\\'", "'").split('\\n'))
    raise SystemExit(f'FATAL Flags parsing error: unknown config field {message}') from None


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
