import dataclasses
import json
import logging

import pytest

from data_pipelines.annotations import (AnnotationError, VideoRecord, read_charades, read_label_csv, read_list_file,
                                        read_multilabel_list, read_plain_csv, read_video_list)


def write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def test_list_file_reads_paths_with_spaces_counts_and_labels(tmp_path):
  path = write(tmp_path, 'train.txt', 'a/run fast 120 1\n\nb/jump 33 0\n')
  assert read_list_file(path, num_classes=2, root='/data') == [
      VideoRecord('/data/a/run fast', 120, 1, 0),
      VideoRecord('/data/b/jump', 33, 0, 1),
  ]


@pytest.mark.parametrize('line, problem', [
    ('a/video 12', 'expected "path num_frames label"'),
    ('a/video twelve 1', 'must be integers'),
    ('a/video 0 1', 'num_frames must be positive'),
    ('a/video 12 7', 'label 7 is not in the label CSV'),
])
def test_list_file_errors_name_file_and_line(tmp_path, line, problem):
  path = write(tmp_path, 'train.txt', f'ok 10 0\n{line}\n')
  with pytest.raises(AnnotationError, match=rf'^{path}:2: .*{problem}'):
    read_list_file(path, num_classes=2)


def test_label_csv(tmp_path):
  path = write(tmp_path, 'labels.csv', 'id,name\n1,jumping\n0,"abseiling, rope"\n')
  assert read_label_csv(path) == ['abseiling, rope', 'jumping']


@pytest.mark.parametrize('name, text, problem', [
    ('labels.csv', 'id,name\nx,run\n', r':2: label id .x. is not an integer'),
    ('labels.csv', 'id,name\n0,run\n0,walk\n', r':3: label id 0 appears twice'),
    ('labels.csv', 'id,name\n0,run\n2,walk\n', r': label ids must be 0..1 without gaps; missing \[1\]'),
    ('labels.csv', 'id,name\n0,run,fast\n', r':2: expected 2 fields'),
    # A .txt label file is Charades' classes list.
    ('classes.txt', 'c000 run\n0 walk\n', r':2: expected a Charades class line "cNNN name"'),
    ('classes.txt', 'c000 run\nc000 walk\n', r':2: class c000 appears twice'),
    ('classes.txt', 'c000 run\nc002 walk\n', r': label ids must be 0..1 without gaps; missing \[1\]'),
])
def test_label_file_errors(tmp_path, name, text, problem):
  path = write(tmp_path, name, text)
  with pytest.raises(AnnotationError, match=rf'^{path}{problem}'):
    read_label_csv(path)


def test_plain_csv_maps_names_and_leaves_counts_unknown(tmp_path):
  path = write(tmp_path, 'videos.csv', 'path,label\nx.mp4,walk\ny.mkv,run\n')
  assert read_plain_csv(path, ['run', 'walk']) == [
      VideoRecord('x.mp4', None, 1, 0), VideoRecord('y.mkv', None, 0, 1)]


def test_plain_csv_unknown_label_names_file_and_line(tmp_path):
  path = write(tmp_path, 'videos.csv', 'x.mp4,walk\ny.mkv,swim\n')
  with pytest.raises(AnnotationError, match=rf"^{path}:2: label 'swim' is not in the label CSV"):
    read_plain_csv(path, ['run', 'walk'])


def test_video_list_reads_a_csv_by_name_and_anything_else_as_a_list_file(tmp_path):
  names = ['run', 'walk']
  csv_path = write(tmp_path, 'videos.csv', 'x.mp4,walk\n')
  list_path = write(tmp_path, 'videos.txt', 'x.mp4 12 1\n')
  assert read_video_list(csv_path, names, root='/d') == [VideoRecord('/d/x.mp4', None, 1, 0)]
  assert read_video_list(list_path, names, root='/d') == [VideoRecord('/d/x.mp4', 12, 1, 0)]


# Latin-1 'é' (0xe9) where UTF-8 needs two bytes: a list saved in another encoding.
@pytest.mark.parametrize('name, content, read', [
    ('train.txt', b'ok 10 0\nvid\xe9o 10 1\n', lambda path: read_list_file(path, num_classes=2)),
    ('videos.csv', b'ok,run\nvid\xe9o,walk\n', lambda path: read_plain_csv(path, ['run', 'walk'])),
    ('labels.csv', b'id,name\n0,run\n1,caf\xe9\n', read_label_csv),
], ids=['list file', 'plain csv', 'label csv'])
def test_bytes_that_are_not_utf8_fail_with_file_line_and_the_bytes(tmp_path, name, content, read):
  path = tmp_path / name
  path.write_bytes(content)
  *_, line, _ = content.split(b'\n')  # the last line is the bad one
  line_no = content.count(b'\n')
  with pytest.raises(AnnotationError) as error:
    read(str(path))
  assert str(error.value).startswith(
      f'{path}:{line_no}: not UTF-8 text (byte 0xe9 at character {line.index(0xe9) + 1}): {line!r}')


# --- Multi-label sets ---------------------------------------------------------------------------------------------

CHARADES_CLASSES = 'c000 Holding some clothes\nc001 Putting clothes somewhere\n\nc002 Tidying some clothes\n'


def videos(tmp_path, *names):
  folder = tmp_path / 'videos'
  folder.mkdir(exist_ok=True)
  for name in names:
    (folder / name).write_bytes(b'')  # the readers only check that a video is there
  return str(folder)


def test_charades_classes_are_read_by_read_label_csv_from_a_txt(tmp_path):
  path = write(tmp_path, 'Charades_v1_classes.txt', CHARADES_CLASSES)
  assert read_label_csv(path) == ['Holding some clothes', 'Putting clothes somewhere', 'Tidying some clothes']


def test_charades_csv_keeps_good_actions_and_reports_bad_rows_with_file_and_line(tmp_path, caplog):
  root = videos(tmp_path, 'A1.mp4', 'B2.mp4', 'C3.mp4', 'E5.mp4', 'F6.mp4')
  names = ['hold', 'put', 'tidy']
  path = write(tmp_path, 'Charades_v1_train.csv', (
      'id,subject,descriptions,actions,length\n'
      'A1,s1,"two lines\nof description",c000 1.0 3.0;c002 0.00 10.0,10\n'  # lines 2-3
      'B2,s1,x,c001 2 4;c009 1 2;c000 5.5 2.0;c001 oops,8\n'  # line 4: one good action of four
      'C3,s2,x,,30.5\n'  # no actions, as some Charades videos
      'D4,s2,x,c000 0 1,5\n'  # line 6: the video is missing
      '\n'
      'E5,s3,x,c000 -1 2;c001 3 12,10\n'  # line 8: clamped to the video
      'F6,s3,x,c002 1 2,n/a\n'))  # line 9: no usable length
  with caplog.at_level(logging.WARNING):
    records, problems = read_charades(path, names, root=root)
  assert [(r.path, r.num_frames, r.label, r.video_id, r.labels) for r in records] == [
      (f'{root}/A1.mp4', None, 0, 0, (0, 2)), (f'{root}/B2.mp4', None, 1, 1, (1,)),
      (f'{root}/C3.mp4', None, -1, 2, ()), (f'{root}/E5.mp4', None, 0, 4, (0, 1)),
      (f'{root}/F6.mp4', None, 2, 5, (2,))]  # the dropped row keeps its number: ids join back to the file
  assert records[0].intervals == ((0, 0.1, 0.3), (2, 0.0, 1.0))
  assert records[1].intervals == ((1, 0.25, 0.5),)
  assert records[3].intervals == ((0, 0.0, 0.2), (1, 0.3, 1.0))
  assert records[2].intervals == records[4].intervals == ()
  assert problems == [
      f"{path}:4: action 'c009 1 2' skipped: unknown class c009 (the classes file has c000..c002)",
      f"{path}:4: action 'c000 5.5 2.0' skipped: it ends (2 s) before it starts (5.5 s)",
      f"{path}:4: action 'c001 oops' skipped: expected \"cNNN start end\"",
      f'{path}:6: video {root}/D4.mp4 not found; row skipped',
      f"{path}:9: length: 'n/a' is not a number of seconds; the row keeps its classes without intervals",
  ]
  assert f'{path}: 5 bad rows or actions skipped' in caplog.text


def test_charades_csv_without_its_columns_fails_at_once(tmp_path):
  path = write(tmp_path, 'Charades_v1_train.csv', 'id,actions\nA1,c000 1 2\n')
  with pytest.raises(AnnotationError, match=rf'^{path}:1: a Charades CSV needs the columns id, actions, length'):
    read_charades(path, ['hold'], root=videos(tmp_path, 'A1.mp4'))
  path = write(tmp_path, 'short.csv', 'id,actions,length\nA1,c000 1 2\n')
  with pytest.raises(AnnotationError, match=rf'^{path}:2: expected 3 fields'):
    read_charades(path, ['hold'], root=videos(tmp_path, 'A1.mp4'))


def test_multilabel_list_reads_ids_from_the_right_and_reports_bad_rows(tmp_path):
  root = videos(tmp_path, 'run fast.mp4', 'b.mp4')
  path = write(tmp_path, 'train.txt', 'videos/run fast.mp4 120 2,0\n\nvideos/b.mp4 33 1,7,x\nvideos/gone.mp4 9 0\n')
  records, problems = read_multilabel_list(path, ['a', 'b', 'c'], root=str(tmp_path))
  assert records == [VideoRecord(f'{root}/run fast.mp4', 120, 0, 0, (0, 2)),
                     VideoRecord(f'{root}/b.mp4', 33, 1, 1, (1,))]
  assert problems == [f"{path}:3: unknown class '7' skipped", f"{path}:3: unknown class 'x' skipped",
                      f'{path}:4: video {root}/gone.mp4 not found; row skipped']


@pytest.mark.parametrize('line, problem', [
    ('videos/b.mp4 12', 'expected "path num_frames l1,l2,..."'),
    ('videos/b.mp4 twelve 1', "num_frames 'twelve' must be an integer"),
    ('videos/b.mp4 0 1', 'num_frames must be positive'),
])
def test_multilabel_list_structure_errors_stay_fatal(tmp_path, line, problem):
  videos(tmp_path, 'b.mp4')
  path = write(tmp_path, 'train.txt', f'videos/b.mp4 10 0\n{line}\n')
  with pytest.raises(AnnotationError, match=rf'^{path}:2: {problem}'):
    read_multilabel_list(path, ['a', 'b'], root=str(tmp_path))


def test_multilabel_csv_reads_semicolon_separated_names(tmp_path):
  root = videos(tmp_path, 'x.mp4', 'y.mp4')
  path = write(tmp_path, 'videos.csv', 'labels,path,num_frames\n"sit, then stand;walk",x.mp4,\n'
                                       'walk; fly ;sit,y.mp4,40\n,x.mp4,3\n')
  records, problems = read_multilabel_list(path, ['walk', 'sit, then stand', 'sit'], root=root)
  assert records == [VideoRecord(f'{root}/x.mp4', None, 0, 0, (0, 1)), VideoRecord(f'{root}/y.mp4', 40, 0, 1, (0, 2)),
                     VideoRecord(f'{root}/x.mp4', 3, -1, 2, ())]
  assert problems == [f"{path}:3: unknown class 'fly' skipped"]
  bad = write(tmp_path, 'bad.csv', 'video,labels\nx.mp4,walk\n')
  with pytest.raises(AnnotationError, match=rf'^{bad}:1: expected a header naming the columns path and labels'):
    read_multilabel_list(bad, ['walk'], root=root)


def test_video_list_dispatches_multilabel_sets_by_format(tmp_path):
  root = videos(tmp_path, 'A1.mp4')
  names = ['hold', 'put']
  charades = write(tmp_path, 'Charades_v1_test.csv', 'id,actions,length\nA1,c001 1 2;c000 0 4,4\n')
  generic_csv = write(tmp_path, 'videos.csv', 'path,labels\nA1.mp4,put;hold\n')
  generic_list = write(tmp_path, 'videos.txt', 'A1.mp4 12 1,0\n')
  expected = VideoRecord(f'{root}/A1.mp4', None, 0, 0, (0, 1))
  assert read_video_list(charades, names, root, multilabel=True) == (
      [dataclasses.replace(expected, intervals=((1, 0.25, 0.5), (0, 0.0, 1.0)))], [])
  assert read_video_list(generic_csv, names, root, multilabel=True) == ([expected], [])
  assert read_video_list(generic_list, names, root, multilabel=True) == (
      [dataclasses.replace(expected, num_frames=12)], [])
  # Without `multilabel`, a CSV is the single-label `path,label_name` one, as before.
  with pytest.raises(AnnotationError, match='expected 2 fields'):
    read_video_list(charades, names, root)


def test_multilabel_records_survive_json(tmp_path):
  """Packed datasets store records as JSON, which turns tuples into lists; records read back compare equal."""
  record = VideoRecord('a.mp4', 30, 1, 4, (1, 3), ((3, 0.0, 0.5), (1, 0.25, 1.0)))
  again = VideoRecord(**json.loads(json.dumps(dataclasses.asdict(record))))
  assert again == record and hash(again) == hash(record)
