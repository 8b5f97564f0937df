import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines.augment import (CLIP_MEAN, CLIP_STD, ColorJitter, EvalAugment, TrainAugment,
                                    multi_scale_crop_box, normalize)
from data_pipelines.randaugment import _OPS, RandAugment
from tolerance import rounding


def clip(num_frames=4, height=48, width=64, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)


def test_normalize_is_clip_mean_std():
  frames = np.array([[[0, 128, 255]]], np.uint8)
  expected = (np.array([0, 128, 255]) / 255 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
  # Three float32 operations per value (XLA may fold them into a multiply-add): a few roundings of |expected| <= 2.1.
  np.testing.assert_allclose(np.asarray(normalize(frames))[0, 0], expected, atol=rounding(4, expected), rtol=0)
  assert normalize(frames).dtype == jnp.float32
  assert normalize(frames, jnp.bfloat16).dtype == jnp.bfloat16


def test_normalize_of_a_uint8_batch_is_the_host_float32_normalization():
  # The batches used to carry frames normalized on the host in float32, like this; the jitted uint8 path
  # must give the model the same input to float32 precision.
  batch = clip(2 * 3, 16, 16).reshape(2, 3, 16, 16, 3)
  host = batch.astype(np.float32) / np.float32(255)
  host = (host - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
  on_device = np.asarray(jax.jit(normalize)(batch))
  assert on_device.dtype == np.float32
  np.testing.assert_allclose(on_device, host, atol=rounding(4, host), rtol=0)


def test_multi_scale_crop_boxes_are_tsn_sizes_at_fixed_offsets():
  rng = np.random.default_rng(0)
  width, height, size = 340, 256, 224
  sizes = [256, 224, 192, 168]  # int(256 * s) for the scales
  boxes = {multi_scale_crop_box(width, height, size, (1, .875, .75, .66), 1, rng) for _ in range(3000)}
  pairs = {(sizes[j], sizes[i]) for i in range(4) for j in range(4) if abs(i - j) <= 1}
  assert {(right - left, bottom - top) for left, top, right, bottom in boxes} == pairs
  for left, top, right, bottom in boxes:
    w, h = right - left, bottom - top
    w_step, h_step = (width - w) // 4, (height - h) // 4
    assert left in {0, w_step, 2 * w_step, 3 * w_step, 4 * w_step}
    assert top in {0, h_step, 2 * h_step, 3 * h_step, 4 * h_step}
  # 13 offsets for each size pair: the (1, 3) pattern (quarter points) and corners both occur.
  assert (0, 0, 168, 168) in boxes and ((340 - 168) // 4, (256 - 168) // 4, 43 + 168, 22 + 168) in boxes


def test_train_applies_one_transform_to_all_frames():
  augment = TrainAugment(input_size=32, randaugment=RandAugment(2, 9))
  frames = np.repeat(clip(1), 8, axis=0)  # a still clip stays still whatever was drawn
  for seed in range(20):
    out = augment(frames, np.random.default_rng(seed))
    assert out.shape == (8, 32, 32, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.broadcast_to(out[:1], out.shape))


def test_train_is_a_function_of_the_generator():
  augment = TrainAugment(input_size=32, randaugment=RandAugment(2, 9))
  frames = clip()
  a, b = (augment(frames, np.random.default_rng(3)) for _ in range(2))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, augment(frames, np.random.default_rng(4)))


def test_flip_off_never_mirrors():
  # A left-to-right ramp keeps its direction through every crop when flips are off.
  ramp = np.broadcast_to(np.linspace(0, 255, 64).astype(np.uint8)[None, :, None], (1, 48, 64, 3)).copy()
  plain = TrainAugment(input_size=32, flip=False, jitter_p=0, grayscale_p=0)
  flipping = TrainAugment(input_size=32, jitter_p=0, grayscale_p=0)
  rising = lambda out: out[0, 16, -1, 0] > out[0, 16, 0, 0]
  assert all(rising(plain(ramp, np.random.default_rng(s))) for s in range(30))
  assert not all(rising(flipping(ramp, np.random.default_rng(s))) for s in range(30))


def test_grayscale_probability():
  augment = TrainAugment(input_size=16, jitter_p=0, grayscale_p=0.2)
  gray = [np.ptp(augment(clip(1), np.random.default_rng(s))[0].astype(int), axis=-1).max() == 0
          for s in range(500)]
  assert 0.14 < np.mean(gray) < 0.26


@pytest.mark.parametrize('op', range(len(_OPS)))
def test_every_randaugment_op_keeps_size_and_acts(op):
  from PIL import Image
  low, high, make = _OPS[op]
  image = Image.fromarray(clip(1, 32, 32)[0] // 2 + 50)  # low contrast, so autocontrast acts
  out = make(9 / 30 * (high - low) + low, np.random.default_rng(0), image.size)(image)
  assert out.size == image.size and out.mode == 'RGB'
  assert not np.array_equal(np.asarray(out), np.asarray(image))


def test_eval_center_crop_and_three_crops():
  center = EvalAugment(input_size=28)(clip(3, 48, 64)[None])  # short side 28 * 256 // 224 = 32
  assert center.shape == (1, 3, 28, 28, 3)
  frames = clip(3, 32, 64)[None]  # one temporal clip
  three = EvalAugment(input_size=32, num_crops=3)(np.concatenate([frames, frames]))
  assert three.shape == (6, 3, 32, 32, 3)
  # Three crops of a frame whose short side already is the input size: left, centre, right.
  for k, left in enumerate((0, 16, 32)):
    np.testing.assert_array_equal(three[k], frames[0][:, :, left:left + 32])
  np.testing.assert_array_equal(three[3:], three[:3])
  with pytest.raises(ValueError, match='num_crops'):
    EvalAugment(num_crops=2)


def test_hue_rotation_keeps_grays_and_moves_colours():
  from PIL import Image
  image = Image.fromarray(clip(1, 16, 16)[0])
  gray = image.convert('L').convert('RGB')
  hue = lambda shift, img: np.asarray(ColorJitter(hue=shift, order=(3,))(img)).astype(int)
  np.testing.assert_array_equal(hue(0.0, image), np.asarray(image))
  assert np.abs(hue(0.1, gray) - np.asarray(gray)).max() <= 1  # no chroma, nothing to rotate
  assert np.abs(hue(0.1, image) - np.asarray(image)).mean() > 5


def test_color_jitter_is_the_torchvision_steps_fused():
  # ColorJitter's one pass against the four steps one at a time (torchvision's PIL path: ImageEnhance,
  # with hue as the YIQ rotation), on frames no step pushes out of [0, 255].
  from PIL import Image, ImageEnhance
  from data_pipelines.augment import _hue_matrix
  rng = np.random.default_rng(0)
  for seed in range(30):
    image = Image.fromarray((clip(1, 24, 24, seed)[0] // 5 + 100).astype(np.uint8))  # values 100..151
    factors = dict(brightness=rng.uniform(.6, 1.4), contrast=rng.uniform(.6, 1.4),
                   saturation=rng.uniform(.8, 1.2), hue=rng.uniform(-.1, .1))
    order = tuple(rng.permutation(4).tolist())
    steps = [lambda im: ImageEnhance.Brightness(im).enhance(factors['brightness']),
             lambda im: ImageEnhance.Contrast(im).enhance(factors['contrast']),
             lambda im: ImageEnhance.Color(im).enhance(factors['saturation']),
             lambda im: im.convert('RGB', tuple(np.concatenate(
                 [_hue_matrix(factors['hue']), np.zeros((3, 1))], axis=1).reshape(-1).tolist()))]
    expected = image
    for step in order:
      expected = steps[step](expected)
    for gray, reference in ((False, expected), (True, expected.convert('L'))):
      got = ColorJitter(**factors, order=order, gray=gray)(image)
      assert got.mode == reference.mode
      # ImageEnhance truncates after each of its three steps (half a level each on average) where the
      # fused map rounds once, and its contrast grey is the mean of rounded luma; later gains can carry
      # that to a few levels. Leaving any one step out fails this for many of the draws.
      error = np.abs(np.asarray(got).astype(int) - np.asarray(reference).astype(int))
      assert error.max() <= 6 and error.mean() < 2, (seed, order, error.max(), error.mean())


def test_train_takes_pil_frames_as_it_takes_arrays():
  from PIL import Image
  augment = TrainAugment(input_size=32, randaugment=RandAugment(2, 9))
  frames = clip(3)
  images = [Image.fromarray(frame) for frame in frames]
  for seed in range(10):
    np.testing.assert_array_equal(augment(images, np.random.default_rng(seed)),
                                  augment(frames, np.random.default_rng(seed)))


def test_importing_the_package_pools_pillow_blocks_unless_configured():
  import os
  import subprocess
  import sys
  check = 'import data_pipelines; from PIL import Image; print(Image.core.get_blocks_max())'
  env = {k: v for k, v in os.environ.items() if k != 'PILLOW_BLOCKS_MAX'}
  for extra, expected in (({}, '32'), ({'PILLOW_BLOCKS_MAX': '3'}, '3')):
    out = subprocess.run([sys.executable, '-c', check], env={**env, **extra}, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == expected
