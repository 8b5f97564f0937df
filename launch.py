"""Runs a config on one CPU, one GPU, or every host of a TPU pod slice / GPU cluster.

  python launch.py --config=configs/k400.py:arch=ViT-B/16,frames=8 --workdir=/tmp/k400 [--config.solver.lr=1e-5]
  python launch.py --config=configs/zero_shot.py:dataset=ucf101 --workdir=... --mode=zero_shot

The resolved config is written to WORKDIR/config.json before anything else, and checked (lists exist, batch
divisible by the data-parallel size, ...) before anything compiles. Run the same command on every host of a
multi-host job with --config.distributed=True.
"""
from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'A configs/*.py file, with `:variant` args.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and results go.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'zero_shot', 'few_shot'], 'What to run.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  import jax

  config = _CONFIG.value
  if config.distributed:
    jax.distributed.initialize()  # reads the coordinator and process ids from the TPU/SLURM environment

  from actionclip_jax import config_checks, train

  train.write_config(config, _WORKDIR.value)
  config_checks.check(config, _MODE.value, jax.device_count(), jax.process_count())
  logging.info('Running %s in %s on %d devices', _MODE.value, _WORKDIR.value, jax.device_count())
  if _MODE.value == 'train':
    results = train.train(config, _WORKDIR.value)
  else:
    from actionclip_jax import evaluate
    results = evaluate.run(config, _WORKDIR.value, _MODE.value)
  logging.info('Results: %s', results)


if __name__ == '__main__':
  app.run(main)
