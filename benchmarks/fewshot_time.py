"""Wall time of few-shot cross-modal adaptation on cached features, on the CPU.

    .venv/bin/python benchmarks/fewshot_time.py      # 100 classes x 16 shots x 16 prompts, D = 512, fit's defaults

Random features stand in for cached ones (the time does not depend on their values). Prints the time of the first
`fit` (compile included) and of a second one with the same shapes.
"""
import argparse
import time

import jax

from actionclip_jax.runs import fewshot


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--classes', type=int, default=100)
  parser.add_argument('--shots', type=int, default=16)
  parser.add_argument('--dim', type=int, default=512)
  args = parser.parse_args()
  prompts = 16  # ActionCLIP's templates
  kv, kt = jax.random.split(jax.random.PRNGKey(0))
  video = jax.random.normal(kv, (args.classes * args.shots, args.dim))
  labels = jax.numpy.repeat(jax.numpy.arange(args.classes), args.shots)
  text = jax.random.normal(kt, (prompts, args.classes, args.dim))
  for run in ('first (compile included)', 'second'):
    start = time.perf_counter()
    jax.block_until_ready(fewshot.fit(video, labels, text).weights)  # fit's default steps and batch
    print(f'{run}: {time.perf_counter() - start:.2f} s for {args.classes} classes x {args.shots} shots '
          f'+ {prompts} prompts, D={args.dim}')


if __name__ == '__main__':
  main()
