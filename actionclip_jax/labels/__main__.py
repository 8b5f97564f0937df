"""`python -m actionclip_jax.labels`: the shipped label lists with their class counts (read from the files), sources
and files."""
import argparse

from actionclip_jax import labels


def main(argv=None) -> None:
  argparse.ArgumentParser(prog='python -m actionclip_jax.labels',
                          description='Lists the label lists shipped with the package; give a name wherever a '
                          'label CSV is accepted.').parse_args(argv)
  rows = [('name', 'classes', 'source', 'file')]
  rows += [(name, str(len(labels.read(name))), s.source, labels.resolve(name)) for name, s in labels.SHIPPED.items()]
  widths = [max(len(r[i]) for r in rows) for i in range(3)]
  for row in rows:
    print('  '.join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[3]]))


if __name__ == '__main__':
  main()
