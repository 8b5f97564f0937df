"""Few-shot cross-modal adaptation (Lin et al. 2023) on synthetic features; K-shot lists."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from actionclip_jax.runs import fewshot
from tolerance import rounding

C, K, SHOTS, D = 20, 16, 8, 64
STEPS = 400  # Lin et al. run 12,800; the synthetic task needs far fewer


def _task(seed=0):
  """Text embeddings sit on class anchors; videos mix the anchor with a class direction the text does not know.

  So zero-shot (the text classifier) is weak and a few labelled videos should fix it.
  """
  ka, kb, kt, kv, kq = jax.random.split(jax.random.PRNGKey(seed), 5)
  anchors = jax.random.normal(ka, (C, D))
  visual = jax.random.normal(kb, (C, D))
  text = anchors + 0.5 * jax.random.normal(kt, (K, C, D))

  def videos(key, per_class):
    labels = jnp.repeat(jnp.arange(C), per_class)
    noise = jax.random.normal(key, (C * per_class, D))
    return 0.3 * anchors[labels] + visual[labels] + 1.5 * noise, labels

  train, train_labels = videos(kv, SHOTS)
  test, test_labels = videos(kq, 50)
  return text, train, train_labels, test, test_labels


def _accuracy(classifier, x, y):
  return float(jnp.mean(jnp.argmax(fewshot.predict(classifier, x), -1) == y))


def test_beats_zero_shot_where_text_alone_is_weak():
  text, train, train_labels, test, test_labels = _task()
  zero_shot = _accuracy(fewshot.zero_shot_classifier(text), test, test_labels)
  adapted = _accuracy(fewshot.fit(train, train_labels, text, steps=STEPS), test, test_labels)
  assert zero_shot < 0.5 < adapted
  assert adapted > zero_shot + 0.3


def test_zero_shot_classifier_is_the_normalized_mean_of_normalized_text():
  text = jax.random.normal(jax.random.PRNGKey(0), (K, C, D))
  weights = fewshot.zero_shot_classifier(text).weights
  unit = text / jnp.linalg.norm(text, axis=-1, keepdims=True)
  mean = unit.mean(0)
  # Unit vectors: two D-term norms and a K-term mean apart.
  np.testing.assert_allclose(weights, mean / jnp.linalg.norm(mean, axis=-1, keepdims=True), atol=rounding(2 * D + K))


def test_deterministic_given_the_seed():
  text, train, train_labels, _, _ = _task()
  first = fewshot.fit(train, train_labels, text, seed=3, steps=STEPS).weights
  np.testing.assert_array_equal(first, fewshot.fit(train, train_labels, text, seed=3, steps=STEPS).weights)
  assert np.abs(first - fewshot.fit(train, train_labels, text, seed=4, steps=STEPS).weights).max() > 1e-4


def test_logit_scale_is_100():
  text, train, _, _, _ = _task()
  classifier = fewshot.zero_shot_classifier(text)
  unit = train / jnp.linalg.norm(train, axis=-1, keepdims=True)
  np.testing.assert_allclose(fewshot.predict(classifier, train), 100.0 * unit @ classifier.weights.T,
                             atol=100.0 * rounding(2 * D))


def test_zero_steps_of_warm_up_are_the_zero_shot_classifier_and_the_schedule_ends_at_zero():
  """Linear warm-up from lr 0: the first step moves nothing; the cosine reaches 0 at `steps`: a step past it neither."""
  text, train, train_labels, _, _ = _task()
  recipe = fewshot.Recipe(steps=8, warmup=4, batch_size=8)
  first, _, _ = fewshot.train(train, train_labels, text, learning_rate=1e-2, weight_decay=0.0, seed=0,
                              recipe=recipe, run_steps=1)
  np.testing.assert_array_equal(first.weights, fewshot.zero_shot_classifier(text).weights)
  last, _, _ = fewshot.train(train, train_labels, text, learning_rate=1e-2, weight_decay=0.0, seed=0,
                             recipe=recipe, run_steps=8)
  past, _, _ = fewshot.train(train, train_labels, text, learning_rate=1e-2, weight_decay=0.0, seed=0,
                             recipe=recipe, run_steps=9)
  np.testing.assert_array_equal(last.weights, past.weights)
  assert np.abs(last.weights - first.weights).max() > 1e-4


def test_adapt_searches_the_grid_on_a_carved_validation_split_and_refits():
  text, train, train_labels, test, test_labels = _task()
  recipe = fewshot.Recipe(steps=STEPS, warmup=20, learning_rates=(1e-3, 1e-6), weight_decays=(1e-4,),
                          eval_every=50)
  classifier, chosen = fewshot.adapt(train, train_labels, text, seed=1, recipe=recipe)
  assert [(r['lr'], r['weight_decay']) for r in chosen['grid']] == [(1e-3, 1e-4), (1e-6, 1e-4)]
  assert chosen['lr'] == 1e-3  # lr 1e-6 barely moves off the weak zero-shot classifier
  assert chosen['val_videos'] == C * (SHOTS // 4) and chosen['steps'] % 50 == 0 and 0 < chosen['steps'] <= STEPS
  assert chosen['val_top1'] == max(r['val_top1'] for r in chosen['grid'])
  assert _accuracy(classifier, test, test_labels) > _accuracy(fewshot.zero_shot_classifier(text), test, test_labels)


def test_validation_split_and_k_shot_draws():
  labels = np.repeat(np.arange(3), [16, 2, 1])
  train_idx, val_idx = fewshot.validation_split(labels, seed=0)
  assert np.bincount(labels[val_idx], minlength=3).tolist() == [4, 1, 0]
  assert sorted(np.concatenate([train_idx, val_idx]).tolist()) == list(range(len(labels)))
  chosen = fewshot.k_shot_indices(labels, 2, seed=5)
  assert np.bincount(labels[chosen]).tolist() == [2, 2, 1]
  np.testing.assert_array_equal(chosen, fewshot.k_shot_indices(labels, 2, seed=5))


def test_k_shot_list_keeps_the_list_format(tmp_path):
  from data_pipelines import annotations
  names = ['a, with comma', 'b']
  (tmp_path / 'labels.csv').write_text('id,name\n0,"a, with comma"\n1,b\n')
  (tmp_path / 'train.csv').write_text(''.join(f'v{i}.mp4,{"b" if i % 2 else "a, with comma"}\n'.replace(
      'a, with comma', '"a, with comma"') for i in range(8)))
  out = tmp_path / 'k2.csv'
  fewshot.main(['--list', str(tmp_path / 'train.csv'), '--labels', str(tmp_path / 'labels.csv'), '--shots', '2',
                '--root', str(tmp_path), '--out', str(out)])
  records = annotations.read_video_list(str(out), names, root=str(tmp_path))
  assert sorted(r.label for r in records) == [0, 0, 1, 1] and all(r.num_frames is None for r in records)
  with pytest.raises(ValueError, match='only be written as a CSV list'):
    fewshot.write_list(records, names, str(tmp_path / 'k2.txt'))
  tsn = [annotations.VideoRecord(str(tmp_path / 'x.mp4'), 30, 1, 0)]
  fewshot.write_list(tsn, names, str(tmp_path / 'k.txt'), str(tmp_path))
  assert (tmp_path / 'k.txt').read_text() == 'x.mp4 30 1\n'


def test_finetune_variant_is_the_trainer_with_the_k400_optimizer():
  from configs import few_shot, k400
  c, recipe = few_shot.get_config('finetune,shots=4,dataset=ucf101'), k400.get_config()
  for field in ('lr', 'weight_decay', 'betas', 'eps', 'ratio', 'f_ratio', 'type'):
    assert c.solver[field] == recipe.solver[field], field
  assert c.data.randaug == recipe.data.randaug and c.data.num_classes == 101 and c.eval.shots == 4
  assert few_shot.get_config('finetune,runlocal').network.arch == 'tiny'
