"""Batch pipeline, Meta-Dataset pipeline adapter, multi-source mixing, augmentation, TFDS."""


import numpy as np
import pytest
import tensorflow as tf

from lite_tf import episode as episode_lib
from lite_tf.data import adapters
from lite_tf.data import batches
from lite_tf.data.meta_dataset import reader
from lite_tf.data.meta_dataset import sampling


def test_labelled_batches_cover_split_classes(fixture_dir):
  dataset, num_classes = batches.labelled_batches(fixture_dir, 'valid', image_size=32,
                                                  batch_size=20, repeat=False)
  assert num_classes == 7
  labels = np.concatenate([l.numpy() for _, l in dataset])
  assert sorted(np.bincount(labels).tolist()) == [20] * 7
  images, _ = next(iter(dataset))
  assert images.shape == (20, 32, 32, 3)


def _md_episode(way=3, shots=2, queries=4, size=8):
  rng = np.random.RandomState(0)
  return (rng.uniform(-1, 1, (way * shots, size, size, 3)).astype(np.float32),
          np.repeat(np.arange(way), shots).astype(np.int32),
          np.repeat(np.arange(100, 100 + way), shots).astype(np.int32),
          rng.uniform(-1, 1, (way * queries, size, size, 3)).astype(np.float32),
          np.repeat(np.arange(way), queries).astype(np.int32),
          np.repeat(np.arange(100, 100 + way), queries).astype(np.int32))


@pytest.mark.parametrize('with_source_id', [True, False])
def test_meta_dataset_pipeline_adapter(with_source_id):
  episode = _md_episode()
  element = (episode, 0) if with_source_id else episode
  dataset = tf.data.Dataset.from_generator(
      lambda: iter([element] * 2),
      output_signature=tf.nest.map_structure(
          lambda x: tf.TensorSpec(np.shape(x), tf.as_dtype(np.asarray(x).dtype)), element))
  out = next(iter(adapters.adapt_meta_dataset_pipeline(dataset)))
  assert int(out['way']) == 3 and out['support_labels'].dtype == tf.int32
  assert out['support_class_ids'].dtype == tf.int32
  episode_lib.validate_episode(episode_lib.Episode.from_dict(out), image_size=8)
  np.testing.assert_array_equal(out['query_images'], episode[3])


def test_adapter_rejects_other_pipelines():
  with pytest.raises(ValueError, match='expected a dataset of Meta-Dataset episodes'):
    adapters.adapt_meta_dataset_pipeline(tf.data.Dataset.range(3))


def test_multi_source_mixes_sources_uniformly(fixture_dir):
  config = sampling.EpisodeDescriptionConfig(num_ways=5, num_support=1, num_query=1)
  sources = [reader.RecordsEpisodeSource(fixture_dir, split, image_size=16, config=config)
             for split in ('train', 'test')]
  mixed = adapters.MultiSourceEpisodes(sources, seed=0)
  from_test = [int(e['support_class_ids'][0]) >= 40
               for _, e in zip(range(200), mixed.episodes())]
  assert 70 < sum(from_test) < 130


def test_support_augmentation_changes_support_only(fixture_dir):
  config = sampling.EpisodeDescriptionConfig(num_ways=5, num_support=2, num_query=2)
  plain = reader.RecordsEpisodeSource(fixture_dir, 'test', image_size=32, config=config, seed=4)
  jittered = reader.RecordsEpisodeSource(fixture_dir, 'test', image_size=32, config=config,
                                         seed=4, jitter_amount=4, gaussian_noise_std=0.05)
  a, b = next(plain.episodes()), next(jittered.episodes())
  np.testing.assert_array_equal(a['query_images'], b['query_images'])
  assert not np.allclose(a['support_images'], b['support_images'])
  assert b['support_images'].shape == a['support_images'].shape


def test_tfds_source_with_mock_data(tmp_path):
  tfds = pytest.importorskip('tensorflow_datasets')
  from lite_tf.data import tfds_source  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=60, policy=tfds.testing.MockPolicy.USE_CODE):
    source = tfds_source.TfdsEpisodeSource('cifar10', data_dir=str(tmp_path),
                                           support_split='train[:50]', image_size=16,
                                           query_size=25)
    episodes = list(source.episodes())
  # mock_data serves num_examples for every split string (it ignores the [:50] slice).
  assert source.way == 10 and source.support_images.shape == (60, 16, 16, 3)
  assert len(episodes) == 3  # 60 test examples in query chunks of 25
  for e in episodes:
    assert e['query_images'].shape[1:] == (16, 16, 3)
    present = set(source.support_labels.numpy().tolist())
    assert set(e['query_labels'].numpy().tolist()) <= present


def test_tfds_unprepared_dataset_is_a_clear_error(tmp_path):
  pytest.importorskip('tensorflow_datasets')
  from lite_tf.data import tfds_source  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="'cifar10' .* not prepared in data_dir"):
    tfds_source.TfdsEpisodeSource('cifar10', data_dir=str(tmp_path))


def test_multi_source_resumes_and_shards_like_one_stream(fixture_dir):
  config = sampling.EpisodeDescriptionConfig(num_ways=5, num_support=1, num_query=1)
  sources = [reader.RecordsEpisodeSource(fixture_dir, split, image_size=8, config=config,
                                         seed=i) for i, split in enumerate(('train', 'test'))]
  mixed = adapters.MultiSourceEpisodes(sources, seed=1)
  ids = lambda episodes: [tuple(e['support_class_ids'].tolist()) for e in episodes]
  full = ids(e for _, e in zip(range(10), mixed.episodes()))
  assert {c[0] >= 40 for c in full} == {True, False}  # both sources appear
  assert ids(e for _, e in zip(range(4), mixed.episodes(start=6))) == full[6:]
  shards = [ids(mixed.as_dataset(num_episodes=3, start=2, shard=(2, r)).as_numpy_iterator())
            for r in range(2)]
  assert [x for pair in zip(*shards) for x in pair] == full[2:8]


def test_multi_source_records_gin_source(fixture_dir):
  import gin  # pylint: disable=g-import-not-at-top
  from lite_tf import config as config_lib  # pylint: disable=g-import-not-at-top
  config_lib.register_configurables()
  with gin.unlock_config():
    gin.parse_config([f"multi_source_records_episodes.records_dirs = ['{fixture_dir}', "
                      f"'{fixture_dir}']", 'multi_source_records_episodes.image_size = 8'])
  try:
    source = reader.multi_source_records_episodes('valid')
    assert len(source.sources) == 2
    e = next(iter(source.as_dataset(num_episodes=1)))
    assert e['support_images'].shape[1:] == (8, 8, 3)
    assert set(e['support_class_ids'].numpy()) <= set(range(33, 40))
  finally:
    gin.clear_config()
  with pytest.raises(ValueError, match='records_dirs must be a non-empty list'):
    reader.multi_source_records_episodes('train', records_dirs=fixture_dir)


class _CountingSource:
  """episodes() without keep=: the mix reads and drops what it skips."""

  def __init__(self, name):
    self.name = name

  def episodes(self):
    index = 0
    while True:
      yield (self.name, index)
      index += 1


def test_multi_source_over_sources_without_keep():
  mixed = adapters.MultiSourceEpisodes([_CountingSource('a'), _CountingSource('b')], seed=3)
  full = [e for _, e in zip(range(12), mixed.episodes())]
  for name in 'ab':  # each source is read in order, nothing lost or repeated
    taken = [e for e in full if e[0] == name]
    assert taken == [(name, i) for i in range(len(taken))] and taken
  assert [e for _, e in zip(range(5), mixed.episodes(start=7))] == full[7:]
  odd = [e for _, e in zip(range(4), mixed.episodes(keep=lambda g: g % 2 == 1))]
  assert odd == full[1:9:2]
