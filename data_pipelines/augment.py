"""Clip augmentation: ActionCLIP's training and evaluation transforms on uint8 frames.

A clip is `[T, H, W, 3]` uint8, or for training also a list of T RGB PIL images (the JPEG sources' frames
as decoded, which saves a round trip through numpy). Every random choice (crop, flip, jitter factors and
their order, grayscale, RandAugment ops) is drawn once per clip from the generator grain gives the record
and applied to all frames, so the clip stays one consistent motion and an epoch is a function of the seed.

Training follows ActionCLIP's `get_augmentation(training=True)`: TSN's multi-scale crop (scales 1, .875,
.75, .66, at most one step of aspect distortion, one of 13 fixed corner/centre offsets) resized to the
input size, horizontal flip, colour jitter (p .8; brightness .4, contrast .4, saturation .2, hue .1,
in random order, as torchvision's `ColorJitter`), grayscale (p .2). All of it runs in PIL on uint8, at
the smallest size: the crop box is resized straight to the input size in one PIL call (a box already of
the input size is a plain crop), flip and RandAugment act on the 224² result, and colour jitter and
grayscale together are one affine colour map, a single PIL pass per frame (`ColorJitter`). A frame a
short video repeats is transformed once. Four deliberate differences from the official code: colour
jitter and RandAugment are drawn once per clip, not per frame; RandAugment runs after the crop rather
than before it; hue is rotated in YIQ space rather than shifted in HSV space (see `_hue_matrix`); and
the colour steps are clipped to [0, 255] once, at the end, rather than after each step. The first two
are switchable: `per_frame=True` (config `data.augment_order='official'`) runs the official order and
draws: RandAugment on each full-size frame with its own ops, then the clip's crop and flip, then colour
jitter with new factors (and order) for each frame; whether jitter and grayscale happen at all is still
decided once per clip, as the official `GroupRandomColorJitter` / `GroupRandomGrayscale` do.

Evaluation resizes the short side to `input_size * 256 // 224` (bicubic, as `GroupScale`) and takes the
centre crop; with `num_crops=3` it resizes the short side to `input_size` and takes left/centre/right
(or top/centre/bottom) crops covering the frame, the usual three-crop test.

Outputs stay uint8, a quarter of the bytes of float32 to build, batch and copy to the accelerator.
CLIP's mean/std normalization is `normalize`, a jnp function the model step calls inside its jitted
function: one multiply-add per value on the device instead of a float32 pass on the host.
"""
import dataclasses
import functools

import jax.numpy as jnp
import numpy as np
from PIL import Image

from data_pipelines.randaugment import RandAugment

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# (x / 255 - mean) / std as one multiply-add; numpy constants, so importing puts nothing on a device.
_SCALE = np.float32(1 / 255) / np.asarray(CLIP_STD, np.float32)
_SHIFT = np.asarray(CLIP_MEAN, np.float32) / np.asarray(CLIP_STD, np.float32)


def normalize(frames, dtype=jnp.float32) -> jnp.ndarray:
  """uint8 RGB frames `[..., 3]` to CLIP-normalized `dtype`, `(x / 255 - mean) / std`.

  Meant to run inside the jitted model step on the batch's uint8 `frames`; the arithmetic is float32
  whatever `dtype` is, so a bfloat16 model gets the float32 result rounded once.
  """
  return (jnp.asarray(frames, jnp.float32) * _SCALE - _SHIFT).astype(dtype)




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
_LUMA = _TO_YIQ[0]  # ITU-R 601, as PIL's `convert('L')`
_TO_GRAY = np.outer(np.ones(3), _LUMA)  # every channel becomes the luma


def _hue_matrix(shift: float) -> np.ndarray:
  """3×3 RGB matrix rotating hue by `shift` turns (in [-0.5, 0.5]).

  torchvision shifts H in HSV space, whose conversion back to RGB costs PIL 1.5 ms a 224² frame; the
  YIQ rotation is linear, so it joins the other colour steps in one matrix, and moves hue the same way
  while keeping luma.
  """
  cos, sin = np.cos(2 * np.pi * shift), np.sin(2 * np.pi * shift)
  rotate = np.array([[1, 0, 0], [0, cos, -sin], [0, sin, cos]])
  return _FROM_YIQ @ rotate @ _TO_YIQ


@dataclasses.dataclass(frozen=True)
class ColorJitter:
  """One clip's colour jitter (and grayscale), applied to a frame as one affine colour map.

  torchvision's `ColorJitter` runs brightness (scale towards black), contrast (towards the frame's mean
  luma), saturation (towards each pixel's luma) and hue in `order`, each a pass over the pixels that
  rounds and clips to uint8. Each step is affine in RGB, so here they compose into one 3×4 matrix, and
  PIL's `convert` applies it in a single pass (about a third of the time of the four `ImageEnhance`
  passes), rounding and clipping once at the end. The result equals the step-by-step one up to rounding
  wherever no step pushed a value out of [0, 255] (a test checks this); where one did, the out-of-range
  value is carried to the next step instead of being clipped first (on a real 224² frame: 1.5 levels
  mean absolute difference, mostly `ImageEnhance`'s truncation at each step; up to ~25 in clipped
  highlights). Unclipped, the four steps commute (contrast's grey scales with brightness; saturation
  and hue keep luma and grey), so the drawn order matters only through rounding; it is kept to apply
  contrast's grey level as `ImageEnhance.Contrast` takes it: the frame's mean luma after the steps
  before it, computed from the frame's mean colour. With `gray`, the map ends in luma and the frame
  comes out as one channel (`L`).
  """
  brightness: float = 1.0
  contrast: float = 1.0
  saturation: float = 1.0
  hue: float = 0.0
  order: tuple[int, ...] = (0, 1, 2, 3)  # the steps by index: brightness, contrast, saturation, hue
  gray: bool = False

  @functools.cached_property
  def _affine(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(scale, grey_shift, grey_weights)`: the map is `x -> scale @ x + grey * grey_shift`, where the
    contrast grey is `int(grey_weights @ mean + 0.5)`, the luma of the mean colour after the steps
    before contrast (none of which has an offset). Computed once per clip."""
    scale, grey_shift, grey_weights = np.eye(3), np.zeros(3), np.zeros(3)
    for step in self.order:
      if step == 0:
        step_scale = self.brightness * np.eye(3)
      elif step == 1:
        grey_weights = _LUMA @ scale
        step_scale = self.contrast * np.eye(3)
      elif step == 2:
        step_scale = self.saturation * np.eye(3) + (1 - self.saturation) * _TO_GRAY
      else:
        step_scale = _hue_matrix(self.hue)
      scale, grey_shift = step_scale @ scale, step_scale @ grey_shift
      if step == 1:
        grey_shift = grey_shift + (1 - self.contrast)  # blends towards grey in every channel
    if self.gray:
      scale, grey_shift = _LUMA @ scale, _LUMA @ grey_shift
    return scale, grey_shift, grey_weights

  def matrix(self, mean: np.ndarray) -> tuple[float, ...]:
    """PIL `convert` matrix for a frame whose mean RGB colour is `mean`."""
    scale, grey_shift, grey_weights = self._affine
    shift = int(grey_weights @ mean + 0.5) * grey_shift
    if self.gray:
      return (*scale.tolist(), float(shift))
    return tuple(np.concatenate([scale, shift[:, None]], axis=1).reshape(-1).tolist())

  def __call__(self, image: Image.Image) -> Image.Image:
    """The jittered RGB frame, or its luma (mode `L`) with `gray`."""
    if not self.order:
      return image.convert('L') if self.gray else image
    mean = np.zeros(3)
    if 1 in self.order:  # only contrast needs the mean; the channel histograms give it exactly
      hist = np.asarray(image.histogram(), np.float64).reshape(3, 256)
      mean = hist @ np.arange(256) / hist[0].sum()
    return image.convert('L' if self.gray else 'RGB', self.matrix(mean))


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
  # The official order and per-frame draws (see the module docstring); False: one draw per clip.
  per_frame: bool = False

  def _jitter_factors(self, rng: np.random.Generator) -> dict:
    return dict(brightness=rng.uniform(1 - self.brightness, 1 + self.brightness),
                contrast=rng.uniform(1 - self.contrast, 1 + self.contrast),
                saturation=rng.uniform(1 - self.saturation, 1 + self.saturation),
                hue=rng.uniform(-self.hue, self.hue), order=tuple(rng.permutation(4).tolist()))

  def _color(self, rng: np.random.Generator) -> ColorJitter | None:
    """The clip's colour jitter (p `jitter_p`) and grayscale (p `grayscale_p`); None if neither."""
    jitter = self._jitter_factors(rng) if rng.random() < self.jitter_p else {'order': ()}
    gray = rng.random() < self.grayscale_p
    return ColorJitter(**jitter, gray=gray) if jitter['order'] or gray else None

  def _per_frame(self, images: list, rng: np.random.Generator) -> np.ndarray:
    """The official order: RandAugment per full-size frame, the clip's crop and flip, jitter factors per frame."""
    if self.randaugment:
      images = [functools.reduce(lambda image, op: op(image), self.randaugment.draw(rng, image.size), image)
                for image in images]
    size = (self.input_size, self.input_size)
    box = multi_scale_crop_box(*images[0].size, self.input_size, self.scales, self.max_distort, rng)
    flip = self.flip and rng.random() < 0.5
    jitter = rng.random() < self.jitter_p
    gray = rng.random() < self.grayscale_p
    out = np.empty((len(images), *size, 3), np.uint8)
    for t, image in enumerate(images):
      image = image.resize(size, Image.BILINEAR, box=box)
      if flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
      if jitter or gray:
        image = ColorJitter(**(self._jitter_factors(rng) if jitter else {'order': ()}), gray=gray)(image)
      out[t] = np.asarray(image)[..., None] if image.mode == 'L' else image
    return out

  def __call__(self, frames, rng: np.random.Generator) -> np.ndarray:
    """uint8 `[T, H, W, 3]`, or T RGB PIL images, to uint8 `[T, input_size, input_size, 3]`."""
    images = [frame if isinstance(frame, Image.Image) else Image.fromarray(frame) for frame in frames]
    if self.per_frame:
      return self._per_frame(images, rng)
    size = (self.input_size, self.input_size)
    box = multi_scale_crop_box(*images[0].size, self.input_size, self.scales, self.max_distort, rng)
    flip = self.flip and rng.random() < 0.5
    ops = self.randaugment.draw(rng, size) if self.randaugment else []
    color = self._color(rng)
    if color is not None:
      ops.append(color)
    out = np.empty((len(images), *size, 3), np.uint8)
    resized = {}  # a short video repeats frames: transform each distinct one once
    for t, image in enumerate(images):
      if id(image) in resized:
        out[t] = out[resized[id(image)]]
        continue
      resized[id(image)] = t
      # One PIL call crops and scales; a box of exactly the input size is a plain crop.
      image = image.resize(size, Image.BILINEAR, box=box)
      if flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
      for op in ops:
        image = op(image)
      # Grayscale comes out as L, as torchvision's (then three equal channels): the broadcast writes them.
      out[t] = np.asarray(image)[..., None] if image.mode == 'L' else image
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


@dataclasses.dataclass(frozen=True)
class CentreCrop:
  """The training-pipeline face of `EvalAugment` (one crop): [1, H, W, 3] -> [1, S, S, 3], no randomness."""
  input_size: int

  def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    del rng
    return EvalAugment(self.input_size)(frames[None])[0]
