"""Annotation files: which videos a split has, how many frames each, which label.

Three formats are read, all into the same `VideoRecord` list (and a fourth, CLIP pre-training's captioned images,
into records whose label indexes the captions):

- ActionCLIP/TSN list files, one video a line: `path num_frames label`, space separated. The path may
  itself contain spaces (Kinetics names do), so the last two fields are split off from the right.
- The label CSV, `id,name` with a header, giving the class names the text tower prompts with.
- A plain CSV, `path,label_name` (header optional), for users who only have a folder of videos. Frame
  counts are then unknown (`num_frames=None`) and the video source reads them from the container.
- `--mode=pretrain`'s `path,caption` CSV (`read_captions`): each image a one-frame video.

Files are UTF-8. Every malformed line fails at once with `file:line` and what is wrong, bytes that are not
UTF-8 included: a typo in line 180,000 of a list should stop the run before training starts, not crash a
worker an hour into it.

Multi-label sets (`read_video_list(..., multilabel=True)`) fill `VideoRecord.labels` and, for Charades,
`VideoRecord.intervals`:

- Charades' own files (`read_charades`): `Charades_v1_train.csv` / `Charades_v1_test.csv` (columns `id`,
  `actions` and `length` among others; `actions` is a `;`-separated list of `cNNN start end` in seconds, possibly
  empty), videos `<root>/<id>.mp4`, and `Charades_v1_classes.txt` (`cNNN name` a line), which `read_label_csv`
  reads when the label file ends in `.txt`.
- A generic multi-label list (`read_multilabel_list`): `path num_frames l1,l2,...` lines (label ids, split from
  the right as in TSN lists), or a CSV whose header names `path` and `labels` (and optionally `num_frames`), its
  labels `;`-separated class names.

Their file structure is checked as strictly as the single-label lists', but a bad row is reported, not fatal: a
real multi-label set has a few (Charades has actions whose end precedes their start), and losing a run to them
helps no one. An action of an unknown class or ending before it starts is dropped from its row; a row whose video
is missing is dropped. The readers return `(records, problems)`, each problem a `file:line: reason` string, and
log a warning with their count.
"""
import csv
import dataclasses
import math
import os
import re

from absl import logging


@dataclasses.dataclass(frozen=True)
class VideoRecord:
  """One video of a split.

  `video_id` is the record's position in its annotation file (0-based; header and blank lines do not
  count; rows a multi-label reader drops keep their number); every source keeps it, so predictions can be joined
  back to the list and views of a video averaged.

  Multi-label records have `labels`, their classes in increasing order (possibly none), and `label` the first of
  them or -1; single-label records leave `labels` empty. `intervals` are Charades' annotated actions, `(class,
  start, end)` with start and end as fractions of the video's length (seconds over the CSV's `length`, clamped to
  [0, 1]), so they need no frame rate.
  """
  path: str
  num_frames: int | None
  label: int
  video_id: int
  labels: tuple[int, ...] = ()
  intervals: tuple[tuple[int, float, float], ...] = ()

  def __post_init__(self):
    # A packed dataset's records.jsonl gives lists; tuples keep records hashable and equal to the ones packed.
    object.__setattr__(self, 'labels', tuple(self.labels))
    object.__setattr__(self, 'intervals', tuple(tuple(interval) for interval in self.intervals))


class AnnotationError(ValueError):
  """A malformed annotation line; the message starts with `file:line`."""


def _resolve(path: str, root: str | None) -> str:
  return os.path.join(root, path) if root else path


def _utf8_lines(path: str, newline: str | None = None):
  """The lines of a UTF-8 file; one holding bytes that are not UTF-8 fails with file:line (a list written in
  another encoding names its videos wrongly, so none of it can be trusted)."""
  with open(path, encoding='utf-8', errors='surrogateescape', newline=newline) as f:
    for line_no, line in enumerate(f, start=1):
      try:
        line.encode('utf-8')
      except UnicodeEncodeError as e:  # surrogateescape kept each undecodable byte as a lone surrogate
        raw = line.encode('utf-8', 'surrogateescape').rstrip(b'\r\n')
        raise AnnotationError(f'{path}:{line_no}: not UTF-8 text (byte {ord(line[e.start]) - 0xDC00:#04x} at '
                              f'character {e.start + 1}): {raw!r}; save the file as UTF-8') from None
      yield line


def write_label_csv(path: str, names) -> None:
  """Writes names as the `id,name` CSV `read_label_csv` reads (UTF-8; a name with a comma or a quote is quoted)."""
  with open(path, 'w', encoding='utf-8', newline='') as f:
    writer = csv.writer(f, lineterminator='\n')
    writer.writerow(('id', 'name'))
    writer.writerows(enumerate(names))


def read_label_csv(path: str) -> list[str]:
  """Reads `id,name` rows (with a header) into names indexed by id; ids must be 0..N-1. A `.txt` file is
  Charades' classes list instead (`read_charades_classes`)."""
  if path.endswith('.txt'):
    return read_charades_classes(path)
  names = {}
  rows = csv.reader(_utf8_lines(path, newline=''))
  header = next(rows, None)
  if header is None or len(header) < 2:
    raise AnnotationError(f'{path}:1: expected a header like "id,name", got {header!r}')
  for line_no, row in enumerate(rows, start=2):
    if not row:
      continue
    if len(row) != 2:
      raise AnnotationError(f'{path}:{line_no}: expected 2 fields "id,name", got {len(row)}: {row!r}')
    try:
      label = int(row[0])
    except ValueError:
      raise AnnotationError(f'{path}:{line_no}: label id {row[0]!r} is not an integer') from None
    if label in names:
      raise AnnotationError(f'{path}:{line_no}: label id {label} appears twice')
    names[label] = row[1].strip()
  return _names_in_id_order(path, names)


def _names_in_id_order(path: str, names: dict[int, str]) -> list[str]:
  if sorted(names) != list(range(len(names))):
    missing = sorted(set(range(max(names, default=-1) + 1)) - set(names))
    raise AnnotationError(f'{path}: label ids must be 0..{len(names) - 1} without gaps; missing {missing[:10]}')
  return [names[i] for i in range(len(names))]


_CHARADES_CLASS = re.compile(r'c(\d+) (.+)')


def read_charades_classes(path: str) -> list[str]:
  """Reads Charades' `Charades_v1_classes.txt`, `cNNN name` a line (`c000 Holding some clothes`), into names
  indexed by NNN; ids must be 0..N-1, as in a label CSV."""
  names = {}
  for line_no, line in enumerate(_utf8_lines(path), start=1):
    line = line.strip()
    if not line:
      continue
    match = _CHARADES_CLASS.fullmatch(line)
    if not match:
      raise AnnotationError(f'{path}:{line_no}: expected a Charades class line "cNNN name" (a label file ending in '
                            f'.txt is read as Charades_v1_classes.txt), got {line!r}')
    label = int(match[1])
    if label in names:
      raise AnnotationError(f'{path}:{line_no}: class c{label:03d} appears twice')
    names[label] = match[2].strip()
  return _names_in_id_order(path, names)


def _list_lines(path: str, form: str):
  """(line number, path, num_frames, last field) of each non-blank line of a TSN-style list, split from the right
  (paths may hold spaces); a line without three fields fails with file:line and the expected `form`."""
  for line_no, line in enumerate(_utf8_lines(path), start=1):
    line = line.strip()
    if not line:
      continue
    fields = line.rsplit(' ', 2)
    if len(fields) != 3:
      raise AnnotationError(f'{path}:{line_no}: expected "{form}", got {line!r}')
    yield line_no, *fields


def read_list_file(path: str, num_classes: int, root: str | None = None) -> list[VideoRecord]:
  """Reads an ActionCLIP/TSN list file; paths are joined to `root` when given."""
  records = []
  for line_no, video, num_frames, label in _list_lines(path, 'path num_frames label'):
    try:
      num_frames, label = int(num_frames), int(label)
    except ValueError:
      raise AnnotationError(
          f'{path}:{line_no}: num_frames {num_frames!r} and label {label!r} must be integers') from None
    if num_frames < 1:
      raise AnnotationError(f'{path}:{line_no}: num_frames must be positive, got {num_frames}')
    if not 0 <= label < num_classes:
      raise AnnotationError(
          f'{path}:{line_no}: label {label} is not in the label CSV (ids 0..{num_classes - 1})')
    records.append(VideoRecord(_resolve(video, root), num_frames, label, len(records)))
  return records


def read_plain_csv(path: str, label_names: list[str], root: str | None = None) -> list[VideoRecord]:
  """Reads `path,label_name` rows; a first row `path,label` (any case) is taken as a header."""
  label_of = {name: i for i, name in enumerate(label_names)}
  records = []
  for line_no, row in enumerate(csv.reader(_utf8_lines(path, newline='')), start=1):
    if not row:
      continue
    if len(row) != 2:
      raise AnnotationError(f'{path}:{line_no}: expected 2 fields "path,label_name", got {row!r}')
    video, name = row[0].strip(), row[1].strip()
    if line_no == 1 and (video.lower(), name.lower()) in {('path', 'label'), ('path', 'label_name')}:
      continue
    if name not in label_of:
      raise AnnotationError(f'{path}:{line_no}: label {name!r} is not in the label CSV')
    records.append(VideoRecord(_resolve(video, root), None, label_of[name], len(records)))
  return records


# ------------------------------------------------------------------------------------------------------------------
# Multi-label sets: rows are checked for structure as strictly as above, but bad rows are reported, not fatal.


class _Skipped(ValueError):
  """An action or a label that is dropped, and why."""


def _csv_table(path: str):
  """A CSV's header, stripped and lower-cased, and an iterator of (line the row starts on, row) for the rows under
  it; blank lines are skipped, and a quoted field may span lines (Charades' descriptions do)."""
  rows = csv.reader(_utf8_lines(path, newline=''))
  header = [field.strip().lower() for field in next(rows, [])]

  def body():
    start = rows.line_num + 1
    for row in rows:
      if row:
        yield start, row
      start = rows.line_num + 1
  return header, body()


def _check_fields(where: str, row: list[str], header: list[str]) -> None:
  if len(row) != len(header):
    raise AnnotationError(f'{where}: expected {len(header)} fields, as the header has, got {len(row)}: {row!r}')


def _multilabel_record(path: str, num_frames: int | None, classes, video_id: int, intervals=()) -> VideoRecord:
  labels = tuple(sorted(set(classes)))
  return VideoRecord(path, num_frames, labels[0] if labels else -1, video_id, labels, tuple(intervals))


def _log_problems(path: str, problems: list[str]) -> None:
  if problems:
    logging.warning('%s: %d bad rows or actions skipped, first: %s', path, len(problems), '; '.join(problems[:3]))


def _seconds(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    value = math.nan
  if not math.isfinite(value):
    raise _Skipped(f'{text!r} is not a number of seconds')
  return value


def _charades_action(action: str, num_classes: int) -> tuple[int, float, float]:
  """`cNNN start end` -> (NNN, start, end) in seconds."""
  fields = action.split()
  if len(fields) != 3 or not re.fullmatch(r'c[0-9]+', fields[0]):
    raise _Skipped('expected "cNNN start end"')
  label = int(fields[0][1:])
  if label >= num_classes:
    raise _Skipped(f'unknown class {fields[0]} (the classes file has c000..c{num_classes - 1:03d})')
  start, end = _seconds(fields[1]), _seconds(fields[2])
  if end < start:
    raise _Skipped(f'it ends ({end:g} s) before it starts ({start:g} s)')
  return label, start, end


CHARADES_COLUMNS = ('id', 'actions', 'length')


def read_charades(csv_path: str, class_names: list[str],
                  root: str | None = None) -> tuple[list[VideoRecord], list[str]]:
  """Reads a Charades CSV (`Charades_v1_train.csv`, `Charades_v1_test.csv`) into multi-label records of
  `<root>/<id>.mp4` with their intervals; `class_names` from `Charades_v1_classes.txt` (`read_label_csv`).

  Returns (records, problems). An action with an unknown class, bad syntax or an end before its start is dropped
  from its row (a row left with no action stays, with no labels, as Charades' rows without actions do); a row whose
  video is missing is dropped; a row whose `length` is not a positive number keeps its classes without intervals.
  Frame counts are left to the source (`num_frames=None`).
  """
  header, rows = _csv_table(csv_path)
  missing = [column for column in CHARADES_COLUMNS if column not in header]
  if missing:
    raise AnnotationError(f'{csv_path}:1: a Charades CSV needs the columns {", ".join(CHARADES_COLUMNS)}; the '
                          f'header lacks {", ".join(missing)}: {header!r}')
  column = {name: header.index(name) for name in CHARADES_COLUMNS}
  records, problems = [], []
  for video_id, (line_no, row) in enumerate(rows):
    where = f'{csv_path}:{line_no}'
    _check_fields(where, row, header)
    name = row[column['id']].strip()
    if not name:
      raise AnnotationError(f'{where}: empty id')
    path = _resolve(f'{name}.mp4', root)
    if not os.path.exists(path):
      problems.append(f'{where}: video {path} not found; row skipped')
      continue
    try:
      length = _seconds(row[column['length']])
      if length <= 0:
        raise _Skipped(f'{length:g} is not a positive length')
    except _Skipped as e:
      problems.append(f'{where}: length: {e}; the row keeps its classes without intervals')
      length = None
    classes, intervals = [], []
    for action in filter(None, (a.strip() for a in row[column['actions']].split(';'))):
      try:
        label, start, end = _charades_action(action, len(class_names))
      except _Skipped as e:
        problems.append(f'{where}: action {action!r} skipped: {e}')
        continue
      classes.append(label)
      if length is not None:  # annotations reaching past the video's end (or before 0) are clamped to it
        intervals.append((label, min(max(start / length, 0.0), 1.0), min(max(end / length, 0.0), 1.0)))
    records.append(_multilabel_record(path, None, classes, video_id, intervals))
  _log_problems(csv_path, problems)
  return records, problems


def _multilabel_list_rows(path: str, num_classes: int):
  """(line, video, num_frames, classes, unknown label tokens) of each `path num_frames l1,l2,...` line."""
  for line_no, video, num_frames, labels in _list_lines(path, 'path num_frames l1,l2,...'):
    try:
      num_frames = int(num_frames)
    except ValueError:
      raise AnnotationError(f'{path}:{line_no}: num_frames {num_frames!r} must be an integer') from None
    if num_frames < 1:
      raise AnnotationError(f'{path}:{line_no}: num_frames must be positive, got {num_frames}')
    tokens = [token.strip() for token in labels.split(',')]
    known = {t for t in tokens if re.fullmatch('[0-9]+', t) and int(t) < num_classes}
    yield line_no, video, num_frames, [int(t) for t in known], [t for t in tokens if t not in known]


def _multilabel_csv_rows(path: str, label_names: list[str]):
  """(line, video, num_frames, classes, unknown names) of each row under a header naming `path` and `labels`."""
  label_of = {name: i for i, name in enumerate(label_names)}
  header, rows = _csv_table(path)
  if 'path' not in header or 'labels' not in header:
    raise AnnotationError(f'{path}:1: expected a header naming the columns path and labels (and optionally '
                          f'num_frames), got {header!r}')
  for line_no, row in rows:
    _check_fields(f'{path}:{line_no}', row, header)
    num_frames = row[header.index('num_frames')].strip() if 'num_frames' in header else ''
    if num_frames:
      if not re.fullmatch('[0-9]+', num_frames) or int(num_frames) < 1:
        raise AnnotationError(f'{path}:{line_no}: num_frames must be a positive integer, got {num_frames!r}')
    names = [name.strip() for name in row[header.index('labels')].split(';') if name.strip()]
    yield (line_no, row[header.index('path')].strip(), int(num_frames) if num_frames else None,
           [label_of[n] for n in names if n in label_of], [n for n in names if n not in label_of])


def read_multilabel_list(path: str, label_names: list[str],
                         root: str | None = None) -> tuple[list[VideoRecord], list[str]]:
  """Reads a generic multi-label list into records; returns (records, problems).

  Either `path num_frames l1,l2,...` lines, label ids comma-separated (split from the right, so paths may hold
  spaces), or, for a `.csv`, rows under a header naming `path` and `labels` (and optionally `num_frames`; other
  columns are ignored), the labels `;`-separated class names, since names may hold commas (an empty field: no
  labels). An unknown label is dropped from its row; a row whose video (file or frame folder) is missing is dropped.
  """
  rows = (_multilabel_csv_rows(path, label_names) if path.endswith('.csv')
          else _multilabel_list_rows(path, len(label_names)))
  records, problems = [], []
  for video_id, (line_no, video, num_frames, classes, unknown) in enumerate(rows):
    where = f'{path}:{line_no}'
    problems += [f'{where}: unknown class {label!r} skipped' for label in unknown]
    video = _resolve(video, root)
    if not os.path.exists(video):
      problems.append(f'{where}: video {video} not found; row skipped')
      continue
    records.append(_multilabel_record(video, num_frames, classes, video_id))
  _log_problems(path, problems)
  return records, problems


def read_video_list(path: str, label_names: list[str], root: str | None = None, multilabel: bool = False):
  """A TSN list file (`path num_frames label`), or a `path,label_name` CSV when `path` ends in `.csv`: a list of
  records.

  With `multilabel`, (records, problems) of a multi-label set: a Charades CSV when `path` is a CSV whose header
  names `actions`, else `read_multilabel_list`'s list or `path,labels` CSV.
  """
  if multilabel:
    if path.endswith('.csv') and 'actions' in _csv_table(path)[0]:
      return read_charades(path, label_names, root)
    return read_multilabel_list(path, label_names, root)
  if path.endswith('.csv'):
    return read_plain_csv(path, label_names, root=root)
  return read_list_file(path, len(label_names), root=root)


CAPTIONS_HEADER = ('path', 'caption')


def read_captions(path: str, root: str | None = None) -> tuple[list[VideoRecord], list[str]]:
  """`path,caption` rows (header first) -> records whose label indexes the distinct captions, and those captions."""
  records, caption_ids = [], {}
  with open(path, newline='') as f:
    rows = csv.reader(f)
    header = tuple(field.strip().lower() for field in next(rows, ()))
    if header != CAPTIONS_HEADER:
      raise AnnotationError(f'{path}:1: expected the header "path,caption", got {",".join(header)!r}')
    for row in rows:
      if not row:
        continue
      if len(row) != 2 or not row[0].strip() or not row[1].strip():
        raise AnnotationError(f'{path}:{rows.line_num}: expected "path,caption" (quote a caption holding commas), '
                              f'got {row!r}')
      image, caption = row[0].strip(), row[1].strip()
      label = caption_ids.setdefault(caption, len(caption_ids))
      records.append(VideoRecord(_resolve(image, root), 1, label, len(records)))
  if not records:
    raise AnnotationError(f'{path}: no image-caption pairs')
  return records, list(caption_ids)
