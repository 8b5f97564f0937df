"""Peak memory of WTI evaluation scoring: B videos against C classes x K templates, on the CPU.

Run it in a fresh process (the peak RSS is the process's):

    .venv/bin/python benchmarks/wti_memory.py                       # 32 x 400 x 16 at ViT-B/32 sizes, text length 77
    .venv/bin/python benchmarks/wti_memory.py --text-length 20      # a realistic longest prompt

Every text uses all `--text-length` positions (the worst case: truncation saves nothing). Prints the input sizes, the
compiled scoring's temporary memory (XLA's memory_analysis) for the chunked path and, compiled only, for the direct
one, and the process's peak resident memory.
"""
import argparse
import resource
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from actionclip_jax.model import interaction

GIB = 2 ** 30


def _random_text(key, n, length, dim, chunk):
  """[n, length, dim] normal features, generated a chunk at a time so that generating them peaks at their size."""

  def one(k):
    return jax.random.normal(k, (chunk, length, dim))

  return jax.lax.map(one, jax.random.split(key, n // chunk)).reshape(n, length, dim)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--videos', type=int, default=32)
  parser.add_argument('--classes', type=int, default=400)
  parser.add_argument('--templates', type=int, default=16)
  parser.add_argument('--dim', type=int, default=512)
  parser.add_argument('--frames', type=int, default=8)
  parser.add_argument('--text-length', type=int, default=77)
  parser.add_argument('--chunk-size', type=int, default=256)
  args = parser.parse_args()
  n = args.classes * args.templates

  kv, kt = jax.random.split(jax.random.PRNGKey(0))
  video = jax.random.normal(kv, (args.videos, args.frames, args.dim))
  text = jax.jit(_random_text, static_argnums=(1, 2, 3, 4))(kt, n, args.text_length, args.dim, args.templates)
  mask = jnp.ones((n, args.text_length), bool)
  wti = interaction.WTI(args.dim)
  params = nn.unbox(wti.init(jax.random.PRNGKey(1), video[:1], text[:1], mask[:1]))['params']
  print(f'inputs: video {video.nbytes / GIB:.3f} GiB, text features {text.nbytes / GIB:.3f} GiB '
        f'({n} texts x {args.text_length} tokens x {args.dim})')

  chunk = min(args.chunk_size, n)
  compiled = interaction._chunked_scores.lower(wti, params, video, text, mask, chunk).compile()  # pylint: disable=protected-access
  print(f'chunked (chunk {chunk}): XLA temporaries {compiled.memory_analysis().temp_size_in_bytes / GIB:.3f} GiB')
  direct = jax.jit(wti.apply).lower({'params': params}, video, text, mask).compile()
  print(f'direct (not run): XLA temporaries {direct.memory_analysis().temp_size_in_bytes / GIB:.3f} GiB')

  start = time.perf_counter()
  scores = jax.block_until_ready(interaction.wti_scores_chunked(wti, params, video, text, mask,
                                                                chunk_size=args.chunk_size))
  seconds = time.perf_counter() - start
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
  print(f'scores {scores.shape} in {seconds:.1f} s (compile included); peak RSS of the process {peak / GIB:.2f} GiB')


if __name__ == '__main__':
  main()
