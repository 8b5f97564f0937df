"""Float32 tolerances derived from what is compared, so the suite holds on any x86-64 CPU.

Two float32 evaluations of the same formula (XLA vs ATen, AVX2 vs AVX-512 vs AMX kernels, chunked vs whole,
sharded vs one device) differ by rounding alone. A sum of n terms of magnitude at most `scale`, evaluated in
another order, moves by at most about n * eps32 * scale (the first-order bound on recursive summation, Higham,
"Accuracy and Stability of Numerical Algorithms", section 4.2): that product is each tolerance below, with n
the longest reduction between the inputs and the compared value. It holds whatever order a CPU picks, and is
still orders of magnitude below what a real bug moves (a wrong transpose, mask, weight or dropped chunk changes
results by a sizeable fraction of `scale`).

The parity bars against PyTorch on whole models stay a flat 1e-5 on O(1) embeddings (docs/fidelity.md): deep networks
compound rounding over many layers, which this one-reduction bound does not model.
"""
import numpy as np

EPS32 = float(np.finfo(np.float32).eps)


def rounding(terms: int, scale=1.0) -> float:
  """The largest float32 difference two summation orders of `terms` terms, each at most `scale`, can give."""
  return terms * EPS32 * float(np.max(np.abs(scale)))



def assert_trees_close(actual, desired, terms: int):
  """Leaf by leaf within rounding(terms) of the largest entry of the leaf's module (a kernel and its bias).

  A gradient entry is a sum of terms with its module's scale: a bias's gradient sums the same upstream gradients
  its kernel's weighs by the inputs. Some biases' gradients vanish exactly (a key bias, or the last bias before a
  softmax: softmax ignores a constant shift), leaving only the rounding of those sums, so the leaf's own size is no
  scale for them.
  """
  import jax

  def module(path):
    return jax.tree_util.keystr(path[:-1])

  want = jax.tree_util.tree_leaves_with_path(desired)
  scale = {}
  for path, leaf in want:
    scale[module(path)] = max(scale.get(module(path), 0.0), float(np.max(np.abs(leaf))))
  for (path, leaf), got in zip(want, jax.tree_util.tree_leaves(actual), strict=True):
    np.testing.assert_allclose(got, leaf, atol=rounding(terms, scale[module(path)]), rtol=0,
                               err_msg=jax.tree_util.keystr(path))
