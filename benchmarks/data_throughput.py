"""Training clips per second per CPU core from each source, beside two references.

    python benchmarks/data_throughput.py [--videos 6] [--seconds 10] [--clips 80] [--repeats 3]

Writes synthetic 340x256, 30 fps h264 clips (30-frame GOP) into a temp dir, extracts them as frame
folders (`img_{:05d}.jpg`) and packs them at short side 256, then times, in this one process (one core,
no workers):

- naive PyAV seeking, for reference: for each wanted frame, seek to the keyframe before it and decode
  every frame up to it, RGB conversion included, nothing else;
- decode ceiling: `video_decode.decode_frames` alone, the raw-video source's decoding (seeks only where
  a keyframe can lie between wanted frames, skips non-reference frames on the way), nothing else;
- raw video / frame folders / packed shards: the grain training pipeline (8-frame TSN clips, 224²,
  multi-scale crop, flip, colour jitter, grayscale), batches of uint8 frames (normalization is the
  model step's, on the accelerator);
- official-style: PIL opening each frame file of a frame folder and applying the transforms frame by
  frame, then stacking and normalizing to float32 on the host, as ActionCLIP's `Action_DATASETS` with
  `get_augmentation` does (`GroupMultiScaleCrop`, `GroupRandomHorizontalFlip`, `GroupRandomColorJitter`
  with new factors per frame, `GroupRandomGrayscale`, `Stack`, `ToTorchFormatTensor`, `GroupNormalize`).

Rates are clips per CPU-second of this process (`time.process_time`), so other load on the machine
counts less; wall-clock rates are printed beside them. Each repeat times every row once, rows
interleaved, so load that comes and goes spreads over all of them; the summary gives min / median / max
per row and the ratios of the medians (and of the per-repeat ratios' range).
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
from data_pipelines.augment import CLIP_MEAN, CLIP_STD, TrainAugment, multi_scale_crop_box
from data_pipelines.pack import pack
from data_pipelines.sampling import SegmentSampler
from data_pipelines.sources import FrameFolderSource, PackedSource, VideoFileSource
from data_pipelines.video_decode import decode_frames

WIDTH, HEIGHT, FPS, GOP = 340, 256, 30, 30
SAMPLER = SegmentSampler(num_segments=8)
_SCALE = np.float32(1 / 255) / np.asarray(CLIP_STD, np.float32)
_SHIFT = np.asarray(CLIP_MEAN, np.float32) / np.asarray(CLIP_STD, np.float32)
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


def naive_seeking(records, clips: int):
  """PyAV only: per wanted frame, seek to the keyframe before it and decode every frame up to it."""
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


def decode_ceiling(records, clips: int):
  """`video_decode.decode_frames` alone: the raw-video source's decoding, without the pipeline."""
  rng = np.random.default_rng(0)
  for k in range(clips):
    record = records[k % len(records)]
    decode_frames(record.path, lambda n: SAMPLER.train(n, rng), num_frames=record.num_frames)


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
    # Stack + ToTorchFormatTensor(div=True) + GroupNormalize, as one cast and an in-place multiply-add.
    frames = np.stack([np.asarray(image) for image in images]).astype(np.float32)
    frames *= _SCALE
    frames -= _SHIFT


class Listed:
  """`source`'s videos listed `times` times over, as a source of realistic length.

  grain's index shuffle costs about 2 ms an element over six elements and 2 µs over tens of thousands
  (Kinetics-400 has 240k videos); a six-video list would charge the pipeline rows for the former.
  """

  def __init__(self, source, times: int = 10_000):
    self.source, self.times = source, times

  def __len__(self):
    return len(self.source) * self.times

  def __getitem__(self, index):
    return self.source[index % len(self.source)]

  def read(self, index, pick):
    return self.source.read(index % len(self.source), pick)

  def __getattr__(self, name):  # `read_images`, where the source has it
    method = getattr(self.source, name)
    return lambda index, pick: method(index % len(self.source), pick)


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
  print(f'  {name:<26} {clips / cpu:8.1f} clips/s per core   ({clips / wall:6.1f} wall)', flush=True)
  return clips / cpu


ROWS = {'naive': 'naive PyAV seeking', 'ceiling': 'decode ceiling', 'raw': 'raw video', 'folders': 'frame folders',
        'packed': 'packed shards', 'official': 'official-style (PIL)'}
RATIOS = (('raw', 'ceiling', 0.7), ('packed', 'official', 1), ('packed', 'raw', 5))


def make_data(root: str, num_videos: int, seconds: int):
  videos = [VideoRecord(os.path.join(root, f'v{i}.mp4'), 0, 0, i) for i in range(num_videos)]
  videos = [VideoRecord(r.path, write_clip(r.path, seconds, i), 0, i) for i, r in enumerate(videos)]
  folders = [extract_frames(r, os.path.join(root, f'frames{r.video_id}')) for r in videos]
  pack(videos, os.path.join(root, 'packed'), short_side=HEIGHT, quality=90, workers=1)
  return videos, folders


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--videos', type=int, default=6)
  parser.add_argument('--seconds', type=int, default=10)
  parser.add_argument('--clips', type=int, default=80, help='clips timed per row')
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()
  flags.FLAGS.mark_as_parsed()  # grain reads absl flags
  rates = {key: [] for key in ROWS}
  with tempfile.TemporaryDirectory() as tmp:
    videos, folders = make_data(tmp, args.videos, args.seconds)
    # Sources are built once, outside the timing: opening them is a per-run, not a per-clip, cost.
    raw, frame_folders = Listed(VideoFileSource(videos)), Listed(FrameFolderSource(folders))
    packed = Listed(PackedSource(os.path.join(tmp, 'packed')))
    runs = {
        'naive': lambda n: naive_seeking(videos, n),
        'ceiling': lambda n: decode_ceiling(videos, n),
        'raw': lambda n: pipeline_clips(raw, n),
        'folders': lambda n: pipeline_clips(frame_folders, n),
        'packed': lambda n: pipeline_clips(packed, n),
        'official': lambda n: official_style(folders, n),
    }
    print(f'{args.videos} clips of {WIDTH}x{HEIGHT}, {args.seconds} s, {FPS} fps, GOP {GOP}; '
          f'8 frames, 224², {args.clips} clips a row')
    for repeat in range(args.repeats):
      print(f'repeat {repeat + 1} of {args.repeats}')
      for key, name in ROWS.items():
        rates[key].append(timed(name, runs[key], args.clips))
  print('\n| clips/s per core | min | median | max |\n| --- | ---: | ---: | ---: |')
  for key, name in ROWS.items():
    low, mid, high = np.percentile(rates[key], [0, 50, 100])
    print(f'| {name} | {low:.1f} | {mid:.1f} | {high:.1f} |')
  print('\n| ratio | of medians | range over repeats | target |\n| --- | ---: | ---: | --- |')
  for num, den, target in RATIOS:
    ratio = np.median(rates[num]) / np.median(rates[den])
    each = np.asarray(rates[num]) / np.asarray(rates[den])
    verdict = 'met' if ratio >= target else 'missed'
    print(f'| {num} / {den} | {ratio:.2f} | {each.min():.2f}–{each.max():.2f} | ≥ {target}: {verdict} |')


if __name__ == '__main__':
  main()
