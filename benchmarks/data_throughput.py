"""Training clips per second per CPU core from each source, beside two references.

    python benchmarks/data_throughput.py [--videos 6] [--seconds 10] [--clips 60]

Writes synthetic 340x256, 30 fps h264 clips (30-frame GOP) into a temp dir, extracts them as frame
folders (`img_{:05d}.jpg`) and packs them, then times, in this one process (one core, no workers):

- decode ceiling: PyAV seeking to the keyframe before each wanted frame and decoding forward to it,
  RGB conversion included, nothing else;
- raw video / frame folders / packed shards: the grain training pipeline (8-frame TSN clips, 224²,
  multi-scale crop, flip, colour jitter, grayscale, CLIP normalization);
- official-style: PIL opening each frame file of a frame folder and applying the same transforms
  frame by frame, as ActionCLIP's `Action_DATASETS` with `get_augmentation` does.

Rates are clips per CPU-second of this process (`time.process_time`), so other load on the machine
does not count; wall-clock rates are printed beside them.
"""
import argparse
import os
import tempfile
import time

from absl import flags
import av
import numpy as np
from PIL import Image, ImageEnhance

from data_pipelines import pipeline
from data_pipelines.annotations import VideoRecord
from data_pipelines.augment import TrainAugment, multi_scale_crop_box, normalize
from data_pipelines.pack import pack
from data_pipelines.sampling import SegmentSampler
from data_pipelines.sources import FrameFolderSource, PackedSource, VideoFileSource

WIDTH, HEIGHT, FPS, GOP = 340, 256, 30, 30
SAMPLER = SegmentSampler(num_segments=8)
AUGMENT = TrainAugment(input_size=224)


def write_clip(path: str, seconds: int, seed: int) -> int:
  """Moving gradients with mild texture: roughly the bitrate of a 340x256 Kinetics clip."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
  texture = rng.integers(0, 24, (HEIGHT, WIDTH, 3), dtype=np.uint8)
  dx, dy = rng.integers(1, 5, 2)
  with av.open(path, 'w') as container:
    stream = container.add_stream('libx264', rate=FPS, options={'g': str(GOP), 'crf': '23'})
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, 'yuv420p'
    for i in range(seconds * FPS):
      image = np.stack([(xx + dx * i) % 256, (yy + dy * i) % 256, (xx + yy) % 256], -1).astype(np.uint8)
      image = image // 2 + texture
      container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format='rgb24')))
    container.mux(stream.encode())
  return seconds * FPS


def extract_frames(record: VideoRecord, folder: str) -> VideoRecord:
  os.makedirs(folder)
  with av.open(record.path) as container:
    for i, frame in enumerate(container.decode(video=0)):
      frame.to_image().save(os.path.join(folder, f'img_{i + 1:05d}.jpg'), quality=90)
  return VideoRecord(folder, record.num_frames, record.label, record.video_id)


def decode_ceiling(records, clips: int):
  """PyAV only: per wanted frame, seek to the keyframe before it and decode forward to it."""
  rng = np.random.default_rng(0)
  for k in range(clips):
    record = records[k % len(records)]
    with av.open(record.path) as container:
      stream = container.streams.video[0]
      ticks_per_frame = 1 / float(stream.time_base * stream.average_rate)
      for index in SAMPLER.train(record.num_frames, rng):
        container.seek(int(index * ticks_per_frame), stream=stream, backward=True)
        for frame in container.decode(stream):
          if frame.pts >= int(index * ticks_per_frame):
            frame.to_ndarray(format='rgb24')
            break


def official_style(records, clips: int):
  """ActionCLIP's loader: open every frame file, then per-frame PIL transforms, then normalize."""
  rng = np.random.default_rng(0)
  for k in range(clips):
    record = records[k % len(records)]
    images = [Image.open(os.path.join(record.path, f'img_{i + 1:05d}.jpg')).convert('RGB')
              for i in SAMPLER.train(record.num_frames, rng)]
    box = multi_scale_crop_box(*images[0].size, 224, AUGMENT.scales, AUGMENT.max_distort, rng)
    images = [image.crop(box).resize((224, 224), Image.BILINEAR) for image in images]
    if rng.random() < 0.5:
      images = [image.transpose(Image.FLIP_LEFT_RIGHT) for image in images]
    if rng.random() < 0.8:  # torchvision's ColorJitter draws new factors for every frame
      jittered = []
      for image in images:
        for kind in (ImageEnhance.Brightness, ImageEnhance.Contrast):
          image = kind(image).enhance(rng.uniform(0.6, 1.4))
        image = ImageEnhance.Color(image).enhance(rng.uniform(0.8, 1.2))
        h, s, v = image.convert('HSV').split()
        h = Image.fromarray(np.asarray(h) + np.uint8(int(rng.uniform(-.1, .1) * 255) % 256), 'L')
        jittered.append(Image.merge('HSV', (h, s, v)).convert('RGB'))
      images = jittered
    if rng.random() < 0.2:
      images = [image.convert('L').convert('RGB') for image in images]
    normalize(np.stack([np.asarray(image) for image in images]))


def pipeline_clips(source, clips: int):
  batches = pipeline.train_dataset(source, SAMPLER, AUGMENT, batch_size=4, seed=0,
                                   process_index=0, process_count=1)
  iterator = iter(batches)
  for _ in range(clips // 4):
    next(iterator)


def timed(name, run, clips):
  wall, cpu = time.perf_counter(), time.process_time()
  run(clips)
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  print(f'{name:<28} {clips / cpu:8.1f} clips/s per core   ({clips / wall:6.1f} wall)', flush=True)
  return clips / cpu


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--videos', type=int, default=6)
  parser.add_argument('--seconds', type=int, default=10)
  parser.add_argument('--clips', type=int, default=60, help='clips timed per row')
  args = parser.parse_args()
  flags.FLAGS.mark_as_parsed()  # grain reads absl flags
  with tempfile.TemporaryDirectory() as tmp:
    videos = [VideoRecord(os.path.join(tmp, f'v{i}.mp4'), 0, 0, i) for i in range(args.videos)]
    videos = [VideoRecord(r.path, write_clip(r.path, args.seconds, i), 0, i) for i, r in enumerate(videos)]
    folders = [extract_frames(r, os.path.join(tmp, f'frames{r.video_id}')) for r in videos]
    pack(videos, os.path.join(tmp, 'packed'), short_side=HEIGHT, quality=90, workers=1)
    print(f'{args.videos} clips of {WIDTH}x{HEIGHT}, {args.seconds} s, {FPS} fps, GOP {GOP}; '
          f'8 frames, 224², {args.clips} clips a row')
    rates = {
        'ceiling': timed('decode ceiling (PyAV)', lambda n: decode_ceiling(videos, n), args.clips),
        'raw': timed('raw video', lambda n: pipeline_clips(VideoFileSource(videos), n), args.clips),
        'folders': timed('frame folders', lambda n: pipeline_clips(FrameFolderSource(folders), n),
                         args.clips),
        'packed': timed('packed shards', lambda n: pipeline_clips(
            PackedSource(os.path.join(tmp, 'packed')), n), args.clips),
        'official': timed('official-style (PIL)', lambda n: official_style(folders, n), args.clips),
    }
  print(f"raw video / decode ceiling      {rates['raw'] / rates['ceiling']:.2f}   (target >= 0.70)")
  print(f"packed / official-style         {rates['packed'] / rates['official']:.2f}   (target >= 1)")
  print(f"packed / raw video              {rates['packed'] / rates['raw']:.2f}   (target >= 5)")


if __name__ == '__main__':
  main()
