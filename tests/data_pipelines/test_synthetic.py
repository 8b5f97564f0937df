"""The synthetic action world: files the pipeline reads, determinism, held-out classes, and verbs no frame shows."""
import csv
import dataclasses
import json
import os

import av
import numpy as np
import pytest

from data_pipelines import annotations, synthetic

# A seconds-sized world: two objects, every verb; each object's default held-out pair.
OBJECTS = (('red', 'circle'), ('blue', 'square'))
SIZE = dict(objects=OBJECTS, train_per_class=1, val_per_class=1, heldout_per_class=1, heldout_train_per_class=1,
            frames=(8, 10), pretrain_images=6)


def _decode(path: str) -> np.ndarray:
  with av.open(path) as container:
    return np.stack([frame.to_ndarray(format='rgb24') for frame in container.decode(video=0)])


@pytest.fixture(scope='module')
def world(tmp_path_factory):
  return synthetic.make_world(str(tmp_path_factory.mktemp('world')), seed=3, **SIZE)


def test_lists_and_labels_read_by_the_pipeline(world):
  seen = annotations.read_label_csv(world['label_list'])
  heldout = annotations.read_label_csv(world['heldout_label_list'])
  assert len(seen) + len(heldout) == len(OBJECTS) * len(synthetic.VERBS)
  for list_key, names in (('train_list', seen), ('val_list', seen), ('heldout_list', heldout),
                          ('heldout_train_list', heldout)):
    records = annotations.read_list_file(world[list_key], len(names), root=world['root'])
    assert sorted(r.label for r in records) == list(range(len(names)))  # one video of each class
    for record in records[:2]:
      assert len(_decode(record.path)) == record.num_frames  # the listed count is the decoded one
  with open(world['captions'], newline='') as f:
    rows = list(csv.reader(f))
  assert rows[0] == ['path', 'caption'] and len(rows) == 1 + SIZE['pretrain_images']
  for path, caption in rows[1:]:
    assert os.path.isfile(os.path.join(os.path.dirname(world['captions']), path))
    assert caption.startswith(('a small ', 'a large ')) and ' pointing ' in caption


def test_heldout_classes_are_new_combinations_of_seen_objects_and_verbs(world):
  with open(world['world']) as f:
    classes = json.load(f)['classes']
  seen = [c for c in classes if c['split'] == 'seen']
  heldout = [c for c in classes if c['split'] == 'heldout']
  assert [c['name'] for c in seen] == annotations.read_label_csv(world['label_list'])
  assert [c['name'] for c in heldout] == annotations.read_label_csv(world['heldout_label_list'])
  assert [c['id'] for c in heldout] == list(range(len(heldout)))
  combos = {split: {(c['colour'], c['shape'], c['verb']) for c in members}
            for split, members in (('seen', seen), ('heldout', heldout))}
  assert all(c['name'] == synthetic.class_name(c['colour'], c['shape'], c['verb']) for c in classes)
  assert combos['heldout'] == set(synthetic.default_heldout(OBJECTS)) and not combos['seen'] & combos['heldout']
  for colour, shape, verb in combos['heldout']:
    assert any(c[:2] == (colour, shape) for c in combos['seen']) and any(c[2] == verb for c in combos['seen'])
  train_names = {os.path.basename(line.split(' ')[0]).rsplit('_', 1)[0] for line in open(world['train_list'])}
  assert not train_names & {c['name'].replace(' ', '_') for c in heldout}


def test_same_seed_same_world_other_seed_other_videos(world, tmp_path):
  """The same seed writes the same world, in one process or several."""
  again = synthetic.make_world(str(tmp_path / 'again'), seed=3, workers=2, **SIZE)
  other = synthetic.make_world(str(tmp_path / 'other'), seed=4, **SIZE)
  for key in ('label_list', 'train_list', 'val_list', 'heldout_train_list', 'heldout_list', 'captions'):
    with open(world[key]) as a, open(again[key]) as b:
      assert a.read() == b.read(), key
  for key in ('train_list', 'val_list', 'heldout_train_list', 'heldout_list'):
    for line in open(world[key]):
      video = line.split(' ')[0]
      np.testing.assert_array_equal(_decode(os.path.join(again['root'], video)),
                                    _decode(os.path.join(world['root'], video)), err_msg=video)
  video = open(world['val_list']).readline().split(' ')[0]
  first = _decode(os.path.join(world['root'], video))
  assert not np.array_equal(_decode(os.path.join(other['root'], video))[:len(first)], first)


def _scenes(count: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  return [synthetic.draw_scene(rng, 32) for _ in range(count)]


@pytest.mark.parametrize('pair', synthetic.VERB_PAIRS, ids=lambda pair: pair[0].replace(' ', '_'))
def test_a_verb_played_backwards_is_its_partner(pair):
  """Exactly, frame for frame: with the clock's phase mirrored (phase -> 1 - phase, the same uniform distribution),
  reversing a video of one verb gives the scene's video of the other, so both verbs show the same frames."""
  for scene in _scenes(20):
    forward = synthetic.object_states(scene, pair[0])
    backward = synthetic.object_states(dataclasses.replace(scene, phase=1 - scene.phase), pair[1])
    for key, values in forward.items():
      # float64 arithmetic in another order: a few ulps of the largest value (angles reach ~10 rad, lengths 32 px)
      np.testing.assert_allclose(backward[key][::-1], values, rtol=0, atol=1e-12, err_msg=f'{pair} {key}')


def test_a_single_frame_does_not_tell_the_verb():
  """Every frame's position, size and orientation have the same distribution whatever the verb (visibility differs
  for appear/disappear only): each verb's pooled frames, across many scenes, match the static draws'."""
  scenes = _scenes(3000, seed=1)
  static = {key: np.concatenate([synthetic.object_states(s, 'appearing')[key] for s in scenes])
            for key in ('x', 'y', 'radius')}
  for verb in ('moving left', 'moving up', 'growing', 'rotating clockwise'):
    frames = {key: np.concatenate([synthetic.object_states(s, verb)[key] for s in scenes]) for key in static}
    for key, values in frames.items():
      # Means of ~70k correlated frames (3000 scenes): the standard error is at most std / sqrt(3000); 5 of those.
      tolerance = 5 * static[key].std() / np.sqrt(len(scenes))
      assert abs(values.mean() - static[key].mean()) < tolerance, (verb, key)
      assert abs(values.std() - static[key].std()) < tolerance, (verb, key)
    angle = np.concatenate([synthetic.object_states(s, verb)['angle'] for s in scenes])
    assert abs(np.cos(angle).mean()) < 5 / np.sqrt(len(scenes)) and abs(np.sin(angle).mean()) < 5 / np.sqrt(len(scenes))


def test_directions_on_screen():
  """x grows rightwards and y downwards, so `moving left` lowers x, and clockwise (on screen) turns the dark half
  from the right (angle 0) to the bottom."""
  scene = _scenes(1)[0]
  assert np.all(np.diff(synthetic.object_states(scene, 'moving left')['x']) < 0)
  assert np.all(np.diff(synthetic.object_states(scene, 'moving up')['y']) < 0)
  assert np.all(np.diff(synthetic.object_states(scene, 'rotating clockwise')['angle']) > 0)
  assert np.all(np.diff(synthetic.object_states(scene, 'growing')['radius']) > 0)
  frame = np.full((2, 32, 32, 3), 128.0)
  synthetic._draw_object(frame, 'circle', (200, 200, 200), [16, 16], [16, 16], [8, 8], [0, np.pi / 2], [1, 1])
  # The dark half points along the angle: right at 0, down (y grows downwards) after a quarter turn clockwise.
  assert frame[0, 16, 20:24].mean() < frame[0, 16, 8:12].mean()
  assert frame[1, 20:24, 16].mean() < frame[1, 8:12, 16].mean()
  # The hand, dark, reaches past the body (radius 0.9 * 8) on that side only; the far side is background.
  small = np.full((1, 32, 32, 3), 128.0)
  synthetic._draw_object(small, 'circle', (200, 200, 200), [16], [16], [4], [0.0], [1])
  assert small[0, 16, 24:27].max() < 60 and np.all(small[0, 16, 5:8] == 128)


def test_rotation_faces_up_halfway():
  """Both senses of rotation face up at the middle of the video and turn once over it."""
  scene = _scenes(1)[0]
  for verb, sign in (('rotating clockwise', 1), ('rotating counter-clockwise', -1)):
    angle = synthetic.object_states(dataclasses.replace(scene, phase=0.0, num_frames=4), verb)['angle']
    np.testing.assert_allclose(angle, -np.pi / 2 + sign * 2 * np.pi * np.array([-0.5, -0.25, 0, 0.25]), atol=1e-12)


def test_bad_arguments_fail_before_writing(tmp_path):
  with pytest.raises(ValueError, match=r"Unknown verbs, colours or shapes: \['hopping', 'purple'\]"):
    synthetic.make_world(str(tmp_path / 'w'), objects=(('purple', 'circle'),), verbs=('hopping',))
  with pytest.raises(ValueError, match='Held-out classes not among'):
    synthetic.make_world(str(tmp_path / 'w'), objects=OBJECTS, heldout=[('red', 'circle', 'growing'),
                                                                        ('green', 'circle', 'growing')])
  assert not os.path.exists(tmp_path / 'w')
