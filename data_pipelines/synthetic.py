"""Synthetic labelled videos, written with PyAV: for smoke runs, tests and the demo, without downloads.

Two generators:

- `make_dataset`: a few classes, each with its own colour and motion (a bright square moving in a class-specific
  direction), so a model can tell the classes apart from one frame; or, with `colour_per_class=False`, only by the
  direction of motion. For smoke runs and the learning test.
- `make_world` (`python -m data_pipelines.synthetic --out DIR [--seed S]`): the synthetic action world. A class is
  an object (a coloured circle, square or triangle) and a verb (`moving left`, `rotating clockwise`, `growing`,
  `appearing`, ...), named by a sentence ("a red circle moving left"), over varied textured backgrounds with pixel
  noise and a static grey distractor shape; sizes, speeds, start positions, lengths and frame rates vary per video.
- `make_multilabel_world` (`--multilabel [--charades]`): the same classes, two objects a video, each doing its own
  verb (one all along, one in a sub-interval), listed as a generic multi-label list and, with `--charades`, in
  Charades' own formats too.

The world's verbs come in pairs, each verb the time reverse of the other (left/right, up/down, clockwise/
counter-clockwise, growing/shrinking, appearing/disappearing), and every video draws its random numbers the same way
whatever its verb: only which attribute follows the clock differs. Within a pair a single frame says nothing about
the verb, exactly: reversing a video of one verb gives a video of the other, with the same distribution. Across
pairs every frame's position, size and orientation have the same distribution too (a video's static attributes are
drawn from the distribution its changing attribute sweeps); only a missing or faded object tells the
appear/disappear pair from the others. An order-blind model (meanP) can at best tell the pairs apart from the spread
of a clip's frames; telling a verb from its partner takes their order.

Objects show the way they face: their front half is darker, and a dark hand, three radii long, reaches out from
their centre that way. An object is about one 8-pixel patch of a 32-pixel frame, and without the hand the tiny image
tower barely sees its orientation. A rotating object faces up halfway through its video (as a clock hand passes
twelve; `_ROTATION_MIDDLE`) and turns once over it, so which way it turns shows in where its hand points early and
late in a clip, as a direction shows in where the object is early and late; with any orientation halfway through,
the turn is only in how two frames' orientations differ. Measured with the demo's recipe (pre-trained tiny CLIP,
`Transf`, 1,600 steps, 256 val videos; 1 to 1.4 turns a video then, one now, see `_TURN`), clockwise and
counter-clockwise videos are named right 58% of the time facing up halfway without the hand, 62% with the hand from
any middle orientation, 92% with both; facing up halfway, a linear probe of the 8 frame features of the pre-trained
image tower tells the two apart in 75% of videos without the hand, 98% with it. Between two of a clip's 8 sampled
frames the object turns by less than half a turn (`_TURN`): the way it turns is never ambiguous.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import csv
import dataclasses
import functools
import json
import multiprocessing
import os

import av
import numpy as np
from PIL import Image

from data_pipelines.annotations import write_label_csv


def _frames(label: int, num_classes: int, index: int, num_frames: int, width: int, height: int,
            colour_per_class: bool = True) -> np.ndarray:
  rng = np.random.default_rng((label, index))
  colour_angle = 2 * np.pi * label / num_classes if colour_per_class else 0.0
  base = (96 + 80 * np.array([np.cos(colour_angle), np.sin(colour_angle), 0.5])).clip(0, 255)
  angle = 2 * np.pi * label / num_classes
  out = np.empty((num_frames, height, width, 3), np.uint8)
  size = max(4, min(width, height) // 4)
  # Up to 2 pixels a frame, along a path that stays inside the picture (a wrap-around would reverse the motion).
  step = min(2.0, 0.75 * (min(width, height) - size) / max(1, num_frames - 1))
  path_x, path_y = step * (num_frames - 1) * np.cos(angle), step * (num_frames - 1) * np.sin(angle)
  x0 = rng.uniform(max(0, -path_x), min(width - size, width - size - path_x))
  y0 = rng.uniform(max(0, -path_y), min(height - size, height - size - path_y))
  for t in range(num_frames):
    frame = np.broadcast_to(base, (height, width, 3)) + rng.normal(0, 6, (height, width, 3))
    x = int(round(x0 + step * t * np.cos(angle)))
    y = int(round(y0 + step * t * np.sin(angle)))
    frame[y:y + size, x:x + size] = 255 - base
    out[t] = frame.clip(0, 255)
  return out


# FFmpeg's default MPEG-4 bit rate (200 kb/s) smears small objects by tens of levels; this keeps them within a few.
_BIT_RATE = 2_000_000


def write_video(path: str, frames: np.ndarray, fps: int = 25) -> None:
  with av.open(path, 'w') as container:
    stream = container.add_stream('mpeg4', rate=fps)
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = 'yuv420p'
    stream.bit_rate = _BIT_RATE
    for frame in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def make_dataset(root: str, class_names=('juggling balls', 'archery', 'abseiling'), train_per_class: int = 4,
                 val_per_class: int = 2, num_frames: int = 16, width: int = 48, height: int = 40,
                 colour_per_class: bool = True) -> dict[str, str]:
  """Writes videos, `train.txt`/`val.txt` (`path num_frames label`, relative to root) and `labels.csv`.

  Class k's square moves at angle 2 pi k / len(class_names) (0: rightwards; y grows downwards). With
  `colour_per_class=False` every class has the same colours, so only the direction of motion tells them apart.
  Returns {'root', 'train_list', 'val_list', 'label_list'}.
  """
  os.makedirs(os.path.join(root, 'videos'), exist_ok=True)
  write_label_csv(os.path.join(root, 'labels.csv'), class_names)
  lists = {}
  for split, per_class in (('train', train_per_class), ('val', val_per_class)):
    lines = []
    for label in range(len(class_names)):
      for i in range(per_class):
        name = f'videos/{split}_{label}_{i}.mp4'
        index = i if split == 'train' else 1000 + i
        frames = _frames(label, len(class_names), index, num_frames, width, height, colour_per_class)
        write_video(os.path.join(root, name), frames)
        lines.append(f'{name} {num_frames} {label}\n')
    lists[split] = os.path.join(root, f'{split}.txt')
    with open(lists[split], 'w') as f:
      f.writelines(lines)
  return {'root': root, 'train_list': lists['train'], 'val_list': lists['val'],
          'label_list': os.path.join(root, 'labels.csv')}


# ------------------------------------------------------------------------------------------------------------------
# The synthetic action world.

SHAPES = ('circle', 'square', 'triangle')
# Saturated colours at least 60 degrees of hue apart; backgrounds and distractors are near-grey.
COLOURS = {'red': (215, 45, 40), 'green': (40, 175, 65), 'blue': (45, 85, 225), 'yellow': (235, 205, 35)}
# Each pair: a change and its time reverse.
VERB_PAIRS = (('moving left', 'moving right'), ('moving up', 'moving down'),
              ('rotating clockwise', 'rotating counter-clockwise'), ('growing', 'shrinking'),
              ('appearing', 'disappearing'))
VERBS = tuple(verb for pair in VERB_PAIRS for verb in pair)
OBJECTS = (('red', 'circle'), ('blue', 'square'), ('green', 'triangle'), ('yellow', 'circle'))
FPS = (10, 12, 15, 24, 25, 30)  # container frame rates; the pipeline samples by frame index
SPLITS = ('train', 'val', 'heldout_train', 'heldout')  # its position in the tuple seeds a split's videos

# Verb -> (attribute that follows the clock, sign). `position` is (axis, sign): x grows rightwards, y downwards.
_CHANGES = {
    'moving left': ('x', -1), 'moving right': ('x', 1), 'moving up': ('y', -1), 'moving down': ('y', 1),
    'rotating clockwise': ('angle', 1), 'rotating counter-clockwise': ('angle', -1),  # y down: +angle is clockwise
    'growing': ('scale', 1), 'shrinking': ('scale', -1), 'appearing': ('alpha', 1), 'disappearing': ('alpha', -1)}
_FADE = 0.15  # appear/disappear: the fade's length, as a fraction of the video
_DARK_FRONT = 0.8  # how much darker the front half and the hand are
# The hand: its length and half-width, in radii. An object is about one 8-pixel patch of the 32-pixel frame, so its
# own outline tells the tiny image tower little of its orientation; a hand reaching into the next patches does
# (see the module docstring).
_HAND = (3.0, 0.5)
_ROTATION_MIDDLE = -np.pi / 2  # a rotating object faces up halfway through its video (see the module docstring)
_RADIUS = (0.1, 0.14)  # an object's middle radius, as a fraction of the picture
# A rotating object turns once over its video: its frames then face every way equally often, as a still object's
# do. A clip's consecutive frames (one from each of 8 segments) are at most two segments, a quarter turn, apart: under
# half a turn (no ambiguous direction), and often more than the eighth of a turn that the captions' `pointing`
# resolves.
_TURN = 2 * np.pi


def class_name(colour: str, shape: str, verb: str) -> str:
  return f'a {colour} {shape} {verb}'


def default_heldout(objects=OBJECTS) -> tuple[tuple[str, str, str], ...]:
  """Object k never shows verb pair k (modulo the pairs but the last): a held-out class's object and verb each
  appear in training with other partners, and telling the two held-out classes of an object apart takes the
  verb, not the object."""
  pairs = VERB_PAIRS[:-1]
  return tuple((colour, shape, verb) for k, (colour, shape) in enumerate(objects) for verb in pairs[k % len(pairs)])


@dataclasses.dataclass(frozen=True)
class Scene:
  """One video's (or picture's) draw: everything but the verb. Lengths are in pixels, angles in radians."""
  num_frames: int
  fps: int
  phase: float  # offsets the clock: a uniformly random frame sits at a uniform time in [-1/2, 1/2]
  offset: tuple[float, float]  # static position, in units of `travel` from `centre`
  travel: float  # distance a moving object covers over the video
  centre: tuple[float, float]
  radius: float  # at log-scale 0; the object spans radius * ratio ** [-1/2, 1/2] when it grows or shrinks
  ratio: float
  log_scale: float  # static, in [-1/2, 1/2]
  angle: float  # static orientation (of the dark half)
  switch: float  # appear/disappear: time of the half-faded frame
  noise: float  # per-pixel noise std
  background: np.ndarray  # float32 [H, W, 3], the distractor drawn in


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
  return rng.uniform(60, 190) + rng.normal(0, 12, 3)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
  """A near-grey texture: a gradient, stripes, a checkerboard or smooth blobs."""
  y, x = np.mgrid[:size, :size].astype(np.float32) + 0.5
  a, b = _muted_colour(rng), _muted_colour(rng)
  kind = rng.integers(4)
  direction = rng.uniform(0, 2 * np.pi)
  along = x * np.cos(direction) + y * np.sin(direction)
  if kind == 0:
    mix = (along - along.min()) / (along.max() - along.min())
  elif kind == 1:
    mix = 0.5 + 0.5 * np.sin(2 * np.pi * along / rng.uniform(5, 12) + rng.uniform(0, 2 * np.pi))
  elif kind == 2:
    cell = rng.uniform(4, 10)
    mix = ((np.floor(x / cell) + np.floor(y / cell)) % 2).astype(np.float32)
  else:
    coarse = np.stack([_muted_colour(rng) for _ in range(16)]).reshape(4, 4, 3).clip(0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), np.float32)
  return (a + (b - a) * mix[..., None]).astype(np.float32)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
  y, x = np.mgrid[:size, :size].astype(np.float32) + 0.5  # pixel centres
  return x, y


def _shape_distance(shape: str, u, v, radius):
  """Signed distance (pixels, negative inside) to a shape of circumradius ~1.1 * radius at (0, 0); u, v are
  coordinates in the shape's own frame (u along the way it faces), broadcast against radius."""
  if shape == 'circle':
    return np.hypot(u, v) - 0.9 * radius
  if shape == 'square':
    return np.maximum(np.abs(u), np.abs(v)) - 0.78 * radius
  if shape == 'triangle':  # a vertex along the shape's +u axis; edge normals point away from the vertices
    normals = [(np.cos(a), np.sin(a)) for a in (np.pi, np.pi / 3, -np.pi / 3)]
    return np.max([u * nu + v * nv for nu, nv in normals], axis=0) - 0.55 * radius
  raise ValueError(f'Unknown shape {shape!r}; known: {", ".join(SHAPES)}')


def _coverage(distance):
  return np.clip(0.5 - distance, 0.0, 1.0)  # one-pixel anti-aliased edge


def _draw_object(frames, shape: str, colour, cx, cy, radius, angle, alpha, marked: bool = True) -> None:
  """Draws in place on float frames [N, S, S, 3]; every object argument is [N]. With `marked`, the object shows the
  way it faces (`angle`): the half of it on that side is darker, and a dark hand reaches out from its centre that
  way, `_HAND[0]` radii long (cut off at the picture's edge)."""
  x, y = _grid(frames.shape[1])
  cx, cy, radius, angle, alpha = (np.asarray(v, np.float32)[:, None, None] for v in (cx, cy, radius, angle, alpha))
  dx, dy = x - cx, y - cy
  u = dx * np.cos(angle) + dy * np.sin(angle)  # the object's own frame: u along the way it faces
  v = -dx * np.sin(angle) + dy * np.cos(angle)
  body = _coverage(_shape_distance(shape, u, v, radius)) * alpha
  colour = np.asarray(colour, np.float32)
  if marked:
    front = _coverage(-u)  # 1 on the front side of the line through the centre
    length, half_width = _HAND[0] * radius, _HAND[1] * radius
    hand = _coverage(np.maximum(np.abs(u - length / 2) - length / 2, np.abs(v) - half_width)) * alpha
    body = np.maximum(body, hand)
    colour = colour * (1 - _DARK_FRONT * np.maximum(front, hand)[..., None])
  frames += body[..., None] * (colour - frames)


def draw_scene(rng: np.random.Generator, size: int, frames: tuple[int, int] = (16, 32)) -> Scene:
  """Everything random about a video but its object and verb; every verb draws it the same way."""
  num_frames = int(rng.integers(frames[0], frames[1] + 1))
  fps = int(rng.choice(FPS))
  phase = rng.uniform()
  offset = tuple(rng.uniform(-0.5, 0.5, 2))
  travel = rng.uniform(0.35, 0.5) * size
  radius = rng.uniform(_RADIUS[0], _RADIUS[1]) * size
  ratio = rng.uniform(1.6, 2.0)
  log_scale = rng.uniform(-0.5, 0.5)
  angle = rng.uniform(0, 2 * np.pi)
  switch = rng.uniform(-0.25, 0.25)
  noise = rng.uniform(2, 7)
  # Room for the largest the object gets, anywhere on its path.
  margin = travel / 2 + 1.1 * radius * np.sqrt(ratio) + 1
  centre = tuple(rng.uniform(margin, size - margin, 2))
  background = np.asarray(_background(rng, size)[None], np.float32)
  _draw_distractor(rng, background)
  return Scene(num_frames, fps, phase, offset, travel, centre, radius, ratio, log_scale, angle, switch, noise,
               background[0])


def _draw_distractor(rng: np.random.Generator, picture: np.ndarray) -> None:
  """Draws a static near-black or near-white shape, sized to the picture [1, S, S, 3], in place."""
  size = picture.shape[1]
  grey = rng.choice([rng.uniform(15, 45), rng.uniform(210, 245)])
  d_radius = rng.uniform(0.07, 0.13) * size
  d_x, d_y = rng.uniform(d_radius, size - d_radius, 2)
  d_shape = SHAPES[rng.integers(len(SHAPES))]
  _draw_object(picture, d_shape, (grey,) * 3, [d_x], [d_y], [d_radius], [rng.uniform(0, 2 * np.pi)], [1.0],
               marked=False)


def object_states(scene: Scene, verb: str) -> dict[str, np.ndarray]:
  """Per-frame x, y, radius, angle and alpha [N] of the object of `scene` doing `verb`."""
  if verb not in _CHANGES:
    raise ValueError(f'Unknown verb {verb!r}; known: {", ".join(VERBS)}')
  n = scene.num_frames
  clock = (np.arange(n) + scene.phase) / n - 0.5
  change, sign = _CHANGES[verb]
  state = {'x': np.full(n, scene.offset[0]), 'y': np.full(n, scene.offset[1]), 'scale': np.full(n, scene.log_scale),
           'angle': np.full(n, scene.angle), 'alpha': np.ones(n)}
  if change == 'angle':
    state['angle'] = _ROTATION_MIDDLE + sign * _TURN * clock
  elif change == 'alpha':
    state['alpha'] = np.clip((sign * clock - scene.switch) / _FADE + 0.5, 0, 1)
  else:
    state[change] = sign * clock
  return {'x': scene.centre[0] + scene.travel * state['x'], 'y': scene.centre[1] + scene.travel * state['y'],
          'radius': scene.radius * scene.ratio ** state['scale'], 'angle': state['angle'], 'alpha': state['alpha']}


def render(scene: Scene, colour: str, shape: str, verb: str, rng: np.random.Generator) -> np.ndarray:
  """uint8 [N, S, S, 3]: the scene's background, the object doing `verb`, fresh pixel noise in every frame."""
  size = scene.background.shape[0]
  frames = scene.background + rng.normal(0, scene.noise, (scene.num_frames, size, size, 3)).astype(np.float32)
  s = object_states(scene, verb)
  _draw_object(frames, shape, COLOURS[colour], s['x'], s['y'], s['radius'], s['angle'], s['alpha'])
  return np.rint(frames).clip(0, 255).astype(np.uint8)


def _where(x: float, y: float, size: int) -> str:
  """'at the top left', 'on the right', 'in the centre', ...: the thirds of the picture."""
  row = ('top', '', 'bottom')[min(2, int(3 * y / size))]
  column = ('left', '', 'right')[min(2, int(3 * x / size))]
  if row and column:
    return f'at the {row} {column}'
  if row:
    return f'at the {row}'
  return f'on the {column}' if column else 'in the centre'


_POINTING = ('right', 'down right', 'down', 'down left', 'left', 'up left', 'up', 'up right')  # clockwise from 0


def _pointing(angle: float) -> str:
  """The way the dark half faces, to the nearest eighth of a turn: 'right', 'down right', 'down', ... (y grows
  downwards)."""
  return _POINTING[int(np.round(angle / (2 * np.pi / len(_POINTING)))) % len(_POINTING)]


def caption(colour: str, shape: str, x: float, y: float, radius: float, angle: float, size: int) -> str:
  """'a small red circle pointing up at the top left': every attribute of one frame that a verb changes."""
  big = 'large' if radius >= np.mean(_RADIUS) * size else 'small'
  return f'a {big} {colour} {shape} pointing {_pointing(angle)} {_where(x, y, size)}'


def _caption_picture(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
  """One frame of a random object at a random place (anywhere in the picture), and its caption."""
  colour = list(COLOURS)[rng.integers(len(COLOURS))]
  shape = SHAPES[rng.integers(len(SHAPES))]
  scene = draw_scene(rng, size)
  radius = scene.radius * scene.ratio ** scene.log_scale
  x, y = rng.uniform(1.1 * radius + 1, size - 1.1 * radius - 1, 2)
  frame = scene.background + rng.normal(0, scene.noise, (1, size, size, 3)).astype(np.float32)
  _draw_object(frame, shape, COLOURS[colour], [x], [y], [radius], [scene.angle], [1.0])
  return np.rint(frame[0]).clip(0, 255).astype(np.uint8), caption(colour, shape, x, y, radius, scene.angle, size)


def _video_rng(seed: int, split: str, class_index: int, i: int) -> np.random.Generator:
  return np.random.default_rng([seed, SPLITS.index(split), class_index, i])


@dataclasses.dataclass(frozen=True)
class _Video:
  """One video of the world to write (a picklable job for the writing processes)."""
  out: str
  seed: int
  split: str
  class_index: int  # among all objects x verbs: seeds the video
  combo: tuple[str, str, str]
  label: int  # in its split's label list
  i: int
  size: int
  frames: tuple[int, int]


def _write_world_video(job: _Video) -> str:
  """Renders and writes one video; returns its list line."""
  rng = _video_rng(job.seed, job.split, job.class_index, job.i)
  scene = draw_scene(rng, job.size, job.frames)
  name = f'videos/{job.split}/{class_name(*job.combo).replace(" ", "_")}_{job.i:03d}.mp4'
  write_video(os.path.join(job.out, name), render(scene, *job.combo, rng), fps=scene.fps)
  return f'{name} {scene.num_frames} {job.label}\n'


def _classes(objects, verbs, heldout) -> tuple[list, list, list]:
  """Every (colour, shape, verb) class, then the seen and the held-out ones, in class order; see `make_world`."""
  unknown = sorted(set(verbs) - set(VERBS)) + sorted({c for c, _ in objects} - set(COLOURS))
  unknown += sorted({s for _, s in objects} - set(SHAPES))
  if unknown:
    raise ValueError(f'Unknown verbs, colours or shapes: {unknown}')
  if heldout is None:
    heldout = [combo for combo in default_heldout(objects) if combo[2] in verbs]
  combos = [(colour, shape, verb) for colour, shape in objects for verb in verbs]
  heldout = [tuple(combo) for combo in heldout]
  missing = sorted(set(heldout) - set(combos))
  if missing:
    raise ValueError(f'Held-out classes not among the objects x verbs: {missing}')
  return combos, [c for c in combos if c not in heldout], [c for c in combos if c in heldout]


@contextlib.contextmanager
def _video_writer(workers: int):
  """A `map` over video jobs, in `workers` processes or in this one. Each video draws from its own generator, so
  writing them in any order, in any process, gives the same world."""
  if workers <= 1:
    yield map
    return
  # Spawned, not forked: no fork of a caller's threads (JAX's).
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn')) as pool:
    yield functools.partial(pool.map, chunksize=16)


def _world_json(path: str, seed: int, size: int, frames, seen, heldout, **extra) -> None:
  classes = [{'id': label, 'name': class_name(*combo), 'shape': combo[1], 'colour': combo[0], 'verb': combo[2],
              'split': split}
             for split, members in (('seen', seen), ('heldout', heldout)) for label, combo in enumerate(members)]
  world = {'seed': seed, 'size': size, 'frames': list(frames), 'verb_pairs': [list(p) for p in VERB_PAIRS],
           **extra, 'classes': classes}
  with open(path, 'w') as f:
    json.dump(world, f, indent=2)


def make_world(out: str, seed: int = 0, *, objects=OBJECTS, verbs=VERBS, heldout=None, train_per_class: int = 150,
               val_per_class: int = 8, heldout_per_class: int = 12, heldout_train_per_class: int = 4,
               size: int = 32, frames: tuple[int, int] = (16, 32), pretrain_images: int = 2000,
               workers: int = 1) -> dict[str, str]:
  """Writes the synthetic action world into `out`, deterministically from `seed`; returns its files' paths.

  Classes are every (colour, shape) of `objects` with every verb of `verbs`; those of `heldout` ((colour, shape,
  verb) triples, default `default_heldout(objects)` restricted to `verbs`) are held out for zero-shot. Files:
  `labels.csv` (seen classes, `id,name`), `train.txt` / `val.txt` (TSN lines `path num_frames label`, paths
  relative to `out`, different videos of the seen classes), `heldout_labels.csv`, `heldout.txt` (videos of the
  held-out classes, labels index heldout_labels.csv), `heldout_train.txt` (other videos of those classes, for
  few-shot training), `pretrain/captions.csv` (`path,caption`, paths relative to `out/pretrain`: single pictures
  whose captions name the object's size, colour, shape, orientation and position, see `caption`) and `world.json`
  (`classes`: per class its id, name, shape, colour, verb and split `seen|heldout`; and the seed, size, frame range
  and verb pairs). Videos are `size` pixels square, `frames[0]..frames[1]` frames long. `workers` > 1 writes the
  videos in that many processes; the files are the same.
  """
  combos, seen, heldout = _classes(objects, verbs, heldout)
  paths = {'root': out, 'label_list': os.path.join(out, 'labels.csv'),
           'heldout_label_list': os.path.join(out, 'heldout_labels.csv'),
           'captions': os.path.join(out, 'pretrain', 'captions.csv'), 'world': os.path.join(out, 'world.json')}
  os.makedirs(out, exist_ok=True)
  write_label_csv(paths['label_list'], [class_name(*c) for c in seen])
  write_label_csv(paths['heldout_label_list'], [class_name(*c) for c in heldout])
  splits = (('train', seen, train_per_class, 'train_list'), ('val', seen, val_per_class, 'val_list'),
            ('heldout_train', heldout, heldout_train_per_class, 'heldout_train_list'),
            ('heldout', heldout, heldout_per_class, 'heldout_list'))
  jobs = {split: [_Video(out, seed, split, combos.index(combo), combo, label, i, size, frames)
                  for label, combo in enumerate(classes) for i in range(per_class)]
          for split, classes, per_class, _ in splits}
  for split in jobs:
    os.makedirs(os.path.join(out, 'videos', split), exist_ok=True)
  with _video_writer(workers) as write:
    for split, _, _, key in splits:
      paths[key] = os.path.join(out, f'{split}.txt')
      lines = list(write(_write_world_video, jobs[split]))
      with open(paths[key], 'w') as f:
        f.writelines(lines)

  _write_captions(os.path.dirname(paths['captions']), seed, size, pretrain_images)
  _world_json(paths['world'], seed, size, frames, seen, heldout)
  return paths


def _write_captions(folder: str, seed: int, size: int, count: int) -> None:
  os.makedirs(os.path.join(folder, 'images'), exist_ok=True)
  rng = np.random.default_rng([seed, len(SPLITS)])
  with open(os.path.join(folder, 'captions.csv'), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(('path', 'caption'))
    for i in range(count):
      picture, text = _caption_picture(rng, size)
      name = f'images/{i:05d}.png'
      Image.fromarray(picture).save(os.path.join(folder, name))
      writer.writerow((name, text))


# ------------------------------------------------------------------------------------------------------------------
# The multi-label world: two objects a video, each doing a verb of its own.

@dataclasses.dataclass(frozen=True)
class _PairVideo:
  """One two-object video to write; `classes` are its split's (colour, shape, verb) classes, its labels' names."""
  out: str
  seed: int
  split: str
  i: int
  classes: tuple[tuple[str, str, str], ...]
  size: int
  frames: tuple[int, int]
  video_size: int  # the size written: `size` averaged over blocks of size // video_size pixels

  @property
  def name(self) -> str:
    return f'{self.split}_{self.i:05d}'


@dataclasses.dataclass(frozen=True)
class _PairDraw:
  """What a written two-object video shows: its labels and the frames [start, stop) each is active in."""
  num_frames: int
  fps: int
  labels: tuple[int, int]
  spans: tuple[tuple[int, int], tuple[int, int]]


def _write_pair_video(job: _PairVideo) -> _PairDraw:
  """Two different objects, each doing its own verb: the first all along, the second in a random half to three
  quarters of the video, still before and after (an appearing object is hidden before, a disappearing one after).
  The objects and the grey distractor each have a quadrant of the picture (so none hides another), drawn as a
  single-world picture of half the size would be (a hand stops at its quadrant's edge)."""
  rng = np.random.default_rng([job.seed, SPLITS.index(job.split), job.i])
  by_object = {}
  for label, (colour, shape, _) in enumerate(job.classes):
    by_object.setdefault((colour, shape), []).append(label)
  objects = list(by_object)
  chosen = [by_object[objects[k]] for k in rng.choice(len(objects), 2, replace=False)]
  labels = tuple(int(options[rng.integers(len(options))]) for options in chosen)
  half = job.size // 2
  scenes = [draw_scene(rng, half, job.frames) for _ in labels]  # the first gives the video its length, rate, noise
  n, fps = scenes[0].num_frames, scenes[0].fps
  length = int(rng.integers(-(-n // 2), 3 * n // 4 + 1))
  start = int(rng.integers(n - length + 1))
  spans = ((0, n), (start, start + length))
  quadrants = [(half * (q % 2), half * (q // 2)) for q in rng.permutation(4)]  # the objects', then the distractor's
  background = np.asarray(_background(rng, job.size)[None], np.float32)
  x, y = quadrants[2]
  _draw_distractor(rng, background[:, y:y + half, x:x + half])
  frames = background + rng.normal(0, scenes[0].noise, (n, job.size, job.size, 3)).astype(np.float32)
  for label, scene, (begin, stop), (x, y) in zip(labels, scenes, spans, quadrants):
    colour, shape, verb = job.classes[label]
    states = object_states(dataclasses.replace(scene, num_frames=stop - begin), verb)
    held = np.clip(np.arange(n) - begin, 0, stop - begin - 1)  # its first state before the span, its last after
    _draw_object(frames[:, y:y + half, x:x + half], shape, COLOURS[colour],
                 *(states[key][held] for key in ('x', 'y', 'radius', 'angle', 'alpha')))
  block = job.size // job.video_size
  frames = frames.reshape(n, job.video_size, block, job.video_size, block, 3).mean(axis=(2, 4))
  write_video(os.path.join(job.out, 'videos', f'{job.name}.mp4'), np.rint(frames).clip(0, 255).astype(np.uint8),
              fps=fps)
  return _PairDraw(n, fps, labels, spans)


def _charades_actions(draw: _PairDraw) -> str:
  """`cNNN start end;...` in seconds. Times sit half a frame inside each span, so `IntervalSampler` maps them back
  to the span's frames exactly, whatever the rounding to milliseconds."""
  return ';'.join(f'c{label:03d} {(begin + 0.5) / draw.fps:.3f} {(stop - 0.5) / draw.fps:.3f}'
                  for label, (begin, stop) in sorted(zip(draw.labels, draw.spans)))


def make_multilabel_world(out: str, seed: int = 0, *, objects=OBJECTS, verbs=VERBS, heldout=None,
                          train_videos: int = 2000, val_videos: int = 128, heldout_videos: int = 64, size: int = 64,
                          frames: tuple[int, int] = (16, 32), charades: bool = False,
                          video_size: int | None = None, workers: int = 1) -> dict[str, str]:
  """Writes the multi-label world into `out`, deterministically from `seed`; returns its files' paths.

  Classes are the single world's (`make_world`: objects x verbs, `heldout` kept for zero-shot). Each video shows
  two different objects, each doing its own verb, in its own quadrant-sized square: a `size`-pixel picture (64 by
  default) keeps each object as large as in the 32-pixel single world; `video_size` (a divisor of `size`) writes the
  videos smaller, each pixel the average of a block (the demo's 32: objects half the single world's size, 4x fewer
  pixels to decode). Its labels are the two objects' classes.
  Train and val videos show seen classes only; held-out videos show held-out classes only. Files: `labels.csv`,
  `heldout_labels.csv`, `train.txt`, `val.txt`, `heldout.txt` (generic multi-label lines `path num_frames l1,l2`,
  paths relative to `out`, videos in `out/videos/<split>_NNNNN.mp4`) and `world.json` (as `make_world`'s).

  The first object acts all video long, the second in a sub-interval (still before and after it). With `charades`,
  the same videos are also listed in Charades' formats: `Charades_v1_classes.txt` / `Charades_heldout_classes.txt`
  (`cNNN name`) and `Charades_v1_train.csv` / `Charades_v1_test.csv` (val) / `Charades_heldout.csv` (columns
  `id,script,actions,length`, ids relative to `out/videos`), whose intervals give interval sampling its meaning.
  """
  if size < 62:  # `draw_scene` keeps an object's whole motion in view from 31 pixels up
    raise ValueError(f'size must be at least 62, so that each quadrant holds a single-world scene; got {size}')
  video_size = video_size or size
  if size % video_size:
    raise ValueError(f'video_size={video_size} must divide size={size}: frames are written as block averages')
  _, seen, heldout = _classes(objects, verbs, heldout)
  for split_name, classes in (('seen', seen), ('held-out', heldout)):
    if len({combo[:2] for combo in classes}) < 2:
      raise ValueError(f'Two objects a video need at least two objects with {split_name} classes; got {classes}')
  paths = {'root': out, 'label_list': os.path.join(out, 'labels.csv'),
           'heldout_label_list': os.path.join(out, 'heldout_labels.csv'), 'world': os.path.join(out, 'world.json')}
  os.makedirs(os.path.join(out, 'videos'), exist_ok=True)
  write_label_csv(paths['label_list'], [class_name(*c) for c in seen])
  write_label_csv(paths['heldout_label_list'], [class_name(*c) for c in heldout])
  splits = (('train', seen, train_videos, 'Charades_v1_train.csv'), ('val', seen, val_videos, 'Charades_v1_test.csv'),
            ('heldout', heldout, heldout_videos, 'Charades_heldout.csv'))
  if charades:
    paths['charades_root'] = os.path.join(out, 'videos')
    for key, name, classes in (('charades_classes', 'Charades_v1_classes.txt', seen),
                               ('charades_heldout_classes', 'Charades_heldout_classes.txt', heldout)):
      paths[key] = os.path.join(out, name)
      with open(paths[key], 'w') as f:
        f.writelines(f'c{label:03d} {class_name(*combo)}\n' for label, combo in enumerate(classes))
  with _video_writer(workers) as write:
    for split, classes, count, charades_name in splits:
      jobs = [_PairVideo(out, seed, split, i, tuple(classes), size, frames, video_size) for i in range(count)]
      draws = list(write(_write_pair_video, jobs))
      paths[f'{split}_list'] = os.path.join(out, f'{split}.txt')
      with open(paths[f'{split}_list'], 'w') as f:
        f.writelines(f'videos/{job.name}.mp4 {draw.num_frames} {",".join(map(str, sorted(draw.labels)))}\n'
                     for job, draw in zip(jobs, draws))
      if charades:
        paths[f'charades_{split}'] = os.path.join(out, charades_name)
        with open(paths[f'charades_{split}'], 'w', newline='') as f:
          writer = csv.writer(f)
          writer.writerow(('id', 'script', 'actions', 'length'))
          writer.writerows((job.name, '; '.join(class_name(*classes[label]) for label in draw.labels),
                            _charades_actions(draw), f'{draw.num_frames / draw.fps:.3f}')
                           for job, draw in zip(jobs, draws))
  _world_json(paths['world'], seed, size, frames, seen, heldout, objects_per_video=2)
  return paths


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description='Writes the synthetic action world (videos, lists, captions).')
  parser.add_argument('--out', required=True, help='Output directory.')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--workers', type=int, default=os.cpu_count() or 1, help='Processes writing videos.')
  parser.add_argument('--multilabel', action='store_true',
                      help='Write the multi-label world (two objects a video) instead.')
  parser.add_argument('--charades', action='store_true',
                      help='With --multilabel: also list its videos in Charades\' CSV and classes formats.')
  args = parser.parse_args(argv)
  if args.charades and not args.multilabel:
    parser.error('--charades needs --multilabel')
  if args.multilabel:
    paths = make_multilabel_world(args.out, args.seed, charades=args.charades, workers=args.workers)
  else:
    paths = make_world(args.out, args.seed, workers=args.workers)
  print(json.dumps(paths, indent=2))


if __name__ == '__main__':
  main()
