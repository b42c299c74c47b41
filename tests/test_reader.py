"""Episodes from the Meta-Dataset fixture records."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from lite_tf import episode as episode_lib
from lite_tf.data.meta_dataset import dataset_spec
from lite_tf.data.meta_dataset import reader
from lite_tf.data.meta_dataset import records
from lite_tf.data.meta_dataset import sampling


def test_variable_episodes_from_fixture(fixture_dir):
  source = reader.RecordsEpisodeSource(fixture_dir, 'train', image_size=84, seed=1)
  for e in source.as_dataset(num_episodes=5):
    episode = episode_lib.Episode.from_dict(e)
    episode_lib.validate_episode(episode, image_size=84)
    way = int(e['way'])
    assert 5 <= way <= 33
    ids = e['support_class_ids'].numpy()
    assert set(ids) <= set(range(33)) and len(set(ids)) == way
    # Labels are positions in the class list; class ids agree with the labels.
    for label in range(way):
      assert len(set(ids[e['support_labels'].numpy() == label])) == 1
    assert float(tf.reduce_min(e['support_images'])) >= -1.0
    # 20 images per class: query shots = min(10, 20 // 2) = 10.
    assert len(e['query_labels']) == 10 * way


def test_images_in_an_episode_are_distinct_and_labelled_by_class(fixture_dir):
  config = sampling.EpisodeDescriptionConfig(num_ways=5, num_support=5, num_query=15)
  source = reader.RecordsEpisodeSource(fixture_dir, 'test', image_size=84, config=config,
                                       seed=2)
  e = source.episode_from_description(source.sampler.sample())
  images = np.concatenate([e['support_images'], e['query_images']])
  ids = np.concatenate([e['support_class_ids'], e['query_class_ids']])
  for class_id in set(ids):
    flat = images[ids == class_id].reshape(20, -1)
    reference, _ = records.read_class(source.spec, int(class_id), 84)
    reference = reference.numpy().reshape(20, -1)
    # Each episode image is one of the class's images, and all 20 appear once each.
    distances = np.abs(flat[:, None, :] - reference[None, :, :]).max(-1)
    matches = distances.argmin(1)
    assert distances.min(1).max() < 1e-5
    assert sorted(matches.tolist()) == list(range(20))


def test_uint8_episodes(fixture_dir):
  source = reader.RecordsEpisodeSource(fixture_dir, 'valid', image_size=32, seed=3,
                                       image_dtype='uint8')
  e = next(iter(source.as_dataset(num_episodes=1)))
  assert e['support_images'].dtype == tf.uint8 and e['support_images'].shape[1:] == (32, 32, 3)
  # By default records hold float32, Meta-Dataset's resized pixels exactly (TRAINING.md,
  # "Images held in memory"); uint8 rounds them.
  default = reader.RecordsEpisodeSource(fixture_dir, 'valid', image_size=32, seed=3)
  d = next(iter(default.as_dataset(num_episodes=1)))
  assert d['support_images'].dtype == tf.float32
  np.testing.assert_allclose(e['support_images'].numpy() / 127.5 - 1.0,
                             d['support_images'].numpy(), atol=0.5 / 127.5 + 1e-6)


def test_bad_records_are_named(fixture_dir, tmp_path):
  copy = tmp_path / 'glyphs'
  shutil.copytree(fixture_dir, copy)
  os.remove(copy / '41.tfrecords')
  with pytest.raises(records.RecordsError, match=r'41.tfrecords: missing records file of class 41'):
    reader.RecordsEpisodeSource(str(copy), 'test')
  shutil.copy(os.path.join(fixture_dir, '41.tfrecords'), copy / '41.tfrecords')
  data = (copy / '42.tfrecords').read_bytes()
  (copy / '42.tfrecords').write_bytes(data[:len(data) // 3])
  config = sampling.EpisodeDescriptionConfig(num_ways=7, num_support=5, num_query=5)
  source = reader.RecordsEpisodeSource(str(copy), 'test', config=config)
  with pytest.raises(records.RecordsError, match=r'42.tfrecords: (corrupt|class 42)'):
    source.episode_from_description(source.sampler.sample())
  with pytest.raises(records.RecordsError, match='has 20 images but an episode asks for 25'):
    source.episode_from_description(((40, 20, 5),))
  with pytest.raises(dataset_spec.DatasetSpecError, match="unknown split 'dev'"):
    reader.RecordsEpisodeSource(fixture_dir, 'dev')


def _ids(episodes):
  return [tuple(e['support_class_ids'].tolist()) + tuple(e['query_class_ids'].tolist())
          for e in episodes]


def test_episode_stream_is_a_function_of_the_seed(fixture_dir):
  """Every iteration replays the same episodes (validation sees the same set each epoch);
  start= and shard= select from that one stream and decode only what they keep."""
  config = sampling.EpisodeDescriptionConfig(num_ways=5, num_support=1, num_query=1)
  source = reader.RecordsEpisodeSource(fixture_dir, 'train', image_size=8, config=config,
                                       seed=3)
  first = [e for _, e in zip(range(7), source.episodes())]
  again = [e for _, e in zip(range(7), source.episodes())]
  assert _ids(first) == _ids(again)
  np.testing.assert_array_equal(first[6]['query_images'], again[6]['query_images'])
  assert len(set(_ids(first))) == 7
  assert _ids([e for _, e in zip(range(3), source.episodes(start=4))]) == _ids(first[4:])
  decoded = []
  original_decode = source._decode  # pylint: disable=protected-access
  source._decode = lambda *a, **k: decoded.append(1) or original_decode(*a, **k)  # pylint: disable=protected-access
  sharded = [{k: v.numpy() for k, v in e.items()}
             for e in source.as_dataset(num_episodes=2, start=1, shard=(3, 2))]
  assert _ids(sharded) == _ids([first[3], first[6]])
  np.testing.assert_array_equal(sharded[1]['support_images'], first[6]['support_images'])
  assert len(decoded) == 2 * 2  # support and query of the two kept episodes only


@pytest.mark.parametrize('image_dtype', ['float32', 'uint8'])
def test_large_tasks_decode_in_blocks_to_the_same_images(fixture_dir, monkeypatch, image_dtype):
  """A task of more than DECODE_BLOCK records is decoded a block at a time (the float32
  intermediates of N = 1000 at 224x224 are not all held at once): the same images as one
  decode of all its records, in order."""
  monkeypatch.setattr(reader, 'DECODE_BLOCK', 16)
  config = sampling.EpisodeDescriptionConfig(num_ways=5, num_support=9, num_query=5)
  source = reader.RecordsEpisodeSource(fixture_dir, 'train', image_size=20, config=config,
                                       seed=4, image_dtype=image_dtype)
  description = source.sampler.sample()
  taken = [r for per_class in source._take(description, {}) for r in per_class[:9]]  # pylint: disable=protected-access
  assert len(taken) == 45
  blocked = source._decode(taken, augment_seed=7)  # pylint: disable=protected-access
  whole = source._decode_block(taken)  # pylint: disable=protected-access
  assert blocked.dtype == (np.uint8 if image_dtype == 'uint8' else np.float32)
  np.testing.assert_array_equal(blocked, whole)
  # With augmentation the task is decoded at once, as before: the draws of one call.
  augmented = reader.RecordsEpisodeSource(fixture_dir, 'train', image_size=20, config=config,
                                          seed=4, image_dtype=image_dtype,
                                          gaussian_noise_std=0.1)
  noisy = augmented._decode(taken, augment_seed=7)  # pylint: disable=protected-access
  np.testing.assert_array_equal(noisy, augmented._decode_block(taken, augment_seed=7))  # pylint: disable=protected-access
  assert not np.array_equal(noisy, whole)
