"""Shared test setup."""
import os
import sys

from absl import flags

# grain's multi-worker loader reads absl flags; pytest never parses them.
flags.FLAGS.mark_as_parsed()

# The PyTorch reference models (torch_*.py) beside the tests are plain modules the tests import.
sys.path.insert(0, os.path.dirname(__file__))
