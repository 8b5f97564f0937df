"""A tiny ActionCLIP's visual prompt learns a task that only motion tells apart; meanP cannot.

Two classes of videos whose only difference is the direction a square moves (`make_dataset` with one colour for
all classes): left and right have the same single-frame distribution, so an order-blind model (meanP) is at chance
and every point above 50% is frame order. Trained end to end from scratch, ActionCLIP collapses on such classes
(issue 9): the text tower maps both names to almost the same vector, the `Transf` prompt starts as a mean over
frames, and the KL loss falls fastest by making every embedding alike, a point where its gradient is zero.

Here the clips come through the real input pipeline (decoder, segment sampler with random shifts, the training
augmentation without flips), the per-frame and text towers are a frozen random tiny CLIP (a random ViT's frame
features move with a large square on a plain background), and what learns, with ActionCLIP's KL loss and AdamW, is
the visual prompt and the two class-text embeddings (initialized from the text tower). The frame features are
computed once, so the test takes seconds: it fails if frame order is lost between the decoder and the prompt, if
the pipeline reverses motion, or if the prompt starts order-blind and stays there (the official N(0, 0.02) init at
width 32, `heads.HEAD_INITS`).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from actionclip_jax.model import clip, heads, losses, prompts
from actionclip_jax.runs import inputs
from configs import k400
from data_pipelines import augment, synthetic

# make_dataset moves class k of K at angle 2 pi k / K: class 0 rightwards, class 1 leftwards.
CLASSES = ('moving right', 'moving left')
FRAMES = 8
STEPS = 200
LR = 5e-3


def test_transf_starts_order_sensitive():
  """Reversing the frames moves the pooled feature by a visible share of its spread over videos at init with the
  'scaled' init (8e-2); the official init at width 32 leaves Transf nearly a mean (1e-3). 1e-2 separates the two."""
  d = 32
  frames = jax.random.normal(jax.random.PRNGKey(0), (64, FRAMES, d))

  def order_share(init):
    head = heads.make_visual_prompt('Transf', num_frames=FRAMES, text_heads=1, init=init)
    variables = head.init(jax.random.PRNGKey(1), frames)
    pooled = np.asarray(head.apply(variables, frames)[0])
    reversed_pooled = np.asarray(head.apply(variables, frames[:, ::-1])[0])
    spread = np.linalg.norm(pooled - pooled.mean(0), axis=-1).mean()
    return np.linalg.norm(pooled - reversed_pooled, axis=-1).mean() / spread

  assert order_share('scaled') > 1e-2 > order_share('official')


@functools.cache
def _features(root):
  """(train features [N, T, D], train labels, val features, val labels, class-text embeddings [2, D]) of the world
  in `root`, from a frozen random tiny CLIP: 4 passes over the training videos (each its own random shifts)."""
  data = synthetic.make_dataset(root, CLASSES, train_per_class=24, val_per_class=24, width=32, height=32,
                                colour_per_class=False)
  config = k400.get_config('runlocal')
  config.data.update(root=data['root'], train_list=data['train_list'], val_list=data['val_list'],
                     label_list=data['label_list'], batch_size=16, num_segments=FRAMES, short_side=32, flip=False)
  config.data.randaug.N = 0
  config.eval.update(batch_size=16, max_videos=0)
  clip_config = clip.get_preset('tiny', image_resolution=32, num_frames=FRAMES)
  module = clip.CLIP(clip_config)
  params = clip.init_params(clip_config, jax.random.PRNGKey(0))
  encode = jax.jit(lambda frames: module.apply({'params': params}, augment.normalize(frames),
                                               method=clip.CLIP.encode_video))
  names = inputs.label_names(config.data)
  assert names == list(CLASSES)

  def features(batches, count):
    xs, ys = [], []
    for batch in batches:
      xs.append(np.asarray(encode(batch['frames'])))
      ys.append(np.asarray(batch['label']))
      if sum(len(y) for y in ys) >= count:
        break
    return np.concatenate(xs)[:count], np.concatenate(ys)[:count]

  train_x, train_y = features(iter(inputs.train_dataset(config, root + '/run', names)[1]), 4 * 48)
  val_batches = inputs.eval_dataset(config, root + '/run', data['val_list'], names)[1]
  val_x, val_y = features(({'frames': b['frames'][:, 0], 'label': b['label']} for b in val_batches), 48)
  ids = prompts.class_token_ids(names, ('{}',), clip_config.context_length)[0]
  text = np.asarray(jax.jit(lambda t: module.apply({'params': params}, t, method=clip.CLIP.encode_text))(ids))
  logit_scale = float(params['logit_scale'])
  return train_x, train_y, val_x, val_y, text, logit_scale


def _train_and_evaluate(sim_header, init, feats):
  """Val top-1 (%) after STEPS AdamW steps of the KL loss on batches of 32 precomputed clips."""
  train_x, train_y, val_x, val_y, text, logit_scale = feats
  head = heads.make_visual_prompt(sim_header, num_frames=FRAMES, text_heads=1, init=init)
  params = {'head': head.init(jax.random.PRNGKey(2), jnp.asarray(train_x[:1]))['params'] if sim_header != 'meanP'
            else {}, 'text': jnp.asarray(text)}
  tx = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, LR, STEPS // 10, STEPS), weight_decay=0.05)

  def pooled(p, x):
    return head.apply({'params': p['head']} if p['head'] else {}, x)[0]

  @jax.jit
  def step(p, opt, x, y):
    def loss(p):
      return losses.actionclip_loss(pooled(p, x), p['text'][y], y, logit_scale)
    grads = jax.grad(loss)(p)
    updates, opt = tx.update(grads, opt, p)
    return optax.apply_updates(p, updates), opt

  opt = tx.init(params)
  rng = np.random.default_rng(0)
  for _ in range(STEPS):
    batch = rng.choice(len(train_x), 32, replace=False)
    params, opt = step(params, opt, jnp.asarray(train_x[batch]), jnp.asarray(train_y[batch]))
  scores = jax.jit(lambda p, x: clip.logits(pooled(p, x), p['text'], logit_scale))(params, jnp.asarray(val_x))
  return 100 * float(np.mean(np.asarray(scores).argmax(1) == val_y))


@pytest.fixture(scope='module')
def features(tmp_path_factory):
  return _features(str(tmp_path_factory.mktemp('motion')))


def test_transf_learns_direction_of_motion_and_meanp_cannot(features):
  # 48 validation videos: at chance (50%) top-1 reaches 75% with probability 0.03% (binomial), and meanP's order-
  # blind mean cannot pass 65% but by a 2% fluke.
  transf = _train_and_evaluate('Transf', 'scaled', features)
  meanp = _train_and_evaluate('meanP', 'scaled', features)
  assert transf >= 75.0, (transf, meanp)
  assert meanp <= 65.0, (transf, meanp)
