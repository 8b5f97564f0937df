"""Clip augmentation: ActionCLIP's training and evaluation transforms on uint8 frames.

A clip is `[T, H, W, 3]` uint8. Every random choice (crop, flip, jitter factors and their order,
grayscale, RandAugment ops) is drawn once per clip from the generator grain gives the record and
applied to all frames, so the clip stays one consistent motion and an epoch is a function of the seed.

Training follows ActionCLIP's `get_augmentation(training=True)`: TSN's multi-scale crop (scales 1, .875,
.75, .66, at most one step of aspect distortion, one of 13 fixed corner/centre offsets) resized to the
input size, horizontal flip, colour jitter (p .8; brightness .4, contrast .4, saturation .2, hue .1,
in random order, as torchvision's `ColorJitter`), grayscale (p .2). Work is
done at the smallest size: the crop box is resized straight to the input size in one PIL call, and the
colour and RandAugment ops run on the 224² result. Three deliberate differences from the official code:
colour jitter and RandAugment are drawn once per clip, not per frame; RandAugment runs after the crop
rather than before it; and hue is rotated in YIQ space rather than shifted in HSV space (see
`_hue_matrix`).

Evaluation resizes the short side to `input_size * 256 // 224` (bicubic, as `GroupScale`) and takes the
centre crop; with `num_crops=3` it resizes the short side to `input_size` and takes left/centre/right
(or top/centre/bottom) crops covering the frame, the usual three-crop test.

Outputs stay uint8: CLIP's mean/std normalization runs on the accelerator inside the jitted step
(`normalize_on_device`), which takes it off the host CPU and sends a quarter of the bytes to the device.
`normalize` is the same map in numpy, for host-side consumers.
"""
import dataclasses

import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageEnhance

from data_pipelines.randaugment import RandAugment

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_SCALE = np.float32(1 / 255) / np.asarray(CLIP_STD, np.float32)
_SHIFT = np.asarray(CLIP_MEAN, np.float32) / np.asarray(CLIP_STD, np.float32)


def normalize(frames: np.ndarray) -> np.ndarray:
  """uint8 RGB to CLIP-normalized float32, `(x / 255 - mean) / std`."""
  out = frames.astype(np.float32)
  out *= _SCALE  # in place: half the memory traffic of `frames * scale - shift`
  out -= _SHIFT
  return out


def normalize_on_device(frames, dtype=jnp.float32):
  """`normalize` in jnp, for inside a jitted step: uint8 frames to CLIP-normalized `dtype`."""
  scale, shift = jnp.asarray(_SCALE), jnp.asarray(_SHIFT)
  return (frames.astype(jnp.float32) * scale - shift).astype(dtype)


def multi_scale_crop_box(width: int, height: int, input_size: int, scales, max_distort: int,
                         rng: np.random.Generator) -> tuple[int, int, int, int]:
  """TSN's `GroupMultiScaleCrop` box `(left, top, right, bottom)` with fixed offsets."""
  base = min(width, height)
  sizes = [int(base * s) for s in scales]
  # Sizes within 3 px of the input size snap to it, so the final resize is a no-op there.
  sizes = [input_size if abs(s - input_size) < 3 else s for s in sizes]
  pairs = [(w, h) for i, h in enumerate(sizes) for j, w in enumerate(sizes) if abs(i - j) <= max_distort]
  crop_w, crop_h = pairs[rng.integers(len(pairs))]
  w_step, h_step = (width - crop_w) // 4, (height - crop_h) // 4
  # Corners, centre, edge centres and quarter points, in the official order.
  grid = ((0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1),
          (1, 3), (3, 3))
  x, y = grid[rng.integers(len(grid))]
  left, top = x * w_step, y * h_step
  return left, top, left + crop_w, top + crop_h


# RGB <-> YIQ: a hue shift is a rotation of the (I, Q) chroma plane around the luma axis Y.
_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_FROM_YIQ = np.linalg.inv(_TO_YIQ)


def _hue_matrix(shift: float) -> tuple[float, ...]:
  """PIL `convert` matrix rotating hue by `shift` turns (in [-0.5, 0.5]).

  torchvision shifts H in HSV space, whose conversion back to RGB costs PIL 1.5 ms a 224² frame; the
  YIQ rotation is one 3×3 matrix in C (0.3 ms) and moves hue the same way while keeping luma.
  """
  cos, sin = np.cos(2 * np.pi * shift), np.sin(2 * np.pi * shift)
  rotate = np.array([[1, 0, 0], [0, cos, -sin], [0, sin, cos]])
  matrix = _FROM_YIQ @ rotate @ _TO_YIQ
  return tuple(np.concatenate([matrix, np.zeros((3, 1))], axis=1).reshape(-1).tolist())


@dataclasses.dataclass(frozen=True)
class TrainAugment:
  """ActionCLIP's training transform; `flip=False` for direction-sensitive datasets."""
  input_size: int = 224
  scales: tuple[float, ...] = (1, .875, .75, .66)
  max_distort: int = 1
  flip: bool = True
  jitter_p: float = 0.8
  brightness: float = 0.4
  contrast: float = 0.4
  saturation: float = 0.2
  hue: float = 0.1
  grayscale_p: float = 0.2
  randaugment: RandAugment | None = None

  def _jitter(self, rng: np.random.Generator) -> list:
    brightness = rng.uniform(1 - self.brightness, 1 + self.brightness)
    contrast = rng.uniform(1 - self.contrast, 1 + self.contrast)
    saturation = rng.uniform(1 - self.saturation, 1 + self.saturation)
    hue = rng.uniform(-self.hue, self.hue)
    ops = [
        lambda image: ImageEnhance.Brightness(image).enhance(brightness),
        lambda image: ImageEnhance.Contrast(image).enhance(contrast),
        lambda image: ImageEnhance.Color(image).enhance(saturation),
        lambda image, matrix=_hue_matrix(hue): image.convert('RGB', matrix),
    ]
    return [ops[i] for i in rng.permutation(len(ops))]

  def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 `[T, H, W, 3]` to uint8 `[T, input_size, input_size, 3]`."""
    height, width = frames.shape[1:3]
    size = (self.input_size, self.input_size)
    box = multi_scale_crop_box(width, height, self.input_size, self.scales, self.max_distort, rng)
    flip = self.flip and rng.random() < 0.5
    ops = self.randaugment.draw(rng, size) if self.randaugment else []
    if rng.random() < self.jitter_p:
      ops += self._jitter(rng)
    if rng.random() < self.grayscale_p:
      ops.append(lambda image: image.convert('L').convert('RGB'))
    out = np.empty((len(frames), *size, 3), np.uint8)
    for t, frame in enumerate(frames):
      image = Image.fromarray(frame).resize(size, Image.BILINEAR, box=box)
      if flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
      for op in ops:
        image = op(image)
      out[t] = np.asarray(image)
    return out


@dataclasses.dataclass(frozen=True)
class EvalAugment:
  """Short-side resize and centre crop, or three crops; views are crops of each temporal clip."""
  input_size: int = 224
  num_crops: int = 1

  def __post_init__(self):
    if self.num_crops not in (1, 3):
      raise ValueError(f'num_crops must be 1 or 3, got {self.num_crops}')

  def __call__(self, clips: np.ndarray) -> np.ndarray:
    """uint8 `[C, T, H, W, 3]` to uint8 `[C * num_crops, T, S, S, 3]`, clip-major."""
    num_clips, num_frames, height, width = clips.shape[:4]
    short = self.input_size * 256 // 224 if self.num_crops == 1 else self.input_size
    scale = short / min(width, height)
    new_w, new_h = max(short, round(width * scale)), max(short, round(height * scale))
    s = self.input_size
    if self.num_crops == 1:
      # torchvision's CenterCrop rounding.
      offsets = [(int(round((new_w - s) / 2)), int(round((new_h - s) / 2)))]
    elif new_w >= new_h:
      offsets = [(0, 0), ((new_w - s) // 2, 0), (new_w - s, 0)]
    else:
      offsets = [(0, 0), (0, (new_h - s) // 2), (0, new_h - s)]
    out = np.empty((num_clips, len(offsets), num_frames, s, s, 3), np.uint8)
    for c in range(num_clips):
      for t in range(num_frames):
        resized = np.asarray(Image.fromarray(clips[c, t]).resize((new_w, new_h), Image.BICUBIC))
        for k, (x, y) in enumerate(offsets):
          out[c, k, t] = resized[y:y + s, x:x + s]
    return out.reshape(-1, num_frames, s, s, 3)
