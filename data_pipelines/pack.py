"""Packs a video list into array_record shards of JPEG frames, read back by `sources.PackedSource`.

    python -m data_pipelines.pack --list train.txt --labels labels.csv --out /data/k400_train \
        [--root /data/videos] [--short_side 256] [--quality 90] [--workers 8]

`--list` is an ActionCLIP/TSN list file, or a plain `path,label_name` CSV when it ends in `.csv`. Each
video is decoded once, every frame scaled to `--short_side` and stored as a JPEG (`tfds`
`GeneratorBasedBuilder`, array_record format, no TensorFlow). One example is one frame, so a clip reads
its 8 frames, not the whole video: reading a clip costs a few random reads and small JPEG decodes instead
of a video decode, with none of the millions of small files that frame folders need. Examples keep the
list's order, frames of a video consecutive; `records.jsonl` beside the shards lists the videos, so a
reader knows every video's label, frame count and first example without opening the shards. Videos that
cannot be decoded are left out and listed in `bad_videos.jsonl` in the same folder.

With `--multilabel`, `--list` is a multi-label set (a Charades CSV with `--labels Charades_v1_classes.txt`, or a
generic multi-label list, see `annotations`); its records keep their labels and intervals in `records.jsonl`, so
`PackedSource` serves multi-label sets too. Its bad rows are printed and skipped.
"""
import argparse
import dataclasses
import io
import json
import multiprocessing
import os

import numpy as np
import tensorflow_datasets as tfds
import tqdm
from PIL import Image

from data_pipelines.annotations import AnnotationError, VideoRecord, read_label_csv, read_video_list
from data_pipelines.bad_videos import BadVideoError, BadVideoLog
from data_pipelines.sources import PACKED_RECORDS, PACKED_SPLIT
from data_pipelines.video_decode import decode_frames

# Frames decoded per call: bounds memory for long videos (128 frames at 256p is about 30 MB).
_CHUNK = 128


@dataclasses.dataclass(frozen=True)
class _Encoder:
  """Decodes one video and encodes its frames; runs in the pool's worker processes."""
  short_side: int
  quality: int

  def __call__(self, record: VideoRecord) -> list[bytes] | BadVideoError:
    jpegs, total = [], record.num_frames  # an unlisted count is known after the first read

    def next_chunk(count):
      nonlocal total
      total = count
      return np.arange(len(jpegs), min(len(jpegs) + _CHUNK, count))

    try:
      while total is None or len(jpegs) < total:
        for frame in decode_frames(record.path, next_chunk, num_frames=record.num_frames,
                                   short_side=self.short_side):
          buffer = io.BytesIO()
          Image.fromarray(frame).save(buffer, 'JPEG', quality=self.quality)
          jpegs.append(buffer.getvalue())
    except BadVideoError as e:
      return e  # returned, not raised, so the parent reports it and moves on to the next video
    return jpegs


class PackedVideos(tfds.core.GeneratorBasedBuilder):
  """One example per frame: the JPEG, its video's id and its index in the video."""
  VERSION = tfds.core.Version('1.0.0')
  # tfds looks for download checksums beside a builder's code, and on Python >= 3.9 that lookup needs
  # `importlib_resources`, which nothing installs. This builder downloads nothing.
  code_path = None

  def __init__(self, *, records: list[VideoRecord], encoder: _Encoder, workers: int,
               bad_videos: BadVideoLog, **kwargs):
    self._records = records
    self._encoder = encoder
    self._workers = workers
    self._bad_videos = bad_videos
    self.packed: list[VideoRecord] = []
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            'jpeg': tfds.features.Tensor(shape=(), dtype=np.object_),
            'video_id': tfds.features.Scalar(dtype=np.int64),
            'frame': tfds.features.Scalar(dtype=np.int64),
        }),
        disable_shuffling=True,  # keeps list order, which `records.jsonl` relies on
    )

  def _split_generators(self, dl_manager):
    return {PACKED_SPLIT: self._generate_examples()}

  def _generate_examples(self):
    with multiprocessing.get_context('spawn').Pool(self._workers) as pool:
      results = pool.imap(self._encoder, self._records)
      for record, jpegs in tqdm.tqdm(zip(self._records, results), total=len(self._records),
                                     desc='packing', unit='video'):
        if isinstance(jpegs, BadVideoError):
          self._bad_videos.report(jpegs)
          continue
        self.packed.append(dataclasses.replace(record, num_frames=len(jpegs)))
        for frame, jpeg in enumerate(jpegs):
          yield f'{record.video_id}/{frame}', {'jpeg': jpeg, 'video_id': record.video_id, 'frame': frame}


def pack(records: list[VideoRecord], out_dir: str, *, short_side: int = 256, quality: int = 90,
         workers: int = 1) -> list[VideoRecord]:
  """Writes the packed dataset and `records.jsonl` to `out_dir`; returns the records packed."""
  if os.path.exists(os.path.join(out_dir, PACKED_RECORDS)):
    raise FileExistsError(f'{out_dir} already holds a packed dataset; pack into a new folder')
  tfds.disable_progress_bar()  # ours counts videos; tfds' would count examples again
  builder = PackedVideos(records=records, encoder=_Encoder(short_side, quality), workers=workers,
                         bad_videos=BadVideoLog(out_dir), data_dir=out_dir, file_format='array_record')
  builder.download_and_prepare()
  with open(os.path.join(out_dir, PACKED_RECORDS), 'w') as f:
    for record in builder.packed:
      f.write(json.dumps(dataclasses.asdict(record)) + '\n')
  return builder.packed


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--list', required=True, help='TSN list file, or a path,label_name .csv')
  parser.add_argument('--labels', required=True, help='label CSV with an id,name header, or Charades_v1_classes.txt')
  parser.add_argument('--out', required=True, help='new folder for the packed dataset')
  parser.add_argument('--root', help='folder the list paths are relative to')
  parser.add_argument('--short_side', type=int, default=256,
                      help='frame short side; 256 suits 224 input (input * 256 / 224): the crop takes up '
                           'to the whole short side, and larger frames only cost decode time')
  parser.add_argument('--quality', type=int, default=90, help='JPEG quality')
  parser.add_argument('--workers', type=int, default=os.cpu_count())
  parser.add_argument('--multilabel', action='store_true',
                      help='--list is a multi-label set: a Charades CSV, a path,labels CSV or "path num_frames '
                           'l1,l2,..." lines')
  args = parser.parse_args(argv)
  try:
    records = read_video_list(args.list, read_label_csv(args.labels), args.root, multilabel=args.multilabel)
  except AnnotationError as e:
    raise SystemExit(str(e)) from None  # one line with file:line; nothing has been written
  if args.multilabel:
    records, problems = records
    print(''.join(f'skipped: {problem}\n' for problem in problems), end='')
  packed = pack(records, args.out, short_side=args.short_side, quality=args.quality,
                workers=args.workers)
  print(f'packed {len(packed)} of {len(records)} videos into {args.out}; '
        f'{len(records) - len(packed)} bad, listed in {os.path.join(args.out, "bad_videos.jsonl")}')


if __name__ == '__main__':
  main()
