"""Meta-Dataset users' vocabulary: its spec and sampler method names, its split enums, int32
class ids, and bin/train.py on a user's own tf.data pipeline of Meta-Dataset episodes."""

import enum
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT
from lite_tf.data import adapters
from lite_tf.data.meta_dataset import dataset_spec
from lite_tf.data.meta_dataset import reader
from lite_tf.data.meta_dataset import sampling
import md_style_pipeline

# As meta_dataset/learning_spec.py defines it.
Split = enum.Enum('Split', ['TRAIN', 'VALID', 'TEST'])


def test_spec_names_and_split_enums(fixture_dir):
  spec = dataset_spec.load_dataset_spec(fixture_dir)
  assert spec == dataset_spec.load(fixture_dir)
  assert spec.get_classes(Split.TRAIN) == range(0, 33)
  assert spec.get_classes(Split.VALID) == spec.class_ids('valid') == range(33, 40)
  assert spec.get_classes(Split.TEST) == spec.get_classes('TEST') == range(40, 47)
  assert spec.get_total_images_per_class(35) == 20
  assert spec.get_total_images_per_class() == 47 * 20
  with pytest.raises(dataset_spec.DatasetSpecError, match='convert_from_pkl=True'):
    dataset_spec.load_dataset_spec(fixture_dir, convert_from_pkl=True)
  with pytest.raises(dataset_spec.DatasetSpecError, match='pools'):
    spec.get_total_images_per_class(3, pool='train')


def test_an_enum_of_other_names_is_a_clear_error(fixture_dir):
  Other = enum.Enum('Other', ['TRAINING'])  # pylint: disable=invalid-name
  with pytest.raises(dataset_spec.DatasetSpecError,
                     match='unknown split .*TRAINING.* an enum member named TRAIN, VALID or TEST'):
    dataset_spec.load(fixture_dir).get_classes(Other.TRAINING)
  with pytest.raises(dataset_spec.DatasetSpecError, match='unknown split 3'):
    dataset_spec.load(fixture_dir).get_classes(3)


def test_bilevel_names():
  spec = dataset_spec.BiLevelDatasetSpec(
      name='omni', superclasses_per_split={'TRAIN': 2, 'VALID': 1, 'TEST': 1},
      classes_per_superclass={0: 6, 1: 7, 2: 5, 3: 8}, images_per_class={c: 20 for c in range(26)},
      superclass_names={i: f'a{i}' for i in range(4)}, class_names={c: str(c) for c in range(26)},
      path='/x')
  assert spec.get_superclasses(Split.TRAIN) == range(0, 2)
  assert spec.get_superclasses(Split.TEST) == range(3, 4)
  assert spec.get_classes(Split.VALID) == range(13, 18)
  # Characters 4 and 1 of alphabet 3 (classes 18..25, the test split starting at 18).
  assert spec.get_class_ids_from_superclass_subclass_inds(Split.TEST, 3, [4, 1]) == (
      [4, 1], [22, 19])


def test_sample_episode_description_gives_split_relative_ids(fixture_dir):
  spec = dataset_spec.load(fixture_dir)
  ours = sampling.EpisodeDescriptionSampler(spec, Split.VALID, seed=4)
  theirs = sampling.EpisodeDescriptionSampler(spec, 'valid', seed=4)
  for _ in range(20):
    absolute = ours.sample()
    relative = theirs.sample_episode_description()
    assert [(k - 33, s, q) for k, s, q in absolute] == list(relative)
    assert all(0 <= k < 7 for k, _, _ in relative)


def test_records_episodes_take_enum_splits_and_give_int32_class_ids(fixture_dir):
  by_enum = reader.records_episodes(Split.VALID, records_dir=fixture_dir, image_size=16)
  by_name = reader.records_episodes('valid', records_dir=fixture_dir, image_size=16)
  a, b = next(by_enum.episodes()), next(by_name.episodes())
  assert a['support_class_ids'].dtype == np.int32 and a['query_class_ids'].dtype == np.int32
  np.testing.assert_array_equal(a['support_class_ids'], b['support_class_ids'])
  np.testing.assert_array_equal(a['support_images'], b['support_images'])
  assert by_enum.output_signature()['support_class_ids'].dtype == tf.int32
  element = next(iter(by_enum.as_dataset(num_episodes=1)))
  assert element['query_class_ids'].dtype == tf.int32


def _raw(dataset, count):
  return [e for e, _ in itertools.islice(dataset.as_numpy_iterator(), count)]


def test_pipeline_episodes_start_keep_and_shard(fixture_dir):
  dataset = md_style_pipeline.md_style_pipeline('test', records_dir=fixture_dir, image_size=12)
  raw = _raw(dataset, 8)
  source = adapters.PipelineEpisodes(dataset)
  assert source.image_size == 12
  got = list(itertools.islice(source.episodes(start=3, keep=lambda i: i % 2 == 0), 2))
  for episode, expected in zip(got, [raw[4], raw[6]]):
    np.testing.assert_array_equal(episode['support_images'], expected[0])
    np.testing.assert_array_equal(episode['query_class_ids'], expected[5])
    assert episode['way'] == 5
  shard = list(source.as_dataset(num_episodes=2, start=1, shard=(3, 2)))  # elements 3 and 6
  for episode, expected in zip(shard, [raw[3], raw[6]]):
    np.testing.assert_array_equal(episode['support_class_ids'], expected[2])
  assert len(shard) == 2


def test_pipeline_errors_name_the_binding():
  with pytest.raises(ValueError, match=r"meta_dataset_pipeline.dataset_fn=<lambda>\('train'\) "
                     'must give a tf.data.Dataset of Meta-Dataset episodes; got list'):
    adapters.meta_dataset_pipeline('train', dataset_fn=lambda split: [1, 2])
  def numbers(split):
    del split
    return tf.data.Dataset.range(3)
  with pytest.raises(ValueError, match=r"run_training.episode_source=numbers\('valid'\): "
                     'expected a dataset of Meta-Dataset episodes'):
    adapters.make_episode_source(numbers, 'valid')


@pytest.mark.slow  # resume: tests/test_resume.py; pipelines: tests/test_data_adapters.py
def test_bin_train_on_a_users_meta_dataset_pipeline_and_resume(tmp_path, fixture_dir):
  """One gin binding plugs the pipeline in; a second run resumes at its checkpoint."""
  gin_file = tmp_path / 'users_pipeline.gin'
  gin_file.write_text(
      f"include '{os.path.join(REPO_ROOT, 'gin', 'demo_protonets.gin')}'\n"
      'import md_style_pipeline\n'
      'run_training.episode_source = @md_style_pipeline\n'
      f"md_style_pipeline.records_dir = '{fixture_dir}'\n")

  def train(steps):
    cmd = [sys.executable, os.path.join(REPO_ROOT, 'bin', 'train.py'),
           f'--train_dir={tmp_path / "run"}', f'--gin_config={gin_file}',
           f'--gin_bindings=run_training.num_steps={steps}',
           '--gin_bindings=run_training.steps_per_log=2',
           '--gin_bindings=run_training.valid_episodes=2',
           '--gin_bindings=run_training.test_episodes=3', '--gin_bindings=lite.num_backprop=4']
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=os.path.dirname(__file__)))

  first = train(2)
  assert first.returncode == 0, first.stderr[-3000:]
  assert '(95% CI over 3 test episodes)' in first.stdout
  second = train(4)
  assert second.returncode == 0, second.stderr[-3000:]
  assert 'resuming from' in second.stderr and 'at task 2' in second.stderr
  with open(tmp_path / 'run' / 'history.jsonl') as f:
    steps = [json.loads(line)['step'] for line in f if line.strip()]
  assert steps == [2, 4]
