"""The README and docs/ as a user reads them: every link resolves, every documented command is one the code takes.

Each shell command in a ```bash block of README.md or docs/*.md is checked here: `launch.py` commands are parsed
with launch.py's own flags (the config file and its variant load, every `--config.*` override names a field of it,
the mode exists); `python -m` commands name a module whose `--help` lists every flag the command passes; `make`
commands name a Makefile target. Commands that need data or checkpoints a user brings (`/data/...`, `/ckpt/...`)
cannot run here; those that need none run elsewhere: `make test` is CI, `make demo` and the `predict` command on its
output are what a new user runs (`tests/test_predict.py` predicts from a run directory the same way).
"""
import glob
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ['README.md', *sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, 'docs', '*.md')))]
# A past run's machine path: a temporary work dir or a home directory.
MACHINE_PATH = re.compile(r'(?<![\w.])/(tmp|work|root|home)/')
SKIP_DIRS = {'.git', '.venv', 'workdirs', 'tests', '__pycache__', '.pytest_cache', 'build', 'dist'}


def _read(path: str) -> str:
  with open(os.path.join(REPO, path), encoding='utf-8') as f:
    return f.read()


def commands(text: str) -> list[list[str]]:
  """The commands of a markdown text's ```bash blocks: continuation lines joined, comments dropped, shell-split."""
  found, in_bash, lines = [], None, []
  for line in text.splitlines():
    fence = re.match(r'^```(\w*)', line)
    if fence and in_bash is None:
      in_bash = fence.group(1) in ('bash', 'sh', 'shell')
      continue
    if fence:
      if in_bash:
        found += [shlex.split(cmd, comments=True) for cmd in '\n'.join(lines).replace('\\\n', ' ').splitlines()
                  if cmd.strip()]
      in_bash, lines = None, []
      continue
    if in_bash:
      lines.append(line)
  return found


def _documented() -> list[tuple[str, list[str]]]:
  return [(path, cmd) for path in DOCS for cmd in commands(_read(path))]


def _interpreter_args(cmd: list[str]) -> list[str] | None:
  """The arguments after `python`, `python3` or `.venv/bin/python`; None for other programs."""
  if cmd and os.path.basename(cmd[0]) in ('python', 'python3'):
    return cmd[1:]
  return None


def test_readme_is_short_and_links_every_doc():
  readme = _read('README.md')
  assert len(readme.splitlines()) <= 200
  for path in DOCS[1:]:
    assert f']({path})' in readme or f']({path}#' in readme, f'README.md does not link {path}'


@pytest.mark.parametrize('path', DOCS)
def test_every_relative_link_resolves(path):
  folder = os.path.dirname(os.path.join(REPO, path))
  for target in re.findall(r'\]\(([^)#\s]+)(?:#[^)]*)?\)', _read(path)):
    if '://' not in target:
      assert os.path.exists(os.path.join(folder, target)), f'{path} links {target}, which does not exist'


def test_no_file_outside_the_tests_names_a_past_runs_machine_path():
  named = []
  for folder, dirs, names in os.walk(REPO):
    dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith('.egg-info')]
    for name in names:
      path = os.path.join(folder, name)
      try:
        with open(path, encoding='utf-8') as f:
          named += [f'{os.path.relpath(path, REPO)}:{i}: {line.strip()}' for i, line in enumerate(f, 1)
                    if MACHINE_PATH.search(line)]
      except UnicodeDecodeError:
        continue  # binary assets
  assert not named, '\n'.join(named)


def test_commands_are_found_in_bash_blocks_only():
  text = ('```bash\npython launch.py --config=a.py \\\n    --workdir=w  # a comment\nmake demo\n```\n'
          '```text\npython -m x VIDEO... [--top_k 5]\n```\n')
  assert commands(text) == [['python', 'launch.py', '--config=a.py', '--workdir=w'], ['make', 'demo']]


def test_every_command_is_complete():
  """No `...` standing for arguments: a command in a bash block is copied and run as it is."""
  incomplete = [f'{path}: {" ".join(cmd)}' for path, cmd in _documented() if any('...' in arg for arg in cmd)]
  assert not incomplete, '\n'.join(incomplete)


# launch.py's own flags parse each command in a fresh FlagValues, in one subprocess for them all (launch.py defines its
# flags on absl's global FLAGS when imported, as the demo does, so neither can be imported into the test process).
PARSE = """
import json, sys
from absl import flags
import launch
from actionclip_jax.runs import aot, config_checks
problems = []
for argv in json.loads(sys.argv[1]):
  sys.argv = argv  # config_flags finds the `--config.*` overrides in sys.argv
  values = flags.FlagValues()
  parsed = launch.define_flags(values)
  try:
    values(argv)  # an unknown config field or a bad flag value raises here
  except Exception as e:  # absl and ml_collections raise many types
    problems.append([f'{type(e).__name__}: {e}'])
    continue
  config = parsed.config.value
  devices = 1
  if parsed.mode.value == 'compile' and config.compile.topology:  # the topology's chips (by name, without libtpu)
    devices = aot.chips_in(config.compile.topology, config.compile.num_slices)
  try:  # the config check the run makes before compiling, less what only the user's files can satisfy
    config_checks.check(config, parsed.mode.value, num_devices=devices)
    problems.append([])
  except ValueError as e:
    problems.append([p for p in str(e).splitlines()[1:] if 'does not exist' not in p])
print(json.dumps(problems))
"""
LAUNCH_COMMANDS = [(p, c) for p, c in _documented() if (_interpreter_args(c) or [''])[0] == 'launch.py']


@pytest.fixture(scope='module')
def launch_problems() -> list[list[str]]:
  argvs = [['launch.py', *_interpreter_args(cmd)[1:]] for _, cmd in LAUNCH_COMMANDS]
  done = subprocess.run([sys.executable, '-c', PARSE, json.dumps(argvs)], cwd=REPO, capture_output=True, text=True,
                        timeout=300, env=dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO))
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('index', range(len(LAUNCH_COMMANDS)),
                         ids=[f'{p}: {" ".join(c)[:80]}' for p, c in LAUNCH_COMMANDS])
def test_launch_command_parses_and_passes_the_config_check(index, launch_problems):
  path, cmd = LAUNCH_COMMANDS[index]
  assert not launch_problems[index], f'{path}: {" ".join(cmd)}\n' + '\n'.join(launch_problems[index])


def _module_help(module: str) -> str:
  done = subprocess.run([sys.executable, '-m', module, '--help'], cwd=REPO, capture_output=True, text=True,
                        timeout=120, env=dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO))
  assert done.returncode == 0, done.stderr[-2000:]
  return done.stdout


@pytest.mark.parametrize('module, passed', sorted({
    (args[1], tuple(sorted(a.split('=')[0] for a in args[2:] if a.startswith('--'))))
    for args in (_interpreter_args(c) for _, c in _documented()) if args and args[0] == '-m'}))
def test_module_command_passes_only_flags_its_module_takes(module, passed):
  usage = _module_help(module)
  unknown = [flag for flag in passed if not re.search(rf'{re.escape(flag)}\b', usage)]
  assert not unknown, f'python -m {module} --help does not list {unknown}'


def test_make_commands_name_makefile_targets():
  targets = set(re.findall(r'^([\w-]+):', _read('Makefile'), re.M))
  for path, cmd in _documented():
    if cmd[0] == 'make':
      assert set(cmd[1:]) <= targets, f'{path}: make {" ".join(cmd[1:])}'
