"""Every config file and variant builds, describes a valid model, and passes (or fails) the start-up checks."""
import glob
import importlib.util
import os
import sys

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from actionclip_jax.model import clip, heads, video
from actionclip_jax.runs import config_checks, sharding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # config files import `configs.common`, as under `python launch.py` from the repo root
  sys.path.insert(0, ROOT)

# Every config file with the variants its docstring lists; a new file must be added here.
VARIANTS = {
    'k400': ['', 'arch=ViT-B/16', 'arch=ViT-B/16,frames=16', 'arch=ViT-B/16,frames=32', 'wti',
             'arch=ViT-B/16,frames=32,wti', 'official', 'arch=ViT-B/16,official'],
    'hmdb51': ['', 'arch=ViT-B/32', 'frames=16', 'frames=32', 'ft', 'ft,frames=32,official', 'wti'],
    'ucf101': ['', 'arch=ViT-B/32', 'frames=16', 'frames=32', 'official', 'wti'],
    'zero_shot': ['', 'dataset=ucf101', 'dataset=k600', 'dataset=any', 'protocol=half',
                  'dataset=ucf101,protocol=half,wti'],
    'few_shot': ['shots=2', 'shots=4', 'shots=8', 'shots=16', 'dataset=ucf101', 'dataset=k400', 'dataset=any,wti'],
    'demo': ['pretrain', 'transf', 'meanp', 'transf_wti', 'multilabel'],
    'charades': ['', 'arch=ViT-B/32', 'frames=8', 'wti', 'loss=sigmoid', 'sampling=interval',
                 'loss=sigmoid,sampling=interval'],
}
MODE = {'k400': 'train', 'hmdb51': 'train', 'ucf101': 'train', 'zero_shot': 'zero_shot', 'few_shot': 'few_shot',
        'demo': 'train', 'charades': 'train'}
SMOKE = {'demo': 'quick'}  # the variant that shrinks a config to a CPU smoke run, where it is not `runlocal`
CASES = [(name, arg) for name, args in VARIANTS.items()
         for arg in args + [','.join(filter(None, [args[-1], SMOKE.get(name, 'runlocal')]))]]


def _load(name):
  spec = importlib.util.spec_from_file_location(f'_config_{name}', os.path.join(ROOT, 'configs', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(name, arg=''):
  return _load(name).get_config(arg or None)


def model_config(c) -> video.ActionCLIPConfig:
  """The model the trainer would build from `c` (video.ActionCLIPConfig validates it)."""
  n = c.network
  return video.ActionCLIPConfig(
      clip.get_preset(n.arch, num_frames=c.data.num_segments * c.data.seg_length, joint=n.joint, tsm=n.tsm,
                      drop_path=n.drop_out, emb_dropout=n.emb_dropout, dtype=n.dtype),
      sim_header=n.sim_header, interaction=n.interaction)


def write_files(tmp_path, c, num_classes=None):
  """Points `c`'s lists at small files that exist; the label list has `data.num_classes` rows (or 5)."""
  num_classes = num_classes or c.data.num_classes or 5
  labels = tmp_path / 'labels.csv'
  labels.write_text('id,name\n' + ''.join(f'{i},class {i}\n' for i in range(num_classes)))
  (tmp_path / 'video0.mp4').touch()  # multi-label lists leave out (and report) rows whose video is missing
  for field in ('train_list', 'val_list'):
    path = tmp_path / f'{field}.txt'
    path.write_text(f'{tmp_path / "video0.mp4"} 10 0\n')
    c.data[field] = str(path)
  c.data.label_list = str(labels)
  return c


def test_every_config_file_is_listed():
  files = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, 'configs', '*.py'))} - {'common'}
  assert files == set(VARIANTS), 'add the new config file and its variants to VARIANTS'


@pytest.mark.parametrize('name,arg', CASES, ids=[f'{n}:{a}' for n, a in CASES])
def test_variant_builds_a_valid_model_and_passes_check(name, arg, tmp_path):
  c = get_config(name, arg)
  assert isinstance(c, ml_collections.ConfigDict)
  assert c.network.arch in clip.PRESETS
  assert c.network.sim_header in heads.SIM_HEADERS
  assert c.network.interaction == ('wti' if 'wti' in arg else 'global')
  model_config(c)
  # Every field of base() is there, with the same type (the trainer reads them all).
  base = _load('common').base()
  assert set(c.to_dict()) == set(base.to_dict())
  for section in ('data', 'network', 'solver', 'mesh', 'eval'):
    assert set(c[section].to_dict()) == set(base[section].to_dict()), section
  if SMOKE.get(name, 'runlocal') in arg:
    assert c.network.arch == 'tiny' and c.data.batch_size <= 8 and c.solver.total_steps > 0
  write_files(tmp_path, c)
  config_checks.check(c, MODE[name], num_devices=1, process_count=1)


def test_k400_recipe_matches_the_paper():
  c = get_config('k400')
  assert (c.network.arch, c.data.num_segments, c.network.sim_header) == ('ViT-B/32', 8, 'Transf')
  assert tuple(c.solver.betas) == (0.9, 0.98) and c.solver.eps == 1e-8 and c.solver.weight_decay == 0.2
  assert (c.solver.lr, c.solver.ratio, c.solver.f_ratio, c.solver.clip_gradient) == (5e-6, 1.0, 10.0, 20.0)
  assert (c.solver.lr_warmup_step, c.solver.epochs, c.solver.total_steps, c.solver.type) == (5, 50, 0, 'cosine')
  assert (c.data.batch_size, c.data.input_size, c.data.randaug.N, c.data.randaug.M) == (128, 224, 2, 9)
  assert (c.data.dataset, c.data.num_classes) == ('kinetics400', 400)
  assert get_config('k400', 'arch=ViT-B/16,frames=32').data.num_segments == 32


def test_official_preset_turns_on_every_official_switch_and_the_defaults_are_ours():
  ours, official = get_config('k400'), get_config('k400', 'official')
  switches = {'data.random_shift': (True, False), 'data.augment_order': ('clip', 'official'),
              'solver.clip_gradient': (20.0, 0.0), 'solver.weight_storage': ('float32', 'official_fp16'),
              'network.head_init': ('scaled', 'official'), 'network.conv_reshape': ('auto', 'official'),
              'eval.prescale': (True, False), 'eval.drop_last': (False, True)}
  for field, values in switches.items():
    section, key = field.split('.')
    assert (ours[section][key], official[section][key]) == values, field
  # Everything else is the recipe, unchanged.
  changed = {f'{s}.{k}' for s in ('data', 'network', 'solver', 'eval') for k in ours[s]
             if ours[s][k] != official[s][k]}
  assert changed == set(switches)
  for name in ('hmdb51', 'ucf101'):
    c = get_config(name, 'official')
    assert (c.solver.weight_storage, c.data.random_shift, c.solver.clip_gradient) == ('official_fp16', False, 0.0)


def test_finetune_and_eval_recipes():
  # hmdb_train.yaml (from CLIP, batch 64); hmdb_ft.yaml (`ft`, from K400, batch 32); ucf_train.yaml (batch 32).
  for (name, arg), classes, batch in ((('hmdb51', ''), 51, 64), (('hmdb51', 'ft'), 51, 32), (('ucf101', ''), 101, 32)):
    c = get_config(name, arg)
    assert (c.data.num_classes, c.data.batch_size, c.solver.epochs, c.solver.lr) == (classes, batch, 50, 5e-6)
    assert (c.data.randaug.N, c.network.arch, c.solver.lr_warmup_step, c.solver.f_ratio) == (0, 'ViT-B/16', 5, 10.0)
  assert get_config('zero_shot', 'protocol=half').eval.protocol == 'half'
  assert get_config('zero_shot').eval.protocol == 'full'
  assert get_config('zero_shot', 'dataset=ucf101').data.num_classes == 101
  assert get_config('few_shot', 'shots=4').eval.shots == 4
  with pytest.raises(ValueError, match='dataset'):
    get_config('zero_shot', 'dataset=imagenet')
  with pytest.raises(ValueError, match='Unknown config argument'):
    get_config('k400', 'frame=16')


def _good(tmp_path, mode='train'):
  c = write_files(tmp_path, get_config('k400', 'runlocal'), num_classes=5)
  c.data.num_classes = 0
  return c


# (what to change, mode, devices, processes, a phrase the message must contain)
BAD = {
    'batch_vs_mesh': (lambda c: c.data.update(batch_size=6), 'train', 4, 1, 'data.batch_size=6'),
    'eval_batch_vs_mesh': (lambda c: c.eval.update(batch_size=6), 'eval', 4, 1, 'eval.batch_size=6'),
    'batch_vs_fsdp': (lambda c: c.mesh.update(data=2, fsdp=4), 'train', 8, 1, 'data-parallel size 8'),
    'batch_vs_processes': (lambda c: c.data.update(batch_size=6), 'train', 6, 4, 'not divisible by the 4 processes'),
    'mesh_product': (lambda c: c.mesh.update(data=2, fsdp=2), 'train', 8, 1, 'the mesh has 4 devices'),
    'mesh_two_fills': (lambda c: c.mesh.update(data=-1, fsdp=-1), 'train', 4, 1, 'mesh.data, mesh.fsdp are all -1'),
    'mesh_fill_remainder': (lambda c: c.mesh.update(tensor=3), 'train', 4, 1, 'do not divide the 4 devices'),
    'mesh_zero': (lambda c: c.mesh.update(fsdp=0), 'train', 1, 1, 'mesh.fsdp=0'),
    'mesh_rule_axis': (lambda c: c.mesh.update(rules=(('embed', 'model'),)), 'train', 1, 1,
                       "unknown mesh axes ['model']"),
    'frames_vs_transf': (lambda c: c.data.update(num_segments=78), 'train', 1, 1, 'data.num_segments=78'),
    'frames_x_seg_length': (lambda c: c.data.update(num_segments=40, seg_length=2), 'train', 1, 1, '80 frames'),
    'arch': (lambda c: c.network.update(arch='ViT-H/14'), 'train', 1, 1, 'network.arch'),
    'sim_header': (lambda c: c.network.update(sim_header='seqTransf'), 'train', 1, 1, 'network.sim_header'),
    'interaction': (lambda c: c.network.update(interaction='tokens'), 'train', 1, 1, 'network.interaction'),
    'source': (lambda c: c.data.update(source='tfrecord'), 'train', 1, 1, 'data.source'),
    'dtype': (lambda c: c.network.update(dtype='fp8'), 'train', 1, 1, 'network.dtype'),
    'remat': (lambda c: c.network.update(remat='some'), 'train', 1, 1, "network.remat='some'"),
    'missing_train_list': (lambda c: c.data.update(train_list='/nonexistent/train.txt'), 'train', 1, 1,
                           'data.train_list'),
    'empty_train_list': (lambda c: c.data.update(train_list=''), 'train', 1, 1, 'data.train_list is required'),
    'empty_val_list': (lambda c: c.data.update(val_list=''), 'eval', 1, 1, 'data.val_list is required'),
    'zero_shot_val_list': (lambda c: c.data.update(val_list=''), 'zero_shot', 1, 1, 'data.val_list'),
    'few_shot_lists': (lambda c: c.data.update(train_list=''), 'few_shot', 1, 1, 'data.train_list'),
    'label_list': (lambda c: c.data.update(label_list=''), 'eval', 1, 1, 'data.label_list is required'),
    'label_list_missing': (lambda c: c.data.update(label_list='/nonexistent/l.csv'), 'train', 1, 1,
                           'data.label_list'),
    'num_classes': (lambda c: c.data.update(num_classes=400), 'train', 1, 1, 'data.num_classes=400'),
    'packed_not_a_dir': (lambda c: c.data.update(source='packed'), 'train', 1, 1, 'is not a packed dataset'),
    'packed_required': (lambda c: c.data.update(source='packed', val_list=''), 'eval', 1, 1,
                        'data.val_list is required'),
    'init_from': (lambda c: c.update(init_from='/nonexistent/ViT-B-32.pt'), 'train', 1, 1, 'init_from'),
    'lr': (lambda c: c.solver.update(lr=0.0), 'train', 1, 1, 'solver.lr'),
    'epochs': (lambda c: c.solver.update(total_steps=0, epochs=0), 'train', 1, 1, 'solver.epochs'),
    'total_steps': (lambda c: c.solver.update(total_steps=-3), 'train', 1, 1, 'solver.total_steps'),
    'warmup': (lambda c: c.solver.update(total_steps=4, lr_warmup_step=4), 'train', 1, 1, 'solver.lr_warmup_step'),
    'grad_accum': (lambda c: c.solver.update(grad_accum_steps=3), 'train', 1, 1, 'solver.grad_accum_steps=3'),
    'grad_accum_per_device': (lambda c: c.solver.update(grad_accum_steps=4), 'train', 2, 1, 'per-device batch 2'),
    'mode': (lambda c: None, 'finetune', 1, 1, "mode='finetune'"),
    'protocol': (lambda c: c.eval.update(protocol='third'), 'zero_shot', 1, 1, 'eval.protocol'),
    'half_splits': (lambda c: c.eval.update(protocol='half', half_splits=0), 'zero_shot', 1, 1, 'eval.half_splits'),
    'shots': (lambda c: c.eval.update(shots=0), 'few_shot', 1, 1, 'eval.shots'),
    'input_size': (lambda c: c.data.update(input_size=36), 'train', 1, 1, 'data.input_size=36'),
    'weight_storage': (lambda c: c.solver.update(weight_storage='fp16'), 'train', 1, 1, 'solver.weight_storage'),
    'augment_order': (lambda c: c.data.update(augment_order='frame'), 'train', 1, 1, 'data.augment_order'),
    'head_init': (lambda c: c.network.update(head_init='xavier'), 'train', 1, 1, 'network.head_init'),
    'cdcr_without_wti': (lambda c: c.network.update(cdcr_weight=0.001), 'train', 1, 1, 'network.cdcr_weight'),
    'scan_unroll': (lambda c: c.network.update(scan_unroll=0), 'train', 1, 1, 'network.scan_unroll=0'),
    'position_std': (lambda c: c.network.update(position_std=0.0), 'train', 1, 1, 'network.position_std=0.0'),
    'logit_scale_init': (lambda c: c.network.update(logit_scale_init=0.0), 'train', 1, 1,
                         'network.logit_scale_init=0.0'),
    'color_jitter': (lambda c: c.data.update(color_jitter=1.5), 'train', 1, 1, 'data.color_jitter=1.5'),
    'grayscale': (lambda c: c.data.update(grayscale=-0.1), 'train', 1, 1, 'data.grayscale=-0.1'),
    'crop_scales': (lambda c: c.data.update(crop_scales=(1.0, 0.0)), 'train', 1, 1, 'data.crop_scales'),
}


@pytest.mark.parametrize('case', sorted(BAD))
def test_check_names_the_field(case, tmp_path):
  change, mode, devices, processes, phrase = BAD[case]
  c = _good(tmp_path)
  config_checks.check(c, 'train', 1, 1)  # the starting point is fine
  change(c)
  with pytest.raises(ValueError) as err:
    config_checks.check(c, mode, devices, processes)
  assert phrase in str(err.value)


def test_check_lists_every_problem_in_one_error(tmp_path):
  c = _good(tmp_path)
  c.data.batch_size = 6
  c.network.arch = 'nope'
  c.solver.lr = -1.0
  c.data.label_list = '/nonexistent/labels.csv'
  with pytest.raises(ValueError) as err:
    config_checks.check(c, 'train', 4, 1)
  message = str(err.value)
  assert '4 problems' in message
  for field in ('data.batch_size=6', 'network.arch', 'solver.lr', 'data.label_list'):
    assert field in message


def test_check_passes_large_mesh_and_multi_process(tmp_path):
  c = write_files(tmp_path, get_config('k400', 'arch=ViT-B/16,frames=32'))
  c.mesh.data, c.mesh.fsdp = -1, 4
  with pytest.raises(ValueError, match='eval.batch_size=32 is not divisible by the data-parallel size 64'):
    config_checks.check(c, 'train', num_devices=64, process_count=16)
  c.eval.batch_size = 64
  config_checks.check(c, 'train', num_devices=64, process_count=16)
  c.data.num_segments = heads.FRAME_POSITIONS  # the table's last row is still fine
  config_checks.check(c, 'train', 64, 16)
  c.network.sim_header = 'meanP'  # no frame table: any number of frames
  c.data.num_segments = 96
  config_checks.check(c, 'train', 64, 16)


@pytest.mark.parametrize('mesh,devices,expected', [
    ({'data': -1, 'fsdp': 1, 'tensor': 1}, 8, {'data': 8, 'fsdp': 1, 'tensor': 1}),
    ({'data': 2, 'fsdp': -1, 'tensor': 1}, 8, {'data': 2, 'fsdp': 4, 'tensor': 1}),
    ({'data': -1, 'fsdp': 2, 'tensor': 2}, 8, {'data': 2, 'fsdp': 2, 'tensor': 2}),
    ({'data': 4, 'fsdp': 2}, 8, {'data': 4, 'fsdp': 2, 'tensor': 1}),
    ({'data': 1, 'fsdp': 1, 'tensor': 1}, 1, {'data': 1, 'fsdp': 1, 'tensor': 1}),
])
def test_resolve_mesh_shape(mesh, devices, expected):
  shape = sharding.resolve_mesh_shape(ml_collections.ConfigDict(mesh), devices)
  assert shape == expected and list(shape) == ['data', 'fsdp', 'tensor']
  assert sharding.data_parallel_size(shape) == expected['data'] * expected['fsdp']


def _parse_flags(*args):
  """What launch.py does: a locked config from a file, overridden field by field on the command line."""
  fv = flags.FlagValues()
  argv = ['launch.py', *args]
  config_flags.DEFINE_config_file('config', flag_values=fv, sys_argv=argv)
  fv(argv)
  return fv.config


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # inside config_flags
def test_config_flags_overrides_and_refusals(monkeypatch):
  monkeypatch.chdir(ROOT)
  c = _parse_flags('--config=configs/k400.py:arch=ViT-B/16,frames=16,runlocal', '--config.data.batch_size=8',
                   '--config.solver.betas=(0.9,0.99)', '--config.network.sim_header=meanP')
  assert (c.network.arch, c.data.num_segments, c.data.batch_size) == ('tiny', 4, 8)
  assert tuple(c.solver.betas) == (0.9, 0.99) and c.network.sim_header == 'meanP'
  with pytest.raises(AttributeError, match='Did you mean "batch_size"'):  # an unknown field
    _parse_flags('--config=configs/k400.py', '--config.data.batch_sise=3')
  with pytest.raises(flags.IllegalFlagValueError, match='batch_size=abc'):  # a wrong type
    _parse_flags('--config=configs/k400.py', '--config.data.batch_size=abc')
  with pytest.raises(flags.IllegalFlagValueError, match='solver.lr'):
    _parse_flags('--config=configs/k400.py', '--config.solver.lr=fast')
  c = _parse_flags('--config=configs/k400.py')
  with pytest.raises(AttributeError):  # locked: code cannot add fields either
    c.data.new_field = 1


def test_packed_source_takes_directories(tmp_path):
  c = _good(tmp_path)
  c.data.source = 'packed'
  for field in ('train_list', 'val_list'):
    packed = tmp_path / f'packed_{field}'
    packed.mkdir()
    (packed / 'records.jsonl').write_text('')
    c.data[field] = str(packed)
  config_checks.check(c, 'train', 1, 1)
  config_checks.check(c, 'eval', 1, 1)
  config_checks.check(c, 'few_shot', 1, 1)  # K shots are drawn from the packed records too


@pytest.mark.parametrize('key, resolve, on_platforms, explicit', [
    ('dtype', 'compute_dtype', ('float32', 'bfloat16', 'bfloat16'), 'bfloat16'),
    ('remat', 'remat_mode', ('dots', 'none', 'none'), 'full')])
def test_auto_settings_follow_the_platform_and_an_explicit_value_wins(key, resolve, on_platforms, explicit):
  from actionclip_jax.runs import builders
  c = get_config('k400')
  assert c.network[key] == 'auto'
  assert [getattr(builders, resolve)('auto', p) for p in ('cpu', 'gpu', 'tpu')] == list(on_platforms)
  assert getattr(builders, resolve)(explicit, 'cpu') == explicit
  assert getattr(builders.model_config(c).clip, key) == on_platforms[0]  # the tests run on the CPU
  assert getattr(builders.model_config(c, platform='tpu').clip, key) == on_platforms[2]  # a target, not the host
  c.network[key] = explicit
  assert getattr(builders.model_config(c).clip, key) == explicit


def test_a_run_saved_with_remat_as_a_bool_still_builds_its_model():
  """predict reads a run's config.json back; runs saved before the remat modes wrote true / false."""
  import json

  import ml_collections

  from actionclip_jax.runs import builders
  saved = json.loads(get_config('k400').to_json_best_effort())
  for value, mode in ((True, 'full'), (False, 'none')):
    saved['network']['remat'] = value
    assert builders.model_config(ml_collections.ConfigDict(saved)).clip.remat == mode


def test_a_shipped_label_list_is_taken_by_name_and_the_config_keeps_the_name(tmp_path):
  from actionclip_jax import labels
  from actionclip_jax.runs import inputs
  c = write_files(tmp_path, get_config('k400', 'runlocal'), num_classes=400)
  c.data.update(label_list='k400', num_classes=400)
  config_checks.check(c, 'train', 1, 1)  # its 400 classes against data.num_classes, the lists' label ids
  assert c.data.label_list == 'k400'  # config.json keeps the name: the run directory does not depend on this machine
  names = inputs.label_names(c.data)
  assert len(names) == 400 and names[:2] == ['abseiling', 'air drumming'] and names == labels.read('k400')
  c.data.label_list = 'hmdb51'  # a name goes through the same checks as a file
  with pytest.raises(ValueError, match=r"data.label_list='hmdb51' has 51 classes but data.num_classes=400"):
    config_checks.check(c, 'train', 1, 1)
  c.data.label_list = 'k401'
  with pytest.raises(ValueError, match=r"data.label_list='k401' does not exist, nor is it a shipped label list "
                                       r"\(k400, ucf101, hmdb51"):
    config_checks.check(c, 'train', 1, 1)


def _k600(tmp_path, spelled=lambda n: n):
  """A zero-shot k600 config on a made-up K600 label list: K400's classes and the three splits' (respelled)."""
  from actionclip_jax import labels
  novel = sorted(set().union(*(labels.read(s) for s in labels.LITERATURE_K600_SPLITS)))
  c = write_files(tmp_path, get_config('zero_shot', 'dataset=k600,runlocal'))
  names = labels.read('k400') + [spelled(n) for n in novel]
  (tmp_path / 'labels.csv').write_text('id,name\n' + ''.join(f'{i},"{n}"\n' for i, n in enumerate(names)))
  c.eval.k600_splits = 'literature'
  return c


def test_the_k600_literature_splits_are_checked_against_the_label_list_by_name(tmp_path):
  c = _k600(tmp_path, spelled=lambda n: n.upper().replace(' ', '_'))
  config_checks.check(c, 'zero_shot', 1, 1)
  c.eval.known_label_list = 'k400'  # the splits' classes are novel to it
  config_checks.check(c, 'zero_shot', 1, 1)
  c.eval.k600_splits = 'k600_zs1,k400'  # K400's classes are not novel
  with pytest.raises(ValueError, match=r"eval.k600_splits: 400 of the splits' classes are in eval.known_label_list"):
    config_checks.check(c, 'zero_shot', 1, 1)
  c.eval.update(k600_splits='literature', protocol='full')
  with pytest.raises(ValueError, match=r"eval.k600_splits='literature' is for eval.protocol=k600, not full"):
    config_checks.check(c, 'zero_shot', 1, 1)


def test_a_k600_split_class_the_label_list_lacks_stops_the_run_at_start(tmp_path):
  c = _k600(tmp_path, spelled=lambda n: 'lock-picking' if n == 'lock picking' else n)  # still the same class
  config_checks.check(c, 'zero_shot', 1, 1)
  c = _k600(tmp_path, spelled=lambda n: 'picking locks' if n == 'lock picking' else n)
  with pytest.raises(ValueError, match=r"eval.k600_splits: k600_zs1: 1 of its 160 classes are not in the label list, "
                                       r"e.g. 'lock picking'"):
    config_checks.check(c, 'zero_shot', 1, 1)
