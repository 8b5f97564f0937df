"""A pickle that runs code when loaded, for the tests that a checkpoint loader refuses it."""


class CreatesFileOnLoad:
  """Unpickling this calls open(marker, 'w'): a stand-in for any code a pickle can run."""

  def __init__(self, marker):
    self.marker = str(marker)

  def __reduce__(self):
    return (open, (self.marker, 'w'))
