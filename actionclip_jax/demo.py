"""The main job, from scratch and offline: `python -m actionclip_jax.demo --workdir=workdirs/demo` (`make demo`).

Every stage but the first is the project's real path in a subprocess: `launch.py` with `configs/demo.py`, or
`python -m actionclip_jax.predict`:

1. `world`: the synthetic action world (`data_pipelines.synthetic.make_world`) into WORKDIR/data;
2. `pretrain`: a tiny CLIP on the world's image-caption pairs (`--mode=pretrain`) into WORKDIR/pretrain;
3. for each run of `RUNS`:
   - `<run>`: prompt + fine-tune from WORKDIR/pretrain into WORKDIR/<run>, which evaluates on the validation videos
     every `eval.every_steps` and at the end (`eval_val_step<k>.json`);
   - `<run>_direction`: the validation videos of the classes whose verb is a direction (`DIRECTIONS`) predicted one
     by one (WORKDIR/<run>/val_direction_predictions.json); their top-1 is `val_direction`;
   - `<run>_zero_shot`: `--mode=zero_shot` on the held-out classes, into WORKDIR/<run>/zero_shot;
   - `<run>_few_shot_<K>`: `--mode=few_shot` on the held-out classes with K = 2 and 4 videos of each from the
     world's `heldout_train.txt`, into WORKDIR/<run>/few_shot_<K>;
4. WORKDIR/results.json (the numbers, and each stage's wall time in `timing_s`), then WORKDIR/report.md and
   WORKDIR/plots/ (`actionclip_jax.report`).

`--multilabel` (`make demo-multilabel`, its own work dir) is the multi-label task instead: the multi-label world
(`synthetic.make_multilabel_world`: two objects a video, each with its own verb) and the single world's captioned
pictures, the same pre-training, then `configs/demo.py:multilabel` fine-tuned with each seed of `MULTILABEL_SEEDS`
(`multilabel_seed<s>`, validation mAP every 200 steps), each evaluated by mAP on the held-out verb-object
combinations (`multilabel_seed<s>_heldout`, zero-shot), into results.json and report.md with the per-class AP.

After pre-training, `--parallel` subprocesses (2: the target is a 2-core CPU) run at a time, fine-tunes first: much
of each is single-threaded (start-up, tracing, compiling). Each stage writes its output to WORKDIR/logs/<stage>.log;
a stage that fails stops the demo with the end of its log. Rerunning the command resumes: finished runs are not
trained again (delete the work dir to start over). `--quick` is a seconds-long version for the test suite: a tiny
world, a few steps, and only the `transf` run with K = 4 (`QUICK_RUNS`, `QUICK_SHOTS`: every stage kind still runs
once, and each subprocess costs seconds of start-up and compilation).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shlex
import subprocess
import sys
import time

from absl import app, flags, logging

from actionclip_jax.runs import inputs, metrics
from data_pipelines import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO, 'launch.py')
CONFIG = os.path.join(REPO, 'configs', 'demo.py')
RUNS = ('transf', 'meanp', 'transf_wti')  # the fine-tune variants of configs/demo.py
DIRECTIONS = ('moving left', 'moving right', 'moving up', 'moving down')
SHOTS = (2, 4)
MULTILABEL_SEEDS = (1024, 1)  # config seeds of the multi-label fine-tunes: their spread is stated with the result
# Drawn at 64 pixels (an object a quadrant) and written at 32, the pre-trained tower's input: decoding 64-pixel videos
# made the fine-tunes wait on their data 3/4 of each step.
MULTILABEL_WORLD = dict(train_videos=1200, val_videos=128, heldout_videos=64, video_size=32)
QUICK_RUNS = ('transf',)  # the run the report's confusion matrix and examples show
QUICK_SHOTS = (4,)
# A few videos of each class and a handful of pictures: every stage still runs, in seconds.
QUICK_WORLD = dict(train_per_class=2, val_per_class=1, heldout_per_class=2, heldout_train_per_class=4,
                   frames=(8, 12), pretrain_images=64)
QUICK_MULTILABEL_WORLD = dict(train_videos=8, val_videos=4, heldout_videos=4, frames=(8, 12), video_size=32)
# The single world without its videos: only pre-training's captioned pictures.
CAPTIONS_ONLY = dict(train_per_class=0, val_per_class=0, heldout_per_class=0, heldout_train_per_class=0)

_WORKDIR = flags.DEFINE_string('workdir', 'workdirs/demo', 'Where the world, the runs and the results go.')
_QUICK = flags.DEFINE_bool('quick', False, 'A seconds-long demo (tiny world, a few steps), for tests.')
_SEED = flags.DEFINE_integer('seed', 0, 'The world\'s seed.')
_PARALLEL = flags.DEFINE_integer('parallel', 2, 'Subprocesses at a time after pre-training.', lower_bound=1)
_MULTILABEL = flags.DEFINE_bool('multilabel', False, 'The multi-label demo (make demo-multilabel) instead.')


class StageError(RuntimeError):
  """A stage's subprocess failed; the message names the stage, its log and the end of the log."""


class Demo:
  """The stages of one demo work dir, each timed into `self.timing`."""

  def __init__(self, workdir: str, quick: bool = False, seed: int = 0, parallel: int = 2):
    self.workdir = os.path.abspath(workdir)
    self.quick = quick
    self.seed = seed
    self.parallel = parallel
    self.runs = QUICK_RUNS if quick else RUNS
    self.shots = QUICK_SHOTS if quick else SHOTS
    self.timing: dict[str, float] = {}
    self.logs = os.path.join(self.workdir, 'logs')
    os.makedirs(self.logs, exist_ok=True)
    self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')])))
    # One persistent compilation cache: a run's evaluations compile what its fine-tune compiled, and so on.
    self.env.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(self.workdir, 'xla_cache'))
    self.env.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
    # Stages run side by side on one accelerator: each takes the little memory it needs, not 75% of it.
    self.env.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

  def path(self, *parts: str) -> str:
    return os.path.join(self.workdir, *parts)

  @contextlib.contextmanager
  def stage(self, name: str):
    logging.info('demo: %s ...', name)
    start = time.perf_counter()
    yield
    self.timing[name] = round(time.perf_counter() - start, 2)
    logging.info('demo: %s done in %.1f s', name, self.timing[name])

  def execute(self, stage: str, args: list[str], stdout: str | None = None) -> None:
    """Runs `args` with stderr (and stdout, unless written to `stdout`) in WORKDIR/logs/<stage>.log."""
    log = os.path.join(self.logs, f'{stage}.log')
    with open(log, 'w') as err, open(stdout or os.devnull, 'w') as out:
      err.write(shlex.join(args) + '\n')
      err.flush()
      done = subprocess.run(args, stdout=out if stdout else err, stderr=err, cwd=REPO, env=self.env, check=False)
    if done.returncode:
      with open(log) as f:
        tail = f.read()[-3000:]
      raise StageError(f'demo stage {stage!r} failed (exit status {done.returncode}); its command and output are in '
                       f'{log}:\n{tail}')

  def launch(self, stage: str, variant: str, mode: str, workdir: str, **overrides) -> None:
    """`launch.py --config=configs/demo.py:<variant>[,quick] --mode=<mode> --workdir=<workdir> --config.<k>=<v>`."""
    config = f'{CONFIG}:{variant}' + (',quick' if self.quick else '')
    self.execute(stage, [sys.executable, LAUNCH, f'--config={config}', f'--mode={mode}', f'--workdir={workdir}',
                            *(f'--config.{key}={value}' for key, value in overrides.items())])

  # --- The stages ---------------------------------------------------------------------------------------------

  def world(self) -> dict:
    with self.stage('world'):
      return synthetic.make_world(self.path('data'), seed=self.seed,
                                  **(QUICK_WORLD if self.quick else {'workers': os.cpu_count() or 1}))

  def pretrain(self, world: dict) -> str:
    workdir = self.path('pretrain')
    with self.stage('pretrain'):
      self.launch('pretrain', 'pretrain', 'pretrain', workdir, **{
          'data.root': os.path.dirname(world['captions']), 'data.train_list': world['captions']})
    return workdir

  def finetune(self, run: str, world: dict, pretrained: str) -> str:
    workdir = self.path(run)
    with self.stage(run):
      self.launch(run, run, 'train', workdir, **{
          'init_from': pretrained, 'data.root': world['root'], 'data.train_list': world['train_list'],
          'data.val_list': world['val_list'], 'data.label_list': world['label_list']})
    return workdir

  def direction_top1(self, run: str, run_dir: str, world: dict) -> dict:
    """Top-1 over the validation videos of direction classes, from the run model's per-video predictions."""
    data = run_data(run_dir)
    names = inputs.label_names(data)
    verbs = {c['name']: c['verb'] for c in world_classes(world) if c['split'] == 'seen'}
    records = [r for r in inputs.records(data, data.val_list, names) if verbs[names[r.label]] in DIRECTIONS]
    if not records:
      raise ValueError(f'{data.val_list} has no videos of a direction class ({", ".join(DIRECTIONS)})')
    out = os.path.join(run_dir, 'val_direction_predictions.json')
    with self.stage(f'{run}_direction'):
      self.execute(f'{run}_direction', [
          sys.executable, '-m', 'actionclip_jax.predict', *(r.path for r in records), f'--model={run_dir}',
          f'--labels={data.label_list}', '--top_k=1', '--json'], stdout=out)
    predictions = read_json(out)
    hits = [p['top'][0]['class'] == names[r.label] for p, r in zip(predictions, records, strict=True)]
    return {'top1': 100 * sum(hits) / len(hits), 'videos': len(hits)}

  def zero_shot(self, run: str, run_dir: str, world: dict) -> dict:
    workdir = os.path.join(run_dir, 'zero_shot')
    with self.stage(f'{run}_zero_shot'):
      self.launch(f'{run}_zero_shot', run, 'zero_shot', workdir, **{
          'init_from': run_dir, 'eval.name': 'heldout', 'data.root': world['root'],
          'data.val_list': world['heldout_list'], 'data.label_list': world['heldout_label_list']})
    classes = len(inputs.label_names(run_data(workdir)))
    return {**read_json(os.path.join(workdir, 'eval_zero_shot_heldout.json')), 'classes': classes,
            'chance': 100 / classes}

  def few_shot(self, run: str, run_dir: str, world: dict, shots: int) -> dict:
    workdir = os.path.join(run_dir, f'few_shot_{shots}')
    with self.stage(f'{run}_few_shot_{shots}'):
      self.launch(f'{run}_few_shot_{shots}', run, 'few_shot', workdir, **{
          'init_from': run_dir, 'eval.name': 'heldout', 'eval.shots': shots, 'data.root': world['root'],
          'data.train_list': world['heldout_train_list'], 'data.val_list': world['heldout_list'],
          'data.label_list': world['heldout_label_list']})
    return read_json(os.path.join(workdir, 'eval_few_shot_heldout.json'))

  @contextlib.contextmanager
  def pool(self):
    """A pool running `self.parallel` stages at a time; a failed stage stops the demo: nothing more is started."""
    with concurrent.futures.ThreadPoolExecutor(self.parallel) as pool:
      try:
        yield pool
      except BaseException:
        pool.shutdown(cancel_futures=True)
        raise

  def finetune_and_evaluate(self, world: dict, pretrained: str) -> dict:
    """{run: its results}, `self.parallel` stages at a time."""
    with self.pool() as pool:
      # Every fine-tune is queued before any evaluation, so an evaluation waiting for its run's fine-tune holds a
      # worker only while that fine-tune runs on another.
      trained = {run: pool.submit(self.finetune, run, world, pretrained) for run in self.runs}

      def after_training(run, evaluate, *args):
        return evaluate(run, trained[run].result(), world, *args)

      pending = {run: {'val_direction': pool.submit(after_training, run, self.direction_top1),
                       'zero_shot': pool.submit(after_training, run, self.zero_shot),
                       **{f'few_shot_{k}': pool.submit(after_training, run, self.few_shot, k)
                          for k in self.shots}}
                 for run in self.runs}
      return {run: {'val': final_eval(trained[run].result()),
                    **results_of(pending[run])} for run in self.runs}

  def finish(self, start: float, results: dict, multilabel: bool = False) -> dict:
    """results.json (what the report reads), the report, then results.json again with the report's time and the
    total."""
    metrics.write_json(self.path('results.json'), results)
    from actionclip_jax import report  # matplotlib: only this stage needs it
    with self.stage('report'):
      (report.write_multilabel if multilabel else report.write)(self.workdir)
    self.timing['total'] = round(time.perf_counter() - start, 2)
    metrics.write_json(self.path('results.json'), results)
    return results

  # --- The multi-label demo -----------------------------------------------------------------------------------

  def multilabel_world(self) -> dict:
    """The multi-label world, and the single world's captioned pictures for pre-training."""
    with self.stage('world'):
      world = synthetic.make_multilabel_world(
          self.path('data'), seed=self.seed,
          **(QUICK_MULTILABEL_WORLD if self.quick else {**MULTILABEL_WORLD, 'workers': os.cpu_count() or 1}))
      pictures = {'pretrain_images': QUICK_WORLD['pretrain_images']} if self.quick else {}
      single = synthetic.make_world(self.path('data', 'single'), seed=self.seed, **CAPTIONS_ONLY, **pictures)
    return {**world, 'captions': single['captions']}

  def finetune_multilabel(self, run: str, seed: int, world: dict, pretrained: str) -> str:
    workdir = self.path(run)
    with self.stage(run):
      self.launch(run, 'multilabel', 'train', workdir, **{
          'seed': seed, 'init_from': pretrained, 'data.root': world['root'], 'data.train_list': world['train_list'],
          'data.val_list': world['val_list'], 'data.label_list': world['label_list']})
    return workdir

  def heldout_map(self, run: str, run_dir: str, world: dict) -> dict:
    """mAP on the held-out verb-object combinations, never trained on: the classes are only their names."""
    workdir = os.path.join(run_dir, 'heldout')
    with self.stage(f'{run}_heldout'):
      self.launch(f'{run}_heldout', 'multilabel', 'eval', workdir, **{
          'init_from': run_dir, 'eval.name': 'heldout', 'data.root': world['root'],
          'data.val_list': world['heldout_list'], 'data.label_list': world['heldout_label_list']})
    return read_json(os.path.join(workdir, 'eval_eval_heldout.json'))

  def run_multilabel(self) -> dict:
    start = time.perf_counter()
    world = self.multilabel_world()
    pretrained = self.pretrain(world)
    seeds = MULTILABEL_SEEDS[:1] if self.quick else MULTILABEL_SEEDS
    with self.pool() as pool:
      trained = {f'multilabel_seed{s}': pool.submit(self.finetune_multilabel, f'multilabel_seed{s}', s, world,
                                                    pretrained) for s in seeds}
      heldout = {run: pool.submit(lambda r: self.heldout_map(r, trained[r].result(), world), run)
                 for run in trained}
      runs = {run: {'val': final_eval(trained[run].result()), 'zero_shot': heldout[run].result()}
              for run in trained}
    results = {'runs': runs, 'summary': multilabel_summary(runs), 'pretrain': pretrain_summary(pretrained),
               'timing_s': self.timing, 'world': {'videos': {split: len(read_lines(world[f'{split}_list']))
                                                             for split in ('train', 'val', 'heldout')}}}
    return self.finish(start, results, multilabel=True)

  def run(self) -> dict:
    start = time.perf_counter()
    world = self.world()
    pretrained = self.pretrain(world)
    runs = self.finetune_and_evaluate(world, pretrained)
    summary = world_summary(world)
    results = {'evaluations': evaluations(summary, self.shots), 'runs': runs, 'pretrain': pretrain_summary(pretrained),
               'timing_s': self.timing, 'world': summary}
    return self.finish(start, results)


# ------------------------------------------------------------------------------------------------------------------
# Reading what the stages wrote.


def results_of(futures):
  """A (nested) dict of futures with each replaced by its result."""
  if isinstance(futures, dict):
    return {key: results_of(value) for key, value in futures.items()}
  return futures.result()


def read_json(path: str):
  with open(path) as f:
    return json.load(f)


def run_data(workdir: str):
  """The data section of the config a launch.py run resolved (its config.json)."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  return ml_collections.ConfigDict(read_json(os.path.join(workdir, 'config.json'))['data'])


def final_eval(run_dir: str) -> dict:
  """The trainer's last validation results: eval_val_step<k>.json of the highest k."""
  steps = [int(name[len('eval_val_step'):-len('.json')]) for name in os.listdir(run_dir)
           if name.startswith('eval_val_step') and name.endswith('.json')]
  if not steps:
    raise FileNotFoundError(f'{run_dir} has no eval_val_step<k>.json: the run did not evaluate')
  return read_json(os.path.join(run_dir, f'eval_val_step{max(steps)}.json'))


def read_lines(path: str) -> list[str]:
  with open(path) as f:
    return [line for line in f if line.strip()]


def multilabel_summary(runs: dict) -> dict:
  """Each evaluation's mAP over the seeds: the values, their mean and spread (max - min), and its chance mAP."""
  out = {}
  for evaluation in ('val', 'zero_shot'):
    values = [r[evaluation]['mAP'] for r in runs.values()]
    out[evaluation] = {'mAP': values, 'mean': sum(values) / len(values), 'spread': max(values) - min(values),
                       'chance_mAP': next(iter(runs.values()))[evaluation]['chance_mAP'],
                       'classes': next(iter(runs.values()))[evaluation]['classes_scored']}
  return out


def pretrain_summary(workdir: str) -> dict:
  logged = [r for r in metrics.read_metrics(workdir) if 'loss' in r]
  if not logged:
    raise ValueError(f'{workdir} logged no pre-training loss')
  return {'steps': logged[-1]['step'], 'final_loss': logged[-1]['loss']}


def evaluations(summary: dict, shots=SHOTS) -> dict:
  """What each column of results.json's runs is (the report's table and its chance row)."""
  seen, heldout = summary['classes_seen'], summary['classes_heldout']
  return {
      'val': {'classes': seen, 'about': 'closed-set top-1 on new videos of the training classes'},
      'val_direction': {'classes': seen, 'about': 'the same, over the videos of the four direction classes only '
                                                  '(a single frame cannot tell them apart; meanP ignores order)'},
      'zero_shot': {'classes': heldout, 'about': 'top-1 among the held-out verb-object classes, never trained on'},
      **{f'few_shot_{k}': {'classes': heldout, 'about': f'the held-out classes with {k} videos each and the prompts '
                                                        f'(cross-modal linear adaptation, frozen features)'}
         for k in shots}}


def world_classes(world: dict) -> list[dict]:
  return read_json(world['world'])['classes']


def world_summary(world: dict) -> dict:
  classes = world_classes(world)
  return {'classes_seen': sum(c['split'] == 'seen' for c in classes),
          'classes_heldout': sum(c['split'] == 'heldout' for c in classes),
          'videos': {split: len(read_lines(world[f'{split}_list']))
                     for split in ('train', 'val', 'heldout_train', 'heldout')},
          'pretrain_images': len(read_lines(world['captions'])) - 1}  # less the header


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    demo = Demo(_WORKDIR.value, _QUICK.value, _SEED.value, _PARALLEL.value)
    results = demo.run_multilabel() if _MULTILABEL.value else demo.run()
  except StageError as e:
    raise SystemExit(str(e)) from None
  logging.info('demo: %s:\n%s', os.path.join(_WORKDIR.value, 'results.json'), json.dumps(results['runs'], indent=1))


if __name__ == '__main__':
  app.run(main)
