"""The 18 VTAB-v2 tasks: label functions against VTAB's definitions (hand-computed cases and
a numpy re-statement), splits, the 1000-example support set, the query split walked once in
chunks, and clear errors for data that are missing or out of range."""

import numpy as np
import pytest
import tensorflow as tf

import vtab_mock
from lite_tf.data import vtab

pytest.importorskip('tensorflow_datasets')

# The VTAB-v2 task list of the LITE paper (VTAB+MD): DTD left out (it is in MD-v2).
EXPECTED = {
    'caltech101': ('natural', 102), 'cifar100': ('natural', 100),
    'oxford_flowers102': ('natural', 102), 'oxford_iiit_pet': ('natural', 37),
    'sun397': ('natural', 397), 'svhn': ('natural', 10),
    'eurosat': ('specialized', 10), 'resisc45': ('specialized', 45),
    'patch_camelyon': ('specialized', 2), 'diabetic_retinopathy': ('specialized', 5),
    'clevr_count': ('structured', 8), 'clevr_distance': ('structured', 6),
    'dsprites_location': ('structured', 16), 'dsprites_orientation': ('structured', 16),
    'smallnorb_azimuth': ('structured', 18), 'smallnorb_elevation': ('structured', 9),
    'dmlab': ('structured', 6), 'kitti_distance': ('structured', 4),
}


def _label(task_name, example):
  as_tensors = tf.nest.map_structure(tf.convert_to_tensor, example)
  return int(vtab.get_task(task_name).label_fn(as_tensors))


def test_the_eighteen_tasks_and_their_classes():
  assert {t.name: (t.group, t.num_classes) for t in vtab.TASKS} == EXPECTED


@pytest.mark.parametrize('task_name,example,label', [
    ('clevr_count', {'objects': {'size': [0, 1, 1], 'pixel_coords': [[0, 0, 9.0]] * 3}}, 0),
    ('clevr_count', {'objects': {'size': [0] * 10, 'pixel_coords': [[0, 0, 9.0]] * 10}}, 7),
    # closest object at depth 9.2: above 0, 8, 8.5, 9 -> bin 3
    ('clevr_distance', {'objects': {'size': [0, 0], 'pixel_coords': [[1, 2, 12.0],
                                                                     [3, 4, 9.2]]}}, 3),
    ('clevr_distance', {'objects': {'size': [0], 'pixel_coords': [[1, 2, 7.9]]}}, 0),
    ('clevr_distance', {'objects': {'size': [0], 'pixel_coords': [[1, 2, 10.5]]}}, 5),
    ('dsprites_location', {'label_x_position': 31}, 15),
    ('dsprites_location', {'label_x_position': 5}, 2),
    ('dsprites_orientation', {'label_orientation': 39}, 15),
    ('dsprites_orientation', {'label_orientation': 5}, 2),
    ('dsprites_orientation', {'label_orientation': 4}, 1),
    ('smallnorb_azimuth', {'label_azimuth': 17}, 17),
    ('smallnorb_elevation', {'label_elevation': 8}, 8),
    ('dmlab', {'label': 5}, 5),
    # a pedestrian (type 3) at 2 m and a car at 15 m: the car counts -> 8..20 m, bin 1
    ('kitti_distance', {'objects': {'type': [3, 0], 'location': [[0, 0, 2.0],
                                                                 [1, 1, 15.0]]}}, 1),
    ('kitti_distance', {'objects': {'type': [2], 'location': [[0, 0, 5.0]]}}, 0),
    ('kitti_distance', {'objects': {'type': [1], 'location': [[0, 0, 30.0]]}}, 2),
    # no vehicle at all (only a cyclist, type 5): the fourth class
    ('kitti_distance', {'objects': {'type': [5], 'location': [[0, 0, 3.0]]}}, 3),
])
def test_structured_label_functions_hand_computed(task_name, example, label):
  def arrays(value):
    if isinstance(value, dict):
      return {k: arrays(v) for k, v in value.items()}
    array = np.asarray(value)
    return array.astype(np.float32 if array.dtype.kind == 'f' else np.int64)
  assert _label(task_name, arrays(example)) == label


@pytest.mark.parametrize('task_name', sorted(EXPECTED))
def test_label_function_matches_vtab_on_many_examples(task_name):
  dataset = vtab.get_task(task_name).tfds_name.split('/')[0]
  for i in range(0, 400, 7):
    example = vtab_mock.raw_example(dataset, i)
    assert _label(task_name, example) == vtab_mock.reference_label(task_name, example), i


# VTAB's train800val200 and test splits for the TFDS split sizes (task_adaptation/data).
SPLITS = {
    'caltech101': ('train[:800]+train[2754:2954]', 'test'),
    'cifar100': ('train[:800]+train[45000:45200]', 'test'),
    'oxford_flowers102': ('train[:800]+validation[:200]', 'test'),
    'oxford_iiit_pet': ('train[:800]+train[2944:3144]', 'test'),
    'sun397': ('train[:800]+validation[:200]', 'test'),
    'svhn': ('train[:800]+train[65931:66131]', 'test'),
    'eurosat': ('train[:800]+train[16200:16400]', 'train[21600:]'),
    'resisc45': ('train[:800]+train[18900:19100]', 'train[25200:]'),
    'patch_camelyon': ('train[:800]+validation[:200]', 'test'),
    'diabetic_retinopathy': ('train[:800]+validation[:200]', 'test'),
    'clevr_count': ('train[:800]+train[63000:63200]', 'validation'),
    'clevr_distance': ('train[:800]+train[63000:63200]', 'validation'),
    'dsprites_location': ('train[:800]+train[589824:590024]', 'train[663552:]'),
    'dsprites_orientation': ('train[:800]+train[589824:590024]', 'train[663552:]'),
    'smallnorb_azimuth': ('train[:800]+test[:200]', 'test[50%:]'),
    'smallnorb_elevation': ('train[:800]+test[:200]', 'test[50%:]'),
    'dmlab': ('train[:800]+validation[:200]', 'test'),
    'kitti_distance': ('train[:800]+validation[:200]', 'test'),
}


@pytest.mark.parametrize('task_name', sorted(EXPECTED))
def test_task_under_mock_data(task_name, tmp_path):
  """Support: 1000 examples of VTAB's train800val200 split, labels as VTAB's; query: every
  test example once, in order, in chunks of query_size."""
  task = vtab.get_task(task_name)
  dataset = task.tfds_name.split('/')[0]
  vtab_mock.REQUESTED_SPLITS.clear()
  with vtab_mock.mocked():
    source = vtab.VtabTaskSource(task_name, data_dir=str(tmp_path), image_size=8,
                                 query_size=400)
    episodes = list(source.episodes())
  assert [s for _, s in vtab_mock.REQUESTED_SPLITS] == list(SPLITS[task_name])
  assert source.support_images.shape == (1000, 8, 8, 3)
  assert source.support_images.dtype == tf.uint8
  support_raw = [vtab_mock.raw_example(dataset, i) for i in range(1000)]
  support_task_labels = np.array([vtab_mock.reference_label(task_name, e) for e in support_raw])
  np.testing.assert_array_equal(source.present_classes[source.support_labels.numpy()],
                                support_task_labels)
  assert source.way == len(np.unique(support_task_labels)) <= task.num_classes
  # the query split, walked once: chunks of 400, 400, 350 with the labels in split order
  n = vtab_mock.NUM_EXAMPLES
  assert [len(e['query_labels']) + e['query_dropped'] for e in episodes] == [400, 400, 350]
  query_task_labels = np.array([vtab_mock.reference_label(task_name, vtab_mock.raw_example(
      dataset, 100000 + i)) for i in range(n)])
  present = np.isin(query_task_labels, source.present_classes)
  got = np.concatenate([source.present_classes[e['query_labels'].numpy()] for e in episodes])
  np.testing.assert_array_equal(got, query_task_labels[present])
  assert sum(e['query_dropped'] for e in episodes) == int((~present).sum())
  # pixels: a constant grey level per example survives the resize (first query example: i)
  i = int(np.flatnonzero(present)[0])
  value = (100000 + i) % 2 * 255 if dataset == 'dsprites' else (100000 + i) % 251
  np.testing.assert_array_equal(episodes[0]['query_images'][0].numpy(),
                                np.full([8, 8, 3], value, np.uint8))


def test_missing_dataset_names_tfds_name_version_and_the_command(tmp_path):
  with pytest.raises(vtab.VtabDataError) as e:
    vtab.VtabTaskSource('clevr_count', data_dir=str(tmp_path))
  message = str(e.value)
  assert "'clevr_count'" in message and 'clevr (version 3.*.*)' in message
  assert f'tfds build clevr:3.1.0 --data_dir={tmp_path}' in message
  assert 'not prepared' in message


def test_out_of_range_label_is_named(tmp_path, monkeypatch):
  # A CLEVR scene with 12 objects has no VTAB class (count - 3 = 9 >= 8).
  real = vtab_mock.raw_example

  def with_a_crowded_scene(dataset, i):
    ex = real(dataset, i)
    if i == 5:
      ex['objects'] = {'size': np.zeros([12], np.int64),
                       'pixel_coords': np.full([12, 3], 9.0, np.float32)}
    return ex
  monkeypatch.setattr(vtab_mock, 'raw_example', with_a_crowded_scene)
  with vtab_mock.mocked(), pytest.raises(vtab.VtabDataError,
                                         match=r"'clevr_count': support example 5 .* label 9"):
    vtab.VtabTaskSource('clevr_count', data_dir=str(tmp_path), image_size=8)


def test_unknown_task_and_bad_support_option():
  with pytest.raises(ValueError, match='unknown VTAB task .*clevr_count'):
    vtab.get_task('clevr-count')
  with pytest.raises(ValueError, match="support must be 'train800val200' or 'first1000'"):
    vtab.VtabTaskSource('dmlab', support='train1000')


def test_vtab_md_suite_through_evaluate_binary(trained_demo_dir, fixture_dir, tmp_path):
  """bin/evaluate.py --gin_config=gin/vtab_md.gin on three VTAB tasks under mock TFDS data and
  on the Meta-Dataset fixture standing in for MD-v2's DTD: the table with the paper's
  aggregates, the chart, and the absent datasets listed."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from conftest import REPO_ROOT  # pylint: disable=g-import-not-at-top
  records_root = tmp_path / 'records'
  records_root.mkdir()
  os.symlink(fixture_dir, records_root / 'dtd')
  # MD-v2's DTD from saved episodes: 4 fixed test episodes of the fixture
  from lite_tf.data import saved_episodes  # pylint: disable=g-import-not-at-top,g-multiple-import
  from lite_tf.data.meta_dataset import reader  # pylint: disable=g-import-not-at-top,g-multiple-import
  (tmp_path / 'episodes').mkdir()
  saved_episodes.dump_episodes(reader.RecordsEpisodeSource(fixture_dir, 'test', image_size=8),
                               4, str(tmp_path / 'episodes' / 'dtd.json'))
  out = tmp_path / 'eval'
  result = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, 'tests', 'vtab_mock.py'),
       os.path.join(REPO_ROOT, 'bin', 'evaluate.py'), f'--train_dir={trained_demo_dir}',
       f"--gin_config={os.path.join(REPO_ROOT, 'gin', 'vtab_md.gin')}",
       f"--gin_bindings=run_vtab_md_evaluation.md_records_root = '{records_root}'",
       f"--gin_bindings=run_vtab_md_evaluation.vtab_data_dir = '{tmp_path / 'tfds'}'",
       "--gin_bindings=run_vtab_md_evaluation.vtab_tasks = "
       "['svhn', 'eurosat', 'clevr_count']",
       '--gin_bindings=run_vtab_md_evaluation.max_query = 250',
       f"--gin_bindings=run_vtab_md_evaluation.md_episodes_dir = '{tmp_path / 'episodes'}'",
       '--num_episodes=5', f'--output_dir={out}'],
      capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((out / 'vtab_md_results.json').read_text())
  rows = {r['task']: r for r in report['results']}
  assert set(rows) == {'dtd', 'svhn', 'eurosat', 'clevr_count', 'MD-v2 (1/8 tasks)',
                       'VTAB all (3/18 tasks)', 'VTAB natural (1/6 tasks)',
                       'VTAB specialized (1/4 tasks)', 'VTAB structured (1/8 tasks)'}
  assert rows['dtd']['n'] == 4 and rows['dtd']['unit'] == 'saved episodes (dtd.json)'
  for name in ('svhn', 'eurosat', 'clevr_count'):
    assert rows[name]['n'] == 250 and 0.0 <= rows[name]['accuracy'] <= 1.0
    p = rows[name]['accuracy']
    assert abs(rows[name]['ci95'] - 1.96 * np.sqrt(p * (1 - p) / 250)) < 1e-9
    assert rows[name]['forward_passes'] == 1 and rows[name]['adapt_macs'] > 0
    assert rows[name]['tfds'].split(':')[1].count('.') == 2  # the version actually read
  vtab_all = rows['VTAB all (3/18 tasks)']
  assert abs(vtab_all['accuracy'] - np.mean([rows[n]['accuracy'] for n in
                                             ('svhn', 'eurosat', 'clevr_count')])) < 1e-12
  assert rows['MD-v2 (1/8 tasks)']['accuracy'] == rows['dtd']['accuracy']
  assert sorted(report['missing']) == sorted(
      f'MD-v2/{n}' for n in ('omniglot', 'aircraft', 'cu_birds', 'quickdraw', 'fungi',
                             'traffic_sign', 'mscoco'))
  table = (out / 'vtab_md_table.md').read_text()
  assert 'VTAB structured (1/8 tasks)' in table and 'Not evaluated (7, data absent)' in table
  assert (out / 'vtab_md_chart.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert 'VTAB all (3/18 tasks)' in result.stdout
