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
"""
import csv
import dataclasses
import os


@dataclasses.dataclass(frozen=True)
class VideoRecord:
  """One video of a split.

  `video_id` is the record's position in its annotation file (0-based; header and blank lines do not
  count); every source keeps it, so predictions can be joined back to the list and views of a video averaged.
  """
  path: str
  num_frames: int | None
  label: int
  video_id: int


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


def read_label_csv(path: str) -> list[str]:
  """Reads `id,name` rows (with a header) into names indexed by id; ids must be 0..N-1."""
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
  if sorted(names) != list(range(len(names))):
    missing = sorted(set(range(max(names, default=-1) + 1)) - set(names))
    raise AnnotationError(f'{path}: label ids must be 0..{len(names) - 1} without gaps; missing {missing[:10]}')
  return [names[i] for i in range(len(names))]


def read_list_file(path: str, num_classes: int, root: str | None = None) -> list[VideoRecord]:
  """Reads an ActionCLIP/TSN list file; paths are joined to `root` when given."""
  records = []
  for line_no, line in enumerate(_utf8_lines(path), start=1):
    line = line.strip()
    if not line:
      continue
    fields = line.rsplit(' ', 2)
    if len(fields) != 3:
      raise AnnotationError(f'{path}:{line_no}: expected "path num_frames label", got {line!r}')
    video, num_frames, label = fields
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


def read_video_list(path: str, label_names: list[str], root: str | None = None) -> list[VideoRecord]:
  """A TSN list file (`path num_frames label`), or a `path,label_name` CSV when `path` ends in `.csv`."""
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
