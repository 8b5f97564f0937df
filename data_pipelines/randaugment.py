"""RandAugment(N, M) for clips, with the op table of the `RandAugment` package ActionCLIP imports.

ActionCLIP inserts ildoonet's `RandAugment(N, M)` in front of its transforms and applies it to every
frame independently, so one clip's frames get different ops. Here the N ops, their signs and the
cutout position are drawn once per clip and applied to every frame, like the other augmentations: the
clip stays one motion (`TrainAugment(per_frame=True)`, config `data.augment_order='official'`, draws once
per frame instead, on the full-size frame). Ops, ranges and the magnitude mapping
`M / 30 * (max - min) + min` (M in 0..30) are the package's, quirks included (posterize keeps
`int(4 * M / 30)` bits).
"""
import dataclasses

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps


def _affine(matrix):
  return lambda image: image.transform(image.size, Image.AFFINE, matrix)


def _signed(value, rng):
  return -value if rng.random() > 0.5 else value


def _enhance(kind):
  return lambda v, rng, size: lambda image: kind(image).enhance(v)


def _solarize_add(v, rng, size):
  def op(image):
    added = np.clip(np.asarray(image, np.int32) + int(v), 0, 255).astype(np.uint8)
    return ImageOps.solarize(Image.fromarray(added), 128)
  return op


def _cutout(v, rng, size):
  width, height = size
  x0 = int(max(0, rng.uniform(0, width) - v / 2))
  y0 = int(max(0, rng.uniform(0, height) - v / 2))
  box = (x0, y0, min(width, x0 + v), min(height, y0 + v))

  def op(image):
    image = image.copy()
    ImageDraw.Draw(image).rectangle(box, (125, 123, 114))
    return image
  return op


# (min, max, make): `make(magnitude, rng, frame_size)` draws the clip's random choices and returns
# the op applied to each frame.
_OPS = (
    (0, 1, lambda v, rng, size: ImageOps.autocontrast),
    (0, 1, lambda v, rng, size: ImageOps.equalize),
    (0, 1, lambda v, rng, size: ImageOps.invert),
    (0, 30, lambda v, rng, size: lambda image, angle=_signed(v, rng): image.rotate(angle)),
    (0, 4, lambda v, rng, size: lambda image: ImageOps.posterize(image, int(v))),
    (0, 256, lambda v, rng, size: lambda image: ImageOps.solarize(image, v)),
    (0, 110, _solarize_add),
    (0.1, 1.9, _enhance(ImageEnhance.Color)),
    (0.1, 1.9, _enhance(ImageEnhance.Contrast)),
    (0.1, 1.9, _enhance(ImageEnhance.Brightness)),
    (0.1, 1.9, _enhance(ImageEnhance.Sharpness)),
    (0.0, 0.3, lambda v, rng, size: _affine((1, _signed(v, rng), 0, 0, 1, 0))),
    (0.0, 0.3, lambda v, rng, size: _affine((1, 0, 0, _signed(v, rng), 1, 0))),
    (0, 40, _cutout),
    (0.0, 100, lambda v, rng, size: _affine((1, 0, _signed(v, rng), 0, 1, 0))),
    (0.0, 100, lambda v, rng, size: _affine((1, 0, 0, 0, 1, _signed(v, rng)))),
)


@dataclasses.dataclass(frozen=True)
class RandAugment:
  """`num_ops` ops drawn with replacement, all at magnitude `magnitude` (0..30)."""
  num_ops: int = 2
  magnitude: int = 9

  def draw(self, rng: np.random.Generator, frame_size: tuple[int, int]) -> list:
    """The clip's ops, each a function of one PIL image."""
    ops = []
    for choice in rng.integers(len(_OPS), size=self.num_ops):
      low, high, make = _OPS[choice]
      ops.append(make(self.magnitude / 30 * (high - low) + low, rng, frame_size))
    return ops
