"""The config's data section reaches the pipeline: the training transform's crop scales, colour jitter and grayscale."""
import numpy as np

from actionclip_jax.runs import inputs
from configs import k400
from data_pipelines import synthetic


def _frames_of_videos(config, names):
  """{video_id: its decoded frames [N, H, W, 3]} at the pipeline's decode size."""
  source = inputs.source(config.data, config.data.train_list, names)
  return {source[i].video_id: source.read(i, lambda n: np.arange(n)) for i in range(len(source))}


def _training_frames(config, names, batches=3):
  iterator = iter(inputs.train_dataset(config, '', names)[1])
  try:
    return [next(iterator) for _ in range(batches)]
  finally:
    iterator.close()


def test_untouched_frames_without_crop_scales_jitter_or_grayscale(tmp_path):
  """crop_scales=(1,), color_jitter=0, grayscale=0 and no flips: every training frame is a decoded frame, pixel for
  pixel (the video is the input size); the defaults change them."""
  data = synthetic.make_dataset(str(tmp_path), train_per_class=2, num_frames=12, width=32, height=32)
  config = k400.get_config('runlocal')
  config.data.update(root=data['root'], train_list=data['train_list'], label_list=data['label_list'], batch_size=3,
                     num_segments=4, input_size=32, short_side=32, flip=False, workers=0)
  config.data.randaug.N = 0
  names = inputs.label_names(config.data)
  videos = _frames_of_videos(config, names)

  def decoded(batches):
    return [any(np.array_equal(frame, f) for f in videos[int(video)])
            for batch in batches for clip, video in zip(batch['frames'], batch['video_id']) for frame in clip]

  assert not all(decoded(_training_frames(config, names)))  # crops, jitter and grayscale by default
  config.data.update(crop_scales=(1.0,), color_jitter=0.0, grayscale=0.0)
  assert all(decoded(_training_frames(config, names)))
