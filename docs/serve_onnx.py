"""Classify a folder of videos with an exported model and onnxruntime alone: no JAX, no actionclip_jax.

    python -m actionclip_jax.export --model workdirs/demo/transf --out served
    python docs/serve_onnx.py served videos/ --top_k 3

SERVED is what `python -m actionclip_jax.export` wrote with class names known (a run's own list, or --labels /
--classes): the graphs, manifest.json, labels.csv and text_features.npz, the classes' text features, so no tokenizer
is needed here. Each video is read as the manifest's preprocessing says (the evaluation's: segment-centre frames,
short-side resize, centre crop), encoded by video_encoder.onnx and scored against the text features by
classify.onnx. Needs numpy, PyAV, Pillow and onnxruntime.
"""
import argparse
import csv
import json
import os

import av
import numpy as np
import onnxruntime as ort
from PIL import Image


def frame_indices(n: int, segments: int, seg_length: int) -> np.ndarray:
  """The evaluation's one clip of a video of n frames (manifest: preprocessing.sampling)."""
  total = segments * seg_length
  if segments == 1:
    return np.minimum(int(n * 0.5) + np.arange(seg_length), n - 1)
  if n <= total:
    return np.arange(total) * n // total
  offset = 0.5 * (n / segments - seg_length)
  starts = np.arange(segments) * n / segments
  return ((starts[:, None] + offset) + np.arange(seg_length)).reshape(-1).astype(np.int64)


def read_clip(path: str, pre: dict) -> np.ndarray:
  """uint8 [T, S, S, 3]: the sampled frames, resized and centre-cropped as the manifest says."""
  with av.open(path) as container:
    if not container.streams.video:
      raise ValueError(f'{path}: no video stream')
    stream = container.streams.video[0]
    n = stream.frames or sum(1 for _ in container.decode(stream))  # no count in the container: count by decoding
    if n < 1:
      raise ValueError(f'{path}: no video frames')
    if not stream.frames:
      container.seek(0)
    wanted = frame_indices(n, pre['sampling']['num_segments'], pre['sampling']['seg_length'])
    kept = {}
    for i, frame in enumerate(container.decode(stream)):
      if i in wanted:
        kept[i] = resize_and_crop(frame, pre)
      if i == wanted.max():
        break
  if len(kept) < len(set(wanted.tolist())):
    raise ValueError(f'{path}: ends before frame {wanted.max()} of the {n} it says it has')
  return np.stack([kept[i] for i in wanted.tolist()])


def resize_and_crop(frame, pre: dict) -> np.ndarray:
  """A decoded frame as uint8 [S, S, 3]: decoded to RGB at the manifest's short side, resized, centre-cropped."""
  width, height, side = frame.width, frame.height, pre['decode_short_side']
  if side:  # swscale's bilinear straight to this short side, as the evaluation decodes
    width, height = ((side, max(1, round(height * side / width))) if width <= height
                     else (max(1, round(width * side / height)), side))
  short, size = pre['resize_short_side'], pre['size']
  scale = short / min(width, height)
  new_w, new_h = max(short, round(width * scale)), max(short, round(height * scale))
  x, y = int(round((new_w - size) / 2)), int(round((new_h - size) / 2))
  image = Image.fromarray(frame.to_ndarray(width=width, height=height, format='rgb24'))
  return np.asarray(image.resize((new_w, new_h), Image.BICUBIC))[y:y + size, x:x + size]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('served', help='the folder `python -m actionclip_jax.export` wrote (ONNX, class names known)')
  parser.add_argument('videos', help='a folder of videos')
  parser.add_argument('--top_k', type=int, default=5, help='classes shown per video')
  parser.add_argument('--json', action='store_true', help='one JSON document: [{path, top: [{class, prob}], error}]')
  args = parser.parse_args()

  with open(os.path.join(args.served, 'manifest.json')) as f:
    manifest = json.load(f)
  if manifest['format'] != 'onnx' or not manifest['text_features']:
    raise SystemExit(f'{args.served}: export it with --format onnx and class names (--labels or --classes)')
  options = ort.SessionOptions()
  options.log_severity_level = 3  # errors only, not notes on the constants it folds away
  sessions = {name: ort.InferenceSession(os.path.join(args.served, manifest['graphs'][name]['file']), options,
                                         providers=['CPUExecutionProvider']) for name in ('video_encoder', 'classify')}
  text = dict(np.load(os.path.join(args.served, manifest['text_features'])))
  with open(os.path.join(args.served, manifest['labels']), newline='') as f:
    names = [row[1] for row in list(csv.reader(f))[1:]]

  results = []
  for name in sorted(os.listdir(args.videos)):
    path = os.path.join(args.videos, name)
    try:
      clip = read_clip(path, manifest['preprocessing'])[None]  # one video: B = 1
    except (av.FFmpegError, ValueError) as e:  # not a video, or a broken one: say so and go on
      results.append({'path': path, 'top': [], 'error': str(e)})
      continue
    (video,) = sessions['video_encoder'].run(None, {'frames': clip})
    probs = sessions['classify'].run(['probs'], {'video': video, **text})[0][0]
    top = np.argsort(-probs, kind='stable')[:args.top_k]
    results.append({'path': path, 'top': [{'class': names[c], 'prob': float(probs[c])} for c in top], 'error': None})
  if args.json:
    print(json.dumps(results, indent=2))
  else:
    for result in results:
      lines = [f'  {100 * t["prob"]:6.2f}%  {t["class"]}' for t in result['top']]
      print('\n'.join([result['path'], *lines, *([f'  error: {result["error"]}'] if result['error'] else [])]))


if __name__ == '__main__':
  main()
