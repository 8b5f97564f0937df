"""Lists from a folder of videos or from Kinetics' annotation CSVs, and a check that every listed video decodes.

    python -m data_pipelines.lists from-folder ROOT --out DIR [--csv CSV] [--split 0.1] [--seed 0] [--workers N]
    python -m data_pipelines.lists from-kinetics ANNOTATIONS.csv... --videos ROOT --out DIR [--workers N]
    python -m data_pipelines.lists scan LIST [--root ROOT] [--labels CSV] --out DIR [--workers N] [--timeout S]

`from-folder` reads a folder per class (the folder's name, underscores read as spaces, names the class; its videos
may sit in subfolders), or with `--csv` a flat folder and a `path,label_name` CSV of paths relative to ROOT.
`from-kinetics` reads Kinetics' annotation CSVs (`label,youtube_id,time_start,time_end,split`) and finds each clip
anywhere under ROOT by the name the common downloaders give it, `<youtube_id>_<start:06d>_<end:06d>.mp4` (or another
video extension). Both write what `annotations.py` reads: TSN lists (`path num_frames label`, paths relative to ROOT,
so a run takes `--config.data.root=ROOT`) and `labels.csv` (`id,name`, ids 0..C-1 in name order, which is the order
of the shipped Kinetics label CSVs). from-folder writes `list.txt`, or with `--split F` `train.txt` and `val.txt`:
F of each class's videos, drawn by `--seed`. from-kinetics writes a list per value of the split column
(`train.txt`, `val.txt`, ...) and the clips it did not find, one file name a line, in `missing.txt`. Frame counts are
the container's where it records one (mp4, avi, mov), else the count of frames that decode (webm, mkv); a video that
cannot be read is left out of the lists and named in `bad.jsonl`.

`scan` reads every frame of every video of a TSN list, a `path,label_name` CSV or a folder, in parallel, with the
decoder the runs use, and writes `good.txt` (`good.csv` for a CSV: the good entries as listed, a list to train on),
`bad.jsonl` (`{"path", "reason"}` a line, the path as listed) and `summary.json` (count, frames, duration, fps and
resolution spread). It exits 1 when a video is bad. The runs skip bad videos on their own (`bad_videos.py`); this is
the check to run once, before paying for a pod.
"""
import argparse
import collections
import contextlib
import csv
import dataclasses
import json
import multiprocessing
import os
import re
import statistics
import sys

import av
import numpy as np
import tqdm

from data_pipelines.annotations import (AnnotationError, VideoRecord, read_label_csv, read_list_file, read_plain_csv,
                                        write_label_csv)
from data_pipelines.bad_videos import BadVideoError
from data_pipelines.video_decode import decode_frames

VIDEO_EXTENSIONS = ('.mp4', '.avi', '.webm', '.mkv', '.mov')
LABELS = 'labels.csv'
BAD = 'bad.jsonl'
MISSING = 'missing.txt'
SUMMARY = 'summary.json'
KINETICS_COLUMNS = ('label', 'youtube_id', 'time_start', 'time_end', 'split')
# Frames are checked, not kept: scaling them to almost nothing keeps a whole video's worth in a few MB.
_PROBE_SIDE = 8
_MOST_COMMON = 10  # fps values and resolutions named in the summary
_CSV_HEADERS = {('path', 'label'), ('path', 'label_name')}  # the first rows read_plain_csv takes as a header


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  """What a scan reports of a readable video."""
  frames: int
  fps: float
  width: int
  height: int

  @property
  def duration_s(self) -> float:
    return self.frames / self.fps


def probe(path: str, *, full: bool = False, listed_frames: int | None = None, timeout_s: float = 600.0) -> VideoInfo:
  """The video's frame count, frame rate and size, checked with the runs' decoder; raises `BadVideoError`.

  `full` reads every frame (the list's `listed_frames` of them when it gives a count) through
  `video_decode.decode_frames`, so a video passes exactly when a run can read all of it. Otherwise only the last frame
  is read, which still catches a file cut short after its index was written. The count is the container's when it
  records one; webm and mkv record only a duration, whose rounding may promise a frame or two that is not there, so
  their frames are counted by decoding: a list must not promise frames a run cannot read.
  """
  decode_frames(path, (lambda count: np.arange(count)) if full else (lambda count: [count - 1]),
                num_frames=listed_frames, short_side=_PROBE_SIDE, timeout_s=timeout_s)
  try:
    with av.open(path, timeout=timeout_s) as container:
      stream = container.streams.video[0]
      frames = stream.frames or sum(1 for _ in container.decode(stream))
      # decode_frames has refused a stream without a frame rate
      return VideoInfo(frames, float(stream.average_rate or stream.guessed_rate), stream.width, stream.height)
  except av.FFmpegError as e:
    raise BadVideoError(path, f'{type(e).__name__}: {e}') from e


@dataclasses.dataclass(frozen=True)
class _Probe:
  """`probe` for the pool's worker processes: the error is returned, not raised, so the parent moves on."""
  full: bool
  timeout_s: float

  def __call__(self, job: tuple[str, int | None]) -> VideoInfo | BadVideoError:
    path, listed_frames = job
    try:
      return probe(path, full=self.full, listed_frames=listed_frames, timeout_s=self.timeout_s)
    except BadVideoError as e:
      return e


def probe_all(jobs: list[tuple[str, int | None]], *, full: bool, workers: int, timeout_s: float = 600.0,
              desc: str = 'probing') -> list[VideoInfo | BadVideoError]:
  """`probe` of each (path, listed frame count), in job order, in `workers` processes (in this one for 1 or less)."""
  probe_one = _Probe(full, timeout_s)
  with contextlib.ExitStack() as stack:
    if workers > 1:
      pool = stack.enter_context(multiprocessing.get_context('spawn').Pool(workers))
      results = pool.imap(probe_one, jobs)
    else:
      results = map(probe_one, jobs)
    return list(tqdm.tqdm(results, total=len(jobs), desc=desc, unit='video'))


def _write_bad(path: str, bad: list[tuple[str, str]]) -> None:
  with open(path, 'w', encoding='utf-8') as f:
    f.writelines(json.dumps({'path': video, 'reason': reason}) + '\n' for video, reason in bad)


def _write_list(path: str, entries: list[tuple[str, int, int]]) -> None:
  with open(path, 'w', encoding='utf-8') as f:
    f.writelines(f'{video} {frames} {label}\n' for video, frames, label in entries)


def _frame_counts(paths: list[str], root: str, out: str, workers: int) -> tuple[dict[str, int], int]:
  """The frame count of each readable video (paths relative to `root`), and how many were not: those go, with
  their reasons, to `out/bad.jsonl`."""
  results = probe_all([(os.path.join(root, path), None) for path in paths], full=False, workers=workers,
                      desc='counting frames')
  counts, bad = {}, []
  for path, result in zip(paths, results):
    if isinstance(result, BadVideoError):
      bad.append((path, result.reason))
    else:
      counts[path] = result.frames
  _write_bad(os.path.join(out, BAD), bad)
  return counts, len(bad)


def _videos_under(folder: str, root: str) -> list[str]:
  """The video files anywhere under `folder`, sorted, as paths relative to `root`."""
  found = []
  for parent, dirs, names in os.walk(folder):
    dirs[:] = [d for d in dirs if not d.startswith('.')]
    found += [os.path.relpath(os.path.join(parent, name), root) for name in names
              if name.lower().endswith(VIDEO_EXTENSIONS) and not name.startswith('.')]
  return sorted(found)


def _csv_label_names(path: str) -> list[str]:
  """The label names a `path,label_name` CSV uses, sorted; malformed rows are left to `read_plain_csv` to name."""
  with open(path, encoding='utf-8', newline='') as f:
    rows = [[field.strip() for field in row] for row in csv.reader(f)]
  if rows and tuple(field.lower() for field in rows[0]) in _CSV_HEADERS:
    rows = rows[1:]
  return sorted({row[1] for row in rows if len(row) == 2})


def split_by_class(entries: list, fraction: float, seed: int) -> tuple[list, list]:
  """(train, val) with round(fraction * n) of each class's n videos in val, at least one when n > 1 and none when
  n == 1, drawn by `seed` and the class alone (adding a class leaves the others' draws alone); both keep list order."""
  by_class = collections.defaultdict(list)
  for i, (_, _, label) in enumerate(entries):
    by_class[label].append(i)
  val = set()
  for label, members in by_class.items():
    count = min(max(round(fraction * len(members)), 1), len(members) - 1)
    val.update(np.asarray(members)[np.random.default_rng([seed, label]).permutation(len(members))[:count]].tolist())
  return ([e for i, e in enumerate(entries) if i not in val], [e for i, e in enumerate(entries) if i in val])


def from_folder(root: str, out: str, *, csv_path: str | None = None, split: float = 0.0, seed: int = 0,
                workers: int = 1) -> dict:
  """Writes the lists and `labels.csv` for a folder per class (or a flat folder and its `path,label_name` CSV)."""
  if not 0 <= split < 1:
    raise ValueError(f'--split must be in [0, 1), got {split}')
  if csv_path:
    names = _csv_label_names(csv_path)
    items = [(record.path, record.label) for record in read_plain_csv(csv_path, names)]
  else:
    folders = {}
    for name in sorted(os.listdir(root)):
      videos = _videos_under(os.path.join(root, name), root) if not name.startswith('.') else []
      if videos:  # a folder without videos is no class
        folders[name.replace('_', ' ')] = videos
    names = sorted(folders)
    items = [(video, label) for label, name in enumerate(names) for video in folders[name]]
  if not items:
    raise AnnotationError(f'{csv_path or root}: no videos ({", ".join(VIDEO_EXTENSIONS)}) '
                          f'{"listed" if csv_path else "in a folder per class"}')
  os.makedirs(out, exist_ok=True)
  counts, bad = _frame_counts([path for path, _ in items], root, out, workers)
  entries = [(path, counts[path], label) for path, label in items if path in counts]
  lists = dict(zip(('train', 'val'), split_by_class(entries, split, seed))) if split else {'list': entries}
  for name, listed in lists.items():
    _write_list(os.path.join(out, f'{name}.txt'), listed)
  write_label_csv(os.path.join(out, LABELS), names)
  return {'lists': {os.path.join(out, f'{name}.txt'): len(listed) for name, listed in lists.items()},
          'labels': os.path.join(out, LABELS), 'classes': len(names), 'bad': bad}


def _kinetics_rows(path: str) -> list[tuple[str, str, str]]:
  """(split, label name, file name stem) of each row of a Kinetics annotation CSV."""
  rows = []
  with open(path, encoding='utf-8', newline='') as f:
    reader = csv.DictReader(f)
    # A held-out test split may come without its label column; its rows are then counted, not listed.
    absent = [column for column in KINETICS_COLUMNS[1:] if column not in (reader.fieldnames or ())]
    if absent:
      raise AnnotationError(f'{path}:1: expected the columns {",".join(KINETICS_COLUMNS)}; missing {absent}')
    for row in reader:
      if any(row[column] is None for column in KINETICS_COLUMNS[1:]):
        raise AnnotationError(f'{path}:{reader.line_num}: expected the columns {",".join(KINETICS_COLUMNS)}, '
                              f'got {len(row) - (None in row)} fields')
      if not re.fullmatch(r'[\w-]+', row['split'].strip()):  # it names a file in --out
        raise AnnotationError(f'{path}:{reader.line_num}: split {row["split"]!r} is not a name like train or val')
      try:  # the annotations write whole seconds, some copies as floats ("10.0")
        start, end = int(float(row['time_start'])), int(float(row['time_end']))
      except (TypeError, ValueError):
        raise AnnotationError(f'{path}:{reader.line_num}: time_start {row["time_start"]!r} and time_end '
                              f'{row["time_end"]!r} must be numbers') from None
      rows.append((row['split'].strip(), (row.get('label') or '').strip(),
                   f'{row["youtube_id"].strip()}_{start:06d}_{end:06d}'))
  return rows


def from_kinetics(annotations: list[str], videos: str, out: str, *, workers: int = 1) -> dict:
  """Writes a list per split, `labels.csv` and `missing.txt` for Kinetics annotation CSVs and a downloaded folder."""
  rows = [row for path in annotations for row in _kinetics_rows(path)]
  unlabelled = sum(not label for _, label, _ in rows)  # test splits may come without labels; a list needs one
  rows = [row for row in rows if row[1]]
  names = sorted({label for _, label, _ in rows})
  label_of = {name: i for i, name in enumerate(names)}
  found = {}  # file name stem -> path under `videos`; the first in walk order wins
  for path in _videos_under(videos, videos):
    found.setdefault(os.path.splitext(os.path.basename(path))[0], path)
  missing = [f'{stem}.mp4' for _, _, stem in rows if stem not in found]
  os.makedirs(out, exist_ok=True)
  counts, bad = _frame_counts(sorted({found[stem] for _, _, stem in rows if stem in found}), videos, out, workers)
  lists = {}
  for split in sorted({split for split, _, _ in rows}):
    lists[os.path.join(out, f'{split}.txt')] = listed = [
        (found[stem], counts[found[stem]], label_of[label]) for s, label, stem in rows
        if s == split and found.get(stem) in counts]
    _write_list(os.path.join(out, f'{split}.txt'), listed)
  with open(os.path.join(out, MISSING), 'w', encoding='utf-8') as f:
    f.writelines(f'{name}\n' for name in missing)
  write_label_csv(os.path.join(out, LABELS), names)
  return {'lists': {path: len(listed) for path, listed in lists.items()}, 'labels': os.path.join(out, LABELS),
          'classes': len(names), 'bad': bad, 'missing': len(missing), 'unlabelled': unlabelled}


def _spread(values: list[float]) -> dict | None:
  return {'min': min(values), 'median': round(statistics.median(values), 3), 'max': max(values)} if values else None


def summarize(infos: list[VideoInfo], bad: int) -> dict:
  """Counts, totals and spreads of the good videos, for `summary.json`."""
  fps = collections.Counter(round(info.fps, 3) for info in infos)
  sizes = collections.Counter(f'{info.width}x{info.height}' for info in infos)
  return {
      'videos': len(infos) + bad, 'good': len(infos), 'bad': bad,
      'frames': sum(info.frames for info in infos),
      'duration_s': round(sum(info.duration_s for info in infos), 3),
      'frames_per_video': _spread([info.frames for info in infos]),
      'duration_s_per_video': _spread([round(info.duration_s, 3) for info in infos]),
      'fps': {'spread': _spread([info.fps for info in infos]),
              'most_common': {str(rate): n for rate, n in fps.most_common(_MOST_COMMON)}},
      'resolution': {'short_side': _spread([min(info.width, info.height) for info in infos]),
                     'most_common': dict(sizes.most_common(_MOST_COMMON))},
  }


def _scanned_list(source: str, labels: str | None) -> tuple[str, list[VideoRecord], list[str] | None]:
  """The kind of `source` (tsn, csv or folder), its records with paths as listed, and the label names of a CSV."""
  if os.path.isdir(source):
    return 'folder', [VideoRecord(path, None, 0, i) for i, path in enumerate(_videos_under(source, source))], None
  names = read_label_csv(labels) if labels else None
  if source.endswith('.csv'):
    names = names or _csv_label_names(source)
    return 'csv', read_plain_csv(source, names), names
  # Without a label CSV any label goes: the scan checks videos, and a run checks labels against its label CSV.
  return 'tsn', read_list_file(source, len(names) if names else sys.maxsize), None


def scan(source: str, out: str, *, root: str | None = None, labels: str | None = None, workers: int = 1,
         timeout_s: float = 600.0) -> dict:
  """Reads every frame of every video of a TSN list, `path,label_name` CSV or folder; writes `good.txt` (`good.csv`
  for a CSV), `bad.jsonl` and `summary.json` to `out` and returns the summary."""
  kind, records, names = _scanned_list(source, labels)
  if kind == 'folder':
    root = source
  jobs = [(os.path.join(root, record.path) if root else record.path, record.num_frames) for record in records]
  results = probe_all(jobs, full=True, workers=workers, timeout_s=timeout_s, desc='scanning')
  good = [(record, result) for record, result in zip(records, results) if isinstance(result, VideoInfo)]
  bad = [(record.path, result.reason) for record, result in zip(records, results)
         if isinstance(result, BadVideoError)]
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'good.csv' if kind == 'csv' else 'good.txt'), 'w', encoding='utf-8', newline='') as f:
    if kind == 'csv':
      writer = csv.writer(f)
      writer.writerow(('path', 'label_name'))
      writer.writerows((record.path, names[record.label]) for record, _ in good)
    elif kind == 'tsn':
      f.writelines(f'{record.path} {record.num_frames} {record.label}\n' for record, _ in good)
    else:
      f.writelines(f'{record.path}\n' for record, _ in good)
  _write_bad(os.path.join(out, BAD), bad)
  summary = summarize([info for _, info in good], len(bad))
  with open(os.path.join(out, SUMMARY), 'w', encoding='utf-8') as f:
    json.dump(summary, f, indent=2)
  return summary


def _fraction(text: str) -> float:
  value = float(text)
  if not 0 <= value < 1:
    raise argparse.ArgumentTypeError(f'a fraction in [0, 1) is needed, got {text}')
  return value


def _print_written(report: dict, root: str) -> None:
  for path, count in report['lists'].items():
    print(f'{path}: {count} videos')
  print(f'{report["labels"]}: {report["classes"]} classes')
  lists = {os.path.splitext(os.path.basename(path))[0]: path for path in report['lists']}
  flags = [f'--config.data.root={root}', f'--config.data.label_list={report["labels"]}']
  flags += [f'--config.data.{name}_list={lists[name]}' for name in ('train', 'val') if name in lists]
  print('for launch.py:', ' '.join(flags))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m data_pipelines.lists', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest='command', required=True)
  workers = {'type': int, 'default': os.cpu_count() or 1, 'help': 'processes reading videos (default: every core)'}

  folder = commands.add_parser('from-folder', help='lists for a folder per class, or a flat folder and a CSV')
  folder.add_argument('root', metavar='ROOT', help='the videos; list paths are relative to it')
  folder.add_argument('--out', required=True, help='folder for the lists, labels.csv and bad.jsonl')
  folder.add_argument('--csv', help='a path,label_name CSV of the videos (paths relative to ROOT) for a flat ROOT')
  folder.add_argument('--split', type=_fraction, default=0.0,
                      help='this fraction of each class goes to val.txt, the rest to train.txt; 0 writes list.txt')
  folder.add_argument('--seed', type=int, default=0, help='draws the --split')
  folder.add_argument('--workers', **workers)

  kinetics = commands.add_parser('from-kinetics', help="lists for Kinetics' annotation CSVs and downloaded clips")
  kinetics.add_argument('annotations', nargs='+', metavar='ANNOTATIONS.csv',
                        help='label,youtube_id,time_start,time_end,split CSVs (train, validate, test)')
  kinetics.add_argument('--videos', required=True, help='the downloaded clips, in any folders under it')
  kinetics.add_argument('--out', required=True, help='folder for the lists, labels.csv, missing.txt and bad.jsonl')
  kinetics.add_argument('--workers', **workers)

  check = commands.add_parser('scan', help='decode every video; exit 1 when one is bad')
  check.add_argument('source', metavar='LIST', help='a TSN list, a path,label_name .csv, or a folder of videos')
  check.add_argument('--out', required=True, help='folder for good.txt (good.csv), bad.jsonl and summary.json')
  check.add_argument('--root', help='folder the paths of a list are relative to (--config.data.root)')
  check.add_argument('--labels', help='label CSV with an id,name header, to check the labels too')
  check.add_argument('--timeout', type=float, default=600.0, help='seconds one video may take to decode')
  check.add_argument('--workers', **workers)
  args = parser.parse_args(argv)

  try:
    if args.command == 'from-folder':
      report = from_folder(args.root, args.out, csv_path=args.csv, split=args.split, seed=args.seed,
                           workers=args.workers)
      _print_written(report, args.root)
    elif args.command == 'from-kinetics':
      report = from_kinetics(args.annotations, args.videos, args.out, workers=args.workers)
      _print_written(report, args.videos)
      print(f'{report["missing"]} listed clips not found under {args.videos}: {os.path.join(args.out, MISSING)}')
      if report['unlabelled']:
        print(f'{report["unlabelled"]} rows without a label left out')
    else:
      report = scan(args.source, args.out, root=args.root, labels=args.labels, workers=args.workers,
                    timeout_s=args.timeout)
      print(f'{report["good"]} of {report["videos"]} videos good, {report["bad"]} bad: {args.out}')
      return 1 if report['bad'] else 0
  except AnnotationError as e:
    raise SystemExit(str(e)) from None  # one line with file:line; nothing has been read yet
  if report['bad']:
    print(f'{report["bad"]} videos could not be read, left out: {os.path.join(args.out, BAD)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
