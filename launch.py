r"""Runs a config on one CPU, one GPU, or every host of a TPU pod slice / GPU cluster.

  python launch.py --config=configs/k400.py:arch=ViT-B/16,frames=8 --workdir=workdirs/k400 [--config.solver.lr=1e-5]
  python launch.py --config=configs/zero_shot.py:dataset=ucf101 --workdir=... --mode=zero_shot
  python launch.py --config=configs/demo.py:pretrain --workdir=... --mode=pretrain   # CLIP on image-caption pairs
  python launch.py --config=configs/k400.py:arch=ViT-B/16 --workdir=... --mode=compile \
      --config.compile.topology=v5e:16x16   # the train step compiled for a 256-chip TPU slice, sized, not run

The resolved config is written to WORKDIR/config.json before anything else, and checked (lists exist, batch
divisible by the data-parallel size, ...) before anything compiles. Run the same command on every host of a
multi-host job with --config.distributed=True.
"""
import types

from absl import app, flags, logging
from ml_collections import config_flags

MODES = ('train', 'pretrain', 'eval', 'zero_shot', 'few_shot', 'compile')


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> types.SimpleNamespace:
  """launch.py's flags on `flag_values` (the docs' tests parse each documented command with a fresh set)."""
  return types.SimpleNamespace(
      config=config_flags.DEFINE_config_file('config', None, 'A configs/*.py file, with `:variant` args.',
                                             flag_values=flag_values, lock_config=True),
      workdir=flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and results go.',
                                  flag_values=flag_values),
      mode=flags.DEFINE_enum('mode', 'train', MODES, 'What to run.', flag_values=flag_values),
      # Multi-process without cluster auto-detection (SLURM, Open MPI, Cloud TPU and Kubernetes are detected by
      # `--config.distributed=True` alone): the same command on every process, each with its own --process_id.
      coordinator_address=flags.DEFINE_string('coordinator_address', None, 'host:port of process 0.',
                                              flag_values=flag_values),
      num_processes=flags.DEFINE_integer('num_processes', None, 'Number of processes.', flag_values=flag_values),
      process_id=flags.DEFINE_integer('process_id', None, 'This process, 0 .. num_processes - 1.',
                                      flag_values=flag_values))


_FLAGS = define_flags()
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  import jax

  config, workdir, mode = _FLAGS.config.value, _FLAGS.workdir.value, _FLAGS.mode.value
  heartbeat = {'heartbeat_timeout_seconds': config.heartbeat_timeout_s}
  if _FLAGS.coordinator_address.value:
    jax.distributed.initialize(_FLAGS.coordinator_address.value, _FLAGS.num_processes.value, _FLAGS.process_id.value,
                               **heartbeat)
  elif config.distributed:
    jax.distributed.initialize(**heartbeat)  # the coordinator and process ids: from the TPU / SLURM / MPI environment

  from actionclip_jax.runs import aot, builders, config_checks, executables

  builders.write_config(config, workdir)
  try:
    devices = aot.target_devices(config) if mode == 'compile' else jax.devices()
    config_checks.check(config, mode, len(devices), jax.process_count())
  except ValueError as e:
    raise SystemExit(str(e)) from None  # one message, no traceback: nothing has started yet
  logging.info('Running %s in %s on %d devices', mode, workdir, len(devices))
  if mode == 'train':
    from actionclip_jax.runs import train
    try:
      results = train.train(config, workdir)
    except executables.MismatchError as e:
      raise SystemExit(str(e)) from None  # a compiled step for another run: one line, before any step ran
  elif mode == 'compile':
    results = aot.compile_for(config, workdir)
  elif mode == 'pretrain':
    from actionclip_jax.runs import pretrain
    results = pretrain.train(config, workdir)
  else:
    from actionclip_jax.runs import evaluate
    results = evaluate.run(config, workdir, mode)
  logging.info('Results: %s', results)


def parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except AttributeError as e:  # ml_collections' answer to `--config.no_such_field=...`
    message = ' '.join(str(e).strip('\'"').replace("\\'", "'").split('\\n'))
    raise SystemExit(f'FATAL Flags parsing error: unknown config field {message}') from None


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
