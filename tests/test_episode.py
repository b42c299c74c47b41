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
