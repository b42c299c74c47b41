"""Saved evaluation episodes (Meta-Dataset's dump/read_episodes use) and the Traffic Signs
trap: a class whose records are in track order must still give shuffled episodes."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from lite_tf.data.meta_dataset import dataset_spec as spec_lib
from lite_tf.data.meta_dataset import reader
from lite_tf.data.meta_dataset import sampling
from lite_tf.data import saved_episodes


def _write_records(directory, counts):
  """A records folder: class c has counts[c] records (one shared tiny PNG), all TEST."""
  os.makedirs(directory, exist_ok=True)
  png = tf.io.encode_png(tf.zeros([4, 4, 3], tf.uint8)).numpy()
  for c, n in enumerate(counts):
    with tf.io.TFRecordWriter(os.path.join(directory, f'{c}.tfrecords')) as w:
      for _ in range(n):
        w.write(tf.train.Example(features=tf.train.Features(feature={
            'image': tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
            'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[c]))}))
                .SerializeToString())
  spec_lib.save(spec_lib.DatasetSpec(
      name='tracks', classes_per_split={'TRAIN': 0, 'VALID': 0, 'TEST': len(counts)},
      images_per_class=dict(enumerate(counts)),
      class_names={c: f'sign{c}' for c in range(len(counts))}, path=directory), directory)


def test_a_class_in_track_order_gives_shuffled_episodes(tmp_path):
  """Class 0: 1500 records in 50 tracks of 30 consecutive frames (as GTSRB's files are). Its
  first episode's 10 images must be a uniform draw of the 1500, not of the first records (a
  1000-record shuffle buffer only ever yields the first ~1000 first)."""
  _write_records(str(tmp_path), [1500, 30, 30, 30, 30])
  config = sampling.EpisodeDescriptionConfig(num_ways=5, num_support=5, num_query=5)
  positions = []
  for seed in range(60):
    source = reader.RecordsEpisodeSource(str(tmp_path), 'test', image_size=8, config=config,
                                         seed=seed)
    description, taken = next(source.descriptions_and_records())
    row = [c for c, _, _ in description].index(0)
    got = [t[3] for t in taken[row]]
    assert len(set(got)) == 10
    positions += got
  positions = np.array(positions)
  # uniform over 0..1499: a third of 600 draws (200 +/- 12) in the last third
  assert 150 < np.sum(positions >= 1000) < 250
  tracks = positions.reshape(60, 10) // 30
  assert np.mean([len(set(t)) for t in tracks]) > 8.5  # 10 draws from 50 tracks: ~9.1
  # the bounded buffer of Meta-Dataset's reader, by contrast (shuffle_buffer=1000)
  buffered = reader.RecordsEpisodeSource(str(tmp_path), 'test', image_size=8, config=config,
                                         seed=0, shuffle_buffer=1000)
  description, taken = next(buffered.descriptions_and_records())
  assert max(t[3] for t in taken[[c for c, _, _ in description].index(0)]) < 1010


def _model_accuracy(source, num_episodes):
  """A fixed, data-dependent score per episode: nearest class mean of raw pixels."""
  accuracies = []
  for e in source.episodes():
    s = np.asarray(e['support_images']).reshape(len(e['support_labels']), -1)
    q = np.asarray(e['query_images']).reshape(len(e['query_labels']), -1)
    means = np.stack([s[e['support_labels'] == k].mean(0) for k in range(int(e['way']))])
    predictions = np.argmin(((q[:, None] - means[None]) ** 2).sum(-1), axis=1)
    accuracies.append(np.mean(predictions == e['query_labels']))
    if len(accuracies) == num_episodes:
      break
  return accuracies


def test_dump_and_read_back_gives_the_same_episodes(fixture_dir, tmp_path):
  source = reader.RecordsEpisodeSource(fixture_dir, 'test', image_size=16, seed=5)
  path = str(tmp_path / 'dtd_test.json')
  assert saved_episodes.dump_episodes(source, 6, path) == 6
  saved = json.loads(open(path).read())
  assert saved['split'] == 'TEST' and saved['seed'] == 5 and len(saved['episodes']) == 6
  read = saved_episodes.SavedEpisodesSource(path, fixture_dir, image_size=16)
  fresh = list(zip(range(6), source.episodes()))
  for (_, a), b in zip(fresh, read.episodes()):
    for key in ('support_class_ids', 'query_class_ids', 'support_labels', 'query_labels'):
      np.testing.assert_array_equal(a[key], b[key])
    np.testing.assert_array_equal(a['support_images'], b['support_images'])
    np.testing.assert_array_equal(a['query_images'], b['query_images'])
  # evaluating twice from the file: identical accuracies, and those of the source itself
  first = _model_accuracy(saved_episodes.SavedEpisodesSource(path, fixture_dir, 16), 6)
  second = _model_accuracy(saved_episodes.SavedEpisodesSource(path, fixture_dir, 16), 6)
  assert first == second == _model_accuracy(
      reader.RecordsEpisodeSource(fixture_dir, 'test', image_size=16, seed=5), 6)
  assert len(list(read.episodes(start=4))) == 2


def test_a_file_for_another_spec_is_refused(fixture_dir, tmp_path):
  path = str(tmp_path / 'episodes.json')
  saved_episodes.dump_episodes(reader.RecordsEpisodeSource(fixture_dir, 'test', image_size=8),
                               2, path)
  other = tmp_path / 'other'
  shutil.copytree(fixture_dir, other)
  spec = json.loads((other / 'dataset_spec.json').read_text())
  spec['class_names']['40'] = 'renamed'
  (other / 'dataset_spec.json').write_text(json.dumps(spec))
  with pytest.raises(saved_episodes.SavedEpisodesError, match=r'episodes\.json: written for '
                     r"dataset 'glyphs_dtd' .* belong to other records"):
    saved_episodes.SavedEpisodesSource(path, str(other))
  # whitespace and key order are not a different spec
  with open(os.path.join(fixture_dir, 'dataset_spec.json')) as f:
    original = json.load(f)
  (other / 'dataset_spec.json').write_text(json.dumps(original, indent=4, sort_keys=True))
  saved_episodes.SavedEpisodesSource(path, str(other))
  with pytest.raises(saved_episodes.SavedEpisodesError, match='not a saved-episodes file'):
    (tmp_path / 'bad.json').write_text('{"episodes": []}')
    saved_episodes.SavedEpisodesSource(str(tmp_path / 'bad.json'), fixture_dir)


def test_dump_episodes_binary(fixture_dir, tmp_path):
  from conftest import first_line, run_binary  # pylint: disable=g-import-not-at-top,g-multiple-import
  out = tmp_path / 'dtd_test.json'
  result = run_binary('dump_episodes.py', f'--records_dir={fixture_dir}', '--split=test',
                      '--num_episodes=3', '--seed=2', f'--output={out}')
  assert result.returncode == 0, result.stderr[-2000:]
  assert '3 test episodes of glyphs_dtd written' in result.stdout
  source = reader.RecordsEpisodeSource(fixture_dir, 'test', image_size=8, seed=2)
  expected = [[[c, s, q, [t[3] for t in records]] for (c, s, q), records in zip(d, taken)]
              for _, (d, taken) in zip(range(3), source.descriptions_and_records())]
  assert json.loads(out.read_text())['episodes'] == expected
  bad = run_binary('dump_episodes.py', f'--records_dir={tmp_path}', f'--output={out}')
  assert bad.returncode == 1
  assert first_line(bad.stderr).startswith(f"error: --records_dir='{tmp_path}': no "
                                           'dataset_spec.json')


def test_fewer_episodes_than_asked_for_are_refused():
  """A saved-episodes file of 3 episodes evaluated with --num_episodes=50 must not report a
  mean over 50 with its CI."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from conftest import small_episode  # pylint: disable=g-import-not-at-top
  from lite_tf.training import evaluate  # pylint: disable=g-import-not-at-top
  episodes = [small_episode(seed=s).to_dict() for s in range(3)]
  predict = lambda e: tf.one_hot(e.query_labels, 3)
  mean, _, accuracies, _ = evaluate.evaluate_episodes(predict, iter(episodes), 3)
  assert mean == 1.0 and len(accuracies) == 3
  with pytest.raises(ValueError, match='the episode source ended after 3 episodes, fewer than '
                     'the 50 asked for'):
    evaluate.evaluate_episodes(predict, iter(episodes), 50)


def test_an_episode_with_a_class_of_another_split_is_refused(fixture_dir, tmp_path):
  path = tmp_path / 'episodes.json'
  saved_episodes.dump_episodes(reader.RecordsEpisodeSource(fixture_dir, 'test', image_size=8),
                               2, str(path))
  saved = json.loads(path.read_text())
  train_class = reader.RecordsEpisodeSource(fixture_dir, 'train', image_size=8).spec.class_ids(
      'train')[0]
  saved['episodes'][1][0][0] = int(train_class)
  path.write_text(json.dumps(saved))
  with pytest.raises(saved_episodes.SavedEpisodesError,
                     match=rf'episode 1 holds classes \[{train_class}\], which are not in the '
                     'TEST split'):
    saved_episodes.SavedEpisodesSource(str(path), fixture_dir)
