"""A tiny labelled video dataset, written with PyAV: for smoke runs, tests and the demo, without downloads.

Each class has its own colour and motion (a bright square moving in a class-specific direction), so a model
can tell the classes apart from a few frames.
"""
from __future__ import annotations

import os

import av
import numpy as np


def _frames(label: int, num_classes: int, index: int, num_frames: int, width: int, height: int) -> np.ndarray:
  rng = np.random.default_rng((label, index))
  hue = np.array([np.cos(2 * np.pi * label / num_classes), np.sin(2 * np.pi * label / num_classes), 0.5])
  base = (96 + 80 * hue).clip(0, 255)
  angle = 2 * np.pi * label / num_classes
  out = np.empty((num_frames, height, width, 3), np.uint8)
  size = max(4, min(width, height) // 4)
  x0, y0 = rng.integers(0, width - size), rng.integers(0, height - size)
  for t in range(num_frames):
    frame = np.broadcast_to(base, (height, width, 3)) + rng.normal(0, 6, (height, width, 3))
    x = int(x0 + 2 * t * np.cos(angle)) % (width - size)
    y = int(y0 + 2 * t * np.sin(angle)) % (height - size)
    frame[y:y + size, x:x + size] = 255 - base
    out[t] = frame.clip(0, 255)
  return out


def write_video(path: str, frames: np.ndarray, fps: int = 25) -> None:
  with av.open(path, 'w') as container:
    stream = container.add_stream('mpeg4', rate=fps)
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = 'yuv420p'
    for frame in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def make_dataset(root: str, class_names=('juggling balls', 'archery', 'abseiling'), train_per_class: int = 4,
                 val_per_class: int = 2, num_frames: int = 16, width: int = 48, height: int = 40) -> dict[str, str]:
  """Writes videos, `train.txt`/`val.txt` (`path num_frames label`, relative to root) and `labels.csv`.

  Returns {'root', 'train_list', 'val_list', 'label_list'}.
  """
  os.makedirs(os.path.join(root, 'videos'), exist_ok=True)
  with open(os.path.join(root, 'labels.csv'), 'w') as f:
    f.write('id,name\n' + ''.join(f'{i},{name}\n' for i, name in enumerate(class_names)))
  lists = {}
  for split, per_class in (('train', train_per_class), ('val', val_per_class)):
    lines = []
    for label in range(len(class_names)):
      for i in range(per_class):
        name = f'videos/{split}_{label}_{i}.mp4'
        index = i if split == 'train' else 1000 + i
        write_video(os.path.join(root, name), _frames(label, len(class_names), index, num_frames, width, height))
        lines.append(f'{name} {num_frames} {label}\n')
    lists[split] = os.path.join(root, f'{split}.txt')
    with open(lists[split], 'w') as f:
      f.writelines(lines)
  return {'root': root, 'train_list': lists['train'], 'val_list': lists['val'],
          'label_list': os.path.join(root, 'labels.csv')}
