"""The synthetic action world: files the pipeline reads, determinism, held-out classes, and verbs no frame shows."""
import csv
import dataclasses
import json
import os

import av
import numpy as np
import pytest

from data_pipelines import annotations, sampling, synthetic, video_decode

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


# --- The multi-label world ----------------------------------------------------------------------------------------

# Three objects, so a video's pair varies.
MULTI_OBJECTS = OBJECTS + (('green', 'triangle'),)
MULTI_SIZE = dict(objects=MULTI_OBJECTS, train_videos=12, val_videos=3, heldout_videos=4, frames=(8, 12))


@pytest.fixture(scope='module')
def multilabel_world(tmp_path_factory):
  return synthetic.make_multilabel_world(str(tmp_path_factory.mktemp('multilabel')), seed=5, charades=True,
                                         **MULTI_SIZE)


def _combos(world, label_key):
  with open(world['world']) as f:
    classes = json.load(f)['classes']
  split = 'heldout' if label_key == 'heldout_label_list' else 'seen'
  combos = {c['id']: (c['colour'], c['shape'], c['verb']) for c in classes if c['split'] == split}
  assert [synthetic.class_name(*combos[i]) for i in range(len(combos))] == annotations.read_label_csv(world[label_key])
  return combos


@pytest.mark.parametrize('split, label_key', [('train', 'label_list'), ('val', 'label_list'),
                                              ('heldout', 'heldout_label_list')])
def test_multilabel_videos_show_two_objects_each_with_its_verb(multilabel_world, split, label_key):
  combos = _combos(multilabel_world, label_key)
  records, problems = annotations.read_multilabel_list(
      multilabel_world[f'{split}_list'], annotations.read_label_csv(multilabel_world[label_key]),
      root=multilabel_world['root'])
  assert problems == [] and len(records) == MULTI_SIZE[f'{split}_videos']
  heldout = set(synthetic.default_heldout(MULTI_OBJECTS))
  for record in records:
    assert len(record.labels) == 2
    (colour_a, shape_a, _), (colour_b, shape_b, _) = (combos[label] for label in record.labels)
    assert (colour_a, shape_a) != (colour_b, shape_b)
    # Seen splits never show a held-out combination; the held-out split shows nothing else.
    assert all((combos[label] in heldout) == (split == 'heldout') for label in record.labels)
  assert _decode(records[0].path).shape == (records[0].num_frames, 64, 64, 3)


def test_multilabel_world_in_charades_formats(multilabel_world):
  """The Charades copy lists the same videos with the same labels; the first object acts all video long, the second
  in half to three quarters of it, and the times map back to those frames."""
  for split, classes in (('train', 'charades_classes'), ('val', 'charades_classes'),
                         ('heldout', 'charades_heldout_classes')):
    names = annotations.read_label_csv(multilabel_world[classes])
    assert names == annotations.read_label_csv(multilabel_world['heldout_label_list' if split == 'heldout'
                                                                else 'label_list'])
    records, problems = annotations.read_video_list(multilabel_world[f'charades_{split}'], names,
                                                    multilabel_world['charades_root'], multilabel=True)
    listed, _ = annotations.read_multilabel_list(multilabel_world[f'{split}_list'], names, multilabel_world['root'])
    assert problems == []
    assert [(r.path, r.labels) for r in records] == [(r.path, r.labels) for r in listed]
    for record, listing in zip(records, listed):
      spans = sorted((stop - first, first) for _, start, end in record.intervals
                     for first, stop in [sampling.interval_frames(start, end, listing.num_frames)])
      n = listing.num_frames
      assert spans[1] == (n, 0) and -(-n // 2) <= spans[0][0] <= 3 * n // 4


def test_the_second_object_acts_only_in_its_span(tmp_path, monkeypatch):
  """Outside its span the second object holds still (its label is not active there); inside it, it changes."""
  drawn, draw = [], synthetic._draw_object

  def spy(frames, shape, colour, *states, marked=True):
    if marked:  # an object, not a distractor
      drawn.append(np.stack(states, axis=1))
    draw(frames, shape, colour, *states, marked=marked)
  monkeypatch.setattr(synthetic, '_draw_object', spy)
  (tmp_path / 'videos').mkdir()
  _, seen, _ = synthetic._classes(OBJECTS, synthetic.VERBS, None)
  for i in range(6):
    drawn.clear()
    job = synthetic._PairVideo(str(tmp_path), 0, 'train', i, tuple(seen), 64, (16, 32), 64)
    result = synthetic._write_pair_video(job)
    (first, second), ((_, n), (begin, stop)) = drawn, result.spans
    assert first.shape == second.shape == (result.num_frames, 5) and n == result.num_frames  # x, y, r, angle, alpha
    assert (second[:begin] == second[begin]).all() and (second[stop:] == second[stop - 1]).all()
    assert not (second[begin:stop] == second[begin]).all()
    assert not (first == first[0]).all()


def test_multilabel_world_is_a_function_of_the_seed(multilabel_world, tmp_path):
  again = synthetic.make_multilabel_world(str(tmp_path / 'again'), seed=5, **MULTI_SIZE)
  for key in ('label_list', 'heldout_label_list', 'train_list', 'val_list', 'heldout_list'):
    with open(multilabel_world[key]) as a, open(again[key]) as b:
      assert a.read() == b.read(), key
  video = open(multilabel_world['val_list']).readline().split(' ')[0]
  np.testing.assert_array_equal(_decode(os.path.join(again['root'], video)),
                                _decode(os.path.join(multilabel_world['root'], video)))


def test_multilabel_world_needs_two_objects(tmp_path):
  with pytest.raises(ValueError, match='Two objects a video need at least two objects with seen classes'):
    synthetic.make_multilabel_world(str(tmp_path / 'w'), objects=OBJECTS[:1])
  with pytest.raises(ValueError, match='size must be at least 62'):
    synthetic.make_multilabel_world(str(tmp_path / 'w'), size=32)
  with pytest.raises(SystemExit):
    synthetic.main(['--out', str(tmp_path / 'w'), '--charades'])  # --charades lists the multi-label world only


def test_multilabel_world_written_smaller_is_the_block_average(tmp_path):
  full = synthetic.make_multilabel_world(str(tmp_path / 'full'), train_videos=1, val_videos=1, heldout_videos=1)
  half = synthetic.make_multilabel_world(str(tmp_path / 'half'), train_videos=1, val_videos=1, heldout_videos=1,
                                         video_size=32)
  assert open(full['train_list']).read() == open(half['train_list']).read()  # the same videos, labels and lengths
  big, small = (video_decode.decode_frames(os.path.join(w['root'], 'videos', 'train_00000.mp4'),
                                           lambda n: np.array([0, 5])) for w in (full, half))
  assert small.shape[1:3] == (32, 32) and big.shape[1:3] == (64, 64)
  averaged = big.astype(np.float32).reshape(2, 32, 2, 32, 2, 3).mean(axis=(2, 4))
  # Both went through MPEG-4 at a high bit rate: a few levels of coding error on the mean, far below a moved object.
  assert np.abs(small.astype(np.float32) - averaged).mean() < 4
  with pytest.raises(ValueError, match='must divide size=64'):
    synthetic.make_multilabel_world(str(tmp_path / 'bad'), train_videos=1, video_size=24)
