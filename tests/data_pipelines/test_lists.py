import json
import os
import shutil
import subprocess
import sys

import pytest

from data_pipelines import lists
from data_pipelines.annotations import VideoRecord, read_label_csv, read_plain_csv, read_video_list

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_lines(path) -> list[str]:
  with open(path, encoding='utf-8') as f:
    return f.read().splitlines()


def read_bad(out) -> dict[str, str]:
  with open(os.path.join(out, 'bad.jsonl'), encoding='utf-8') as f:
    return {entry['path']: entry['reason'] for entry in map(json.loads, f)}


@pytest.fixture
def class_folders(tmp_path, video_tools):
  """A folder per class: four containers (webm and mkv record no frame count), a path with a space, a subfolder,
  a text file named .mp4, a file that is no video and a hidden folder."""
  root = tmp_path / 'videos'
  for folder in ('abseiling', 'brush_hair/sub dir', '.cache', 'empty class'):
    (root / folder).mkdir(parents=True)
  video_tools.write_video(str(root / 'abseiling/a.mp4'), 'libx264', 12)
  video_tools.write_video(str(root / 'abseiling/b.webm'), 'libvpx-vp9', 9)
  video_tools.write_video(str(root / 'brush_hair/c.avi'), 'mpeg4', 10)
  video_tools.write_video(str(root / 'brush_hair/sub dir/d e.mkv'), 'libx264', 11)
  (root / 'brush_hair/notes.txt').write_text('not listed')
  (root / 'brush_hair/text.mp4').write_text('a text file named like a video')
  shutil.copy(root / 'abseiling/a.mp4', root / '.cache/hidden.mp4')
  return str(root)


FOLDER_LIST = {'abseiling/a.mp4': (12, 0), 'abseiling/b.webm': (9, 0), 'brush_hair/c.avi': (10, 1),
               'brush_hair/sub dir/d e.mkv': (11, 1)}


def test_from_folder_lists_each_class_folder_with_frame_counts(class_folders, tmp_path, capsys):
  out = str(tmp_path / 'lists')
  assert lists.main(['from-folder', class_folders, '--out', out, '--workers', '1']) == 0
  names = read_label_csv(os.path.join(out, 'labels.csv'))
  assert names == ['abseiling', 'brush hair']
  records = read_video_list(os.path.join(out, 'list.txt'), names, root=class_folders)
  assert {os.path.relpath(r.path, class_folders): (r.num_frames, r.label) for r in records} == FOLDER_LIST
  assert all(os.path.isfile(r.path) for r in records)
  assert list(read_bad(out)) == ['brush_hair/text.mp4']
  printed = capsys.readouterr().out
  assert f'--config.data.root={class_folders}' in printed and '1 videos could not be read' in printed


def test_from_folder_reads_a_flat_folder_and_its_csv(class_folders, tmp_path):
  csv_path = tmp_path / 'videos.csv'
  csv_path.write_text('path,label_name\n' + ''.join(
      f'{path},{"run" if label else "jump"}\n' for path, (_, label) in FOLDER_LIST.items()))
  out = str(tmp_path / 'lists')
  lists.main(['from-folder', class_folders, '--csv', str(csv_path), '--out', out, '--workers', '1'])
  names = read_label_csv(os.path.join(out, 'labels.csv'))
  assert names == ['jump', 'run']
  assert [(r.path, r.num_frames, r.label) for r in read_video_list(os.path.join(out, 'list.txt'), names)] == [
      (path, frames, label) for path, (frames, label) in FOLDER_LIST.items()]
  assert read_bad(out) == {}


def test_split_carves_val_per_class_the_same_for_the_same_seed(tmp_path, video_tools):
  root = tmp_path / 'videos'
  sizes = {'archery': 10, 'bowling': 3, 'curling': 1}
  video = video_tools.write_video(str(tmp_path / 'one.mp4'), 'libx264', 6)
  for name, count in sizes.items():
    (root / name).mkdir(parents=True)
    for i in range(count):
      shutil.copy(video, root / name / f'{i}.mp4')

  def split(seed):
    out = str(tmp_path / f'seed{seed}')
    lists.main(['from-folder', str(root), '--out', out, '--split', '0.2', '--seed', str(seed), '--workers', '1'])
    names = read_label_csv(os.path.join(out, 'labels.csv'))
    return [[(r.path, r.label) for r in read_video_list(os.path.join(out, f'{name}.txt'), names)]
            for name in ('train', 'val')]

  train, val = split(0)
  # round(0.2 * n), at least one from a class of two or more, none from a class of one
  assert sorted(label for _, label in val) == [0, 0, 1]
  assert sorted(train + val) == sorted((f'{name}/{i}.mp4', label) for label, (name, count)
                                       in enumerate(sizes.items()) for i in range(count))
  assert split(0) == [train, val]
  assert split(1)[1] != val
  assert not os.path.exists(tmp_path / 'seed0' / 'list.txt')


@pytest.mark.parametrize('split', ['1', '-0.1', 'half'])
def test_split_must_be_a_fraction(tmp_path, split, capsys):
  with pytest.raises(SystemExit):
    lists.main(['from-folder', str(tmp_path), '--out', str(tmp_path / 'out'), '--split', split])
  assert '--split' in capsys.readouterr().err


def test_from_folder_without_videos_says_so(tmp_path):
  with pytest.raises(SystemExit, match=rf'^{tmp_path}: no videos'):
    lists.main(['from-folder', str(tmp_path), '--out', str(tmp_path / 'out')])


KINETICS_TRAIN = """label,youtube_id,time_start,time_end,split,is_cc
abseiling,AbC-123_x,10,20,train,0
air drumming,q9,0.0,10.0,train,0
abseiling,gone,5,15,train,0
"""
KINETICS_VAL = """label,youtube_id,time_start,time_end,split
"passing American football (in game)",v1,30,40,val
air drumming,v2,7,17,val
,t1,0,10,test
"""


def test_from_kinetics_finds_the_downloaders_names_and_reports_the_missing(tmp_path, video_tools, capsys):
  root = tmp_path / 'k400'
  for folder in ('train/abseiling', 'train_flat', 'val'):
    (root / folder).mkdir(parents=True)
  video_tools.write_video(str(root / 'train/abseiling/AbC-123_x_000010_000020.mp4'), 'libx264', 14)
  video_tools.write_video(str(root / 'train_flat/q9_000000_000010.mp4'), 'libx264', 8)
  video_tools.write_video(str(root / 'val/v1_000030_000040.webm'), 'libvpx-vp9', 9)
  (root / 'val/v2_000007_000017.mp4').write_bytes(b'')
  annotations = tmp_path / 'train.csv', tmp_path / 'validate.csv', tmp_path / 'test.csv'
  annotations[0].write_text(KINETICS_TRAIN)
  annotations[1].write_text(KINETICS_VAL)
  annotations[2].write_text('youtube_id,time_start,time_end,split\nt2,0,10,test\n')  # labels held out
  out = str(tmp_path / 'lists')
  assert lists.main(['from-kinetics', *map(str, annotations), '--videos', str(root), '--out', out,
                     '--workers', '1']) == 0
  names = read_label_csv(os.path.join(out, 'labels.csv'))
  assert names == ['abseiling', 'air drumming', 'passing American football (in game)']
  listed = {split: [(r.path, r.num_frames, r.label) for r in read_video_list(os.path.join(out, f'{split}.txt'), names)]
            for split in ('train', 'val')}
  assert listed == {'train': [('train/abseiling/AbC-123_x_000010_000020.mp4', 14, 0),
                              ('train_flat/q9_000000_000010.mp4', 8, 1)],
                    'val': [('val/v1_000030_000040.webm', 9, 2)]}
  assert not os.path.exists(os.path.join(out, 'test.txt'))  # its rows have no label
  assert read_lines(os.path.join(out, 'missing.txt')) == ['gone_000005_000015.mp4']
  assert read_bad(out) == {'val/v2_000007_000017.mp4': 'file is empty'}
  printed = capsys.readouterr().out
  assert f'{out}/train.txt: 2 videos' in printed and '1 listed clips not found' in printed
  assert '2 rows without a label' in printed
  assert f'--config.data.val_list={out}/val.txt' in printed


@pytest.mark.parametrize('text, problem', [
    ('label,youtube_id,time_start,split\n', r':1: expected the columns .*missing \[.time_end.\]'),
    ('label,youtube_id,time_start,time_end,split\nabseiling,x,10,20,train\nabseiling,y,ten,20,train\n',
     r":3: time_start 'ten' and time_end '20' must be numbers"),
    ('label,youtube_id,time_start,time_end,split\nabseiling,x,10\n', r':2: expected the columns'),
    ('label,youtube_id,time_start,time_end,split\nabseiling,x,10,20,../up\n', r":2: split '../up' is not a name"),
])
def test_kinetics_csv_errors_name_file_and_line(tmp_path, text, problem):
  path = tmp_path / 'train.csv'
  path.write_text(text)
  with pytest.raises(SystemExit, match=rf'^{path}{problem}'):
    lists.main(['from-kinetics', str(path), '--videos', str(tmp_path), '--out', str(tmp_path / 'out')])


@pytest.fixture
def scan_list(tmp_path, video_tools):
  """A TSN list of three good videos and five bad ones, paths relative to its root, and each bad one's reason."""
  root = tmp_path / 'videos'
  root.mkdir()
  good = {'a b.mp4': 30, 'c.webm': 9, 'd.avi': 12}
  for name, count in good.items():
    video_tools.write_video(str(root / name), {'mp4': 'libx264', 'webm': 'libvpx-vp9', 'avi': 'mpeg4'}[
        name.rpartition('.')[2]], count)
  data = (root / 'a b.mp4').read_bytes()
  (root / 'truncated.mp4').write_bytes(data[:len(data) // 2])  # PyAV writes the mp4 index last
  mkv = open(video_tools.write_video(str(tmp_path / 'full.mkv'), 'libx264', 40), 'rb').read()
  (root / 'truncated.mkv').write_bytes(mkv[:len(mkv) // 2])
  (root / 'empty.mp4').write_bytes(b'')
  (root / 'text.mp4').write_text('a text file named like a video')
  bad = {'truncated.mp4': (30, 'InvalidDataError'), 'truncated.mkv': (40, 'ends after'),
         'empty.mp4': (5, 'file is empty'), 'text.mp4': (5, 'InvalidDataError'),
         'd.avi': (20, 'has 12 frames, the list says 20')}
  listed = {**good, **{name: count for name, (count, _) in bad.items()}}
  path = tmp_path / 'train.txt'
  path.write_text(''.join(f'{name} {count} {i % 2}\n' for i, (name, count) in enumerate(listed.items())))
  del good['d.avi']  # listed with more frames than it has
  return str(path), str(root), good, {name: reason for name, (_, reason) in bad.items()}


def check_scan(out, good, bad, list_path, root):
  assert read_lines(os.path.join(out, 'good.txt')) == [line for line in read_lines(list_path)
                                                        if line.rsplit(' ', 2)[0] in good]
  assert [r.path for r in read_video_list(os.path.join(out, 'good.txt'), ['x', 'y'], root=root)] == [
      os.path.join(root, name) for name in good]
  reasons = read_bad(out)
  assert sorted(reasons) == sorted(bad)
  for name, reason in bad.items():
    assert reason in reasons[name], (name, reasons[name])
  with open(os.path.join(out, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['videos'] == len(good) + len(bad) and summary['good'] == len(good) and summary['bad'] == len(bad)
  assert summary['frames'] == sum(good.values())
  assert summary['duration_s'] == pytest.approx(sum(good.values()) / 25)
  assert summary['frames_per_video'] == {'min': min(good.values()), 'median': sum(good.values()) / 2,
                                         'max': max(good.values())}
  assert summary['fps']['most_common'] == {'25.0': len(good)}
  assert summary['resolution']['most_common'] == {'64x48': len(good)}


def test_scan_sorts_a_list_into_good_and_bad(scan_list, tmp_path):
  list_path, root, good, bad = scan_list
  out = str(tmp_path / 'scan')
  assert lists.main(['scan', list_path, '--root', root, '--out', out, '--workers', '1']) == 1
  check_scan(out, good, bad, list_path, root)


def test_scan_runs_as_a_module_in_worker_processes(scan_list, tmp_path):
  list_path, root, good, bad = scan_list
  out = str(tmp_path / 'scan')
  done = subprocess.run([sys.executable, '-m', 'data_pipelines.lists', 'scan', list_path, '--root', root,
                         '--out', out, '--workers', '2'], cwd=REPO, capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, PYTHONPATH=REPO))
  assert done.returncode == 1, done.stderr[-2000:]
  assert f'{len(good)} of {len(good) + len(bad)} videos good' in done.stdout
  check_scan(out, good, bad, list_path, root)


def test_scan_reads_a_csv_or_a_folder_and_exits_0_when_all_are_good(class_folders, tmp_path):
  os.remove(os.path.join(class_folders, 'brush_hair/text.mp4'))
  csv_path = tmp_path / 'videos.csv'
  csv_path.write_text('path,label\n' + ''.join(f'{path},class {label}\n' for path, (_, label) in FOLDER_LIST.items()))
  out = str(tmp_path / 'csv_scan')
  assert lists.main(['scan', str(csv_path), '--root', class_folders, '--out', out, '--workers', '1']) == 0
  assert read_plain_csv(os.path.join(out, 'good.csv'), ['class 0', 'class 1']) == [
      VideoRecord(path, None, label, i) for i, (path, (_, label)) in enumerate(FOLDER_LIST.items())]
  assert read_bad(out) == {}
  out = str(tmp_path / 'folder_scan')
  assert lists.main(['scan', class_folders, '--out', out, '--workers', '1']) == 0
  assert read_lines(os.path.join(out, 'good.txt')) == sorted(FOLDER_LIST)
  with open(os.path.join(out, 'summary.json')) as f:
    assert json.load(f)['frames'] == sum(frames for frames, _ in FOLDER_LIST.values())
