import pytest

from data_pipelines.annotations import (AnnotationError, VideoRecord, read_label_csv, read_list_file,
                                        read_plain_csv, read_video_list)


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


@pytest.mark.parametrize('text, problem', [
    ('id,name\nx,run\n', r':2: label id .x. is not an integer'),
    ('id,name\n0,run\n0,walk\n', r':3: label id 0 appears twice'),
    ('id,name\n0,run\n2,walk\n', r': label ids must be 0..1 without gaps; missing \[1\]'),
    ('id,name\n0,run,fast\n', r':2: expected 2 fields'),
])
def test_label_csv_errors(tmp_path, text, problem):
  path = write(tmp_path, 'labels.csv', text)
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
