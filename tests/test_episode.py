"""Episode validation: every malformed episode is rejected with a message naming the problem."""

import numpy as np
import pytest

from lite_tf.episode import Episode, EpisodeError, validate_episode


def _arrays(n=4, q=3, size=8):
  rng = np.random.RandomState(0)
  return (rng.uniform(-1, 1, (n, size, size, 3)), [0, 1, 0, 1],
          rng.uniform(-1, 1, (q, size, size, 3)), [1, 0, 1])


def test_valid_episode_passes():
  validate_episode(Episode.from_numpy(*_arrays(), way=2), image_size=8)


def test_query_label_absent_from_support():
  s, sl, q, _ = _arrays()
  with pytest.raises(EpisodeError, match=r'query labels \[2\] do not occur in the support set'):
    validate_episode(Episode.from_numpy(s, sl, q, [0, 2, 1], way=3))


def test_wrong_rank():
  s, sl, q, ql = _arrays()
  with pytest.raises(EpisodeError, match=r'support_images must have shape \[num, size, size, 3\]'):
    validate_episode(Episode.from_numpy(s[..., 0], sl, q, ql, way=2))


def test_wrong_size():
  with pytest.raises(EpisodeError, match='are 8x8 but the model expects 16x16'):
    validate_episode(Episode.from_numpy(*_arrays(), way=2), image_size=16)


def test_label_out_of_range():
  s, _, q, ql = _arrays()
  with pytest.raises(EpisodeError, match=r'support labels must lie in \[0, way=2\)'):
    validate_episode(Episode.from_numpy(s, [0, 1, 2, 1], q, ql, way=2))


def test_label_count_mismatch():
  s, _, q, ql = _arrays()
  with pytest.raises(EpisodeError, match=r'support_labels must have shape \[4\]'):
    validate_episode(Episode.from_numpy(s, [0, 1, 0], q, ql, way=2))


def test_from_dict_names_missing_keys():
  with pytest.raises(EpisodeError, match='lacks keys'):
    Episode.from_dict({'support_images': None})


def test_building_episode_takes_one_image_of_two_classes_and_one_query():
  """What train.py and the evaluators build a learner on instead of the whole first task."""
  from lite_tf.episode import building_episode  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(0)
  support = rng.randint(0, 256, (12, 8, 8, 3)).astype(np.uint8)
  labels = np.array([2, 1, 2, 0, 1, 0, 2, 1, 0, 0, 1, 2])
  query = rng.randint(0, 256, (3, 8, 8, 3)).astype(np.uint8)
  episode = Episode.from_numpy(support, labels, query, [2, 1, 0], 3)
  small = building_episode(episode)
  assert int(small.way) == 2 and small.support_images.dtype == np.uint8
  np.testing.assert_array_equal(small.support_images.numpy(), support[[3, 1]])  # class 0, 1
  np.testing.assert_array_equal(small.support_labels.numpy(), [0, 1])
  np.testing.assert_array_equal(small.query_images.numpy(), query[[1]])  # first of class < 2
  np.testing.assert_array_equal(small.query_labels.numpy(), [1])
  validate_episode(small, image_size=8)
  one_way = building_episode(Episode.from_numpy(support[:2], [0, 0], query[:1], [0], 1))
  assert int(one_way.way) == 1 and one_way.support_images.shape[0] == 1


def test_building_episode_of_a_task_without_query_images():
  from lite_tf.episode import building_episode  # pylint: disable=g-import-not-at-top
  support = np.arange(4 * 8 * 8 * 3, dtype=np.float32).reshape(4, 8, 8, 3) / 1000.0
  episode = Episode.from_numpy(support, [0, 1, 0, 1], np.zeros((0, 8, 8, 3), np.float32),
                               np.zeros(0, np.int32), 2)
  small = building_episode(episode)
  np.testing.assert_array_equal(small.query_images.numpy(), support[:1])
  np.testing.assert_array_equal(small.query_labels.numpy(), [0])
