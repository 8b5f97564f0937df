"""Shared test setup."""
import os
import sys

import pytest
from absl import flags

# The suite's models are tiny and compiling them is most of its time: LLVM's expensive passes buy little at these
# sizes, and XLA's older loop emitters compile a fusion in about half the time of the MLIR fusion emitters (a tiny
# model's value_and_grad: 4.7 s -> 1.7 s). Set before jax starts (here, before any test module imports it);
# launch.py subprocesses inherit it (launch_helpers.environment). Numerics are unaffected beyond summation order,
# which the tolerances allow.
FAST_COMPILE = ('--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true '
                '--xla_cpu_use_fusion_emitters=false')
os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {FAST_COMPILE}'.strip()
# The suite runs on the CPU. With libtpu installed (the [tpu] extra, for --mode=compile's TPU topologies) jax would
# first try to start a TPU backend and log why it cannot; topologies are described without one.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

# grain's multi-worker loader reads absl flags; pytest never parses them.
flags.FLAGS.mark_as_parsed()

# The PyTorch reference models (torch_*.py) beside the tests are plain modules the tests import.
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(scope='session')
def xla_cache(tmp_path_factory) -> str:
  """One persistent XLA compilation cache for every launch.py subprocess of the session: the tiny configs compile
  once, not once per test file. pytest-xdist workers' base temps are siblings, so they share its parent."""
  base = tmp_path_factory.getbasetemp()
  path = (base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base) / 'xla_cache'
  path.mkdir(exist_ok=True)
  return str(path)
