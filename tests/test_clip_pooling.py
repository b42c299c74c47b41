"""ORBIT's 2021 pooling options: context clips mean-pooled into one support example
(clip_pooling.context_clip_length) and target frames classified from features pooled over
their history (run_orbit_evaluation.history_pooling)."""

import itertools

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import relative_error
from conftest import small_episode
from lite_tf.learners import base
from lite_tf.learners.protonets import ProtoNets
from lite_tf.learners.protonets import class_means
from lite_tf.learners.protonets import squared_euclidean_logits
from lite_tf.lite import estimator


def _clip_episode(num_support=8, way=3):
  """Support rows in clips of 2 (labels 0 0 | 0 0 | 1 1 | 2 2), 7 queries."""
  episode = small_episode(num_support=num_support, way=way)
  labels = np.repeat([0, 0, 1, 2], 2)
  return episode.__class__.from_numpy(episode.support_images.numpy(), labels,
                                      episode.query_images.numpy(),
                                      episode.query_labels.numpy(), way)


def _pooled(make, length=2):
  gin.clear_config()
  gin.bind_parameter('clip_pooling.context_clip_length', length)
  try:
    keras.utils.set_random_seed(1)
    learner = make()
  finally:
    gin.clear_config()
  learner(_clip_episode().to_dict())
  return learner


def test_each_clip_is_one_example():
  learner = _pooled(lambda: ProtoNets(backbone='conv4', image_size=16))
  episode = _clip_episode()
  assert learner.context_clip_length == 2
  features = learner.support_contributions(episode.support_images)
  clips = tf.reduce_mean(tf.reshape(features, [4, 2, -1]), axis=1)
  prototypes = class_means(clips, [0, 0, 1, 2], 3)
  expected = squared_euclidean_logits(learner.query_features(None, episode.query_images),
                                      prototypes)
  np.testing.assert_allclose(learner(episode.to_dict()), expected, rtol=1e-5, atol=1e-4)
  adapted = estimator.adapt_task(learner, episode, chunk_size=3)
  np.testing.assert_allclose(adapted, prototypes, rtol=1e-5, atol=1e-5)
  with pytest.raises(tf.errors.InvalidArgumentError, match='not whole clips'):
    learner.adapt_support(features[:5], tf.constant([0, 0, 1, 1, 2]), 3)


def test_lite_stays_unbiased_with_pooled_clips():
  """Simple CNAPs, whose covariances see the pooled clips: H and H_c over frames, clips
  pooled after; the average over all 8 x 8 (H, H_c) pairs is the full gradient."""
  from lite_tf.learners import simple_cnaps  # pylint: disable=g-import-not-at-top
  learner = _pooled(lambda: simple_cnaps.SimpleCnaps(backbone='conv4', image_size=16,
                                                     set_encoder_norm='none'))
  episode = _clip_episode()
  variables = learner.trainable_variables
  _, full, _ = estimator.full_task_gradients(learner, episode, variables)
  total = [tf.zeros_like(v) for v in variables]
  pairs = list(itertools.product(range(8), range(8)))
  for h, h_c in pairs:
    _, grads, _ = estimator.lite_task_gradients(
        learner, episode, variables, num_backprop=1, chunk_size=3, query_batch_size=7,
        backprop_indices=tf.constant([[h]]), context_indices=tf.constant([[h_c]]))
    total = [t + g for t, g in zip(total, grads)]
  assert relative_error([t / len(pairs) for t in total], full) < 1e-5
  # Pooling changed the gradient: the unpooled learner's differs.
  learner.context_clip_length = None
  _, unpooled, _ = estimator.full_task_gradients(learner, episode, variables)
  learner.context_clip_length = 2
  assert relative_error(unpooled, full) > 1e-3


def test_bad_values_and_learners_are_refused():
  with pytest.raises(ValueError, match='context_clip_length must be None or an integer >= 1'):
    base.clip_pooling(0)
  gin.clear_config()
  gin.bind_parameter('clip_pooling.context_clip_length', 8)
  try:
    from lite_tf.learners.maml import Maml  # pylint: disable=g-import-not-at-top
    with pytest.raises(ValueError, match='clip_pooling.context_clip_length: MAML'):
      Maml(backbone='conv4', image_size=16)
  finally:
    gin.clear_config()


def test_building_on_a_small_task_and_protocols_whose_clips_differ():
  """The binaries build a learner on a 2-image task (building_episode): pooling is off for it.
  A protocol whose clips are not context_clip_length frames long is refused by name."""
  from lite_tf import episode as episode_lib  # pylint: disable=g-import-not-at-top
  from lite_tf.data.orbit import episodes as orbit_episodes  # pylint: disable=g-import-not-at-top
  learner = _pooled(lambda: ProtoNets(backbone='conv4', image_size=16), length=8)
  small = episode_lib.building_episode(_clip_episode())  # 2 support images
  with pytest.raises(tf.errors.InvalidArgumentError, match='not whole clips'):
    learner(small.to_dict())
  with learner.unpooled():
    learner(small.to_dict())
  assert learner.context_clip_length == 8
  gin.clear_config()
  gin.bind_parameter('clip_pooling.context_clip_length', 8)
  try:
    with pytest.raises(ValueError, match="context_clip_length=8 but the 'challenge' protocol's "
                       'clips are of 1 frames'):
      orbit_episodes.orbit_episodes('test', root='tests/data/orbit_reference/tree',
                                    test_protocol='challenge')
  finally:
    gin.clear_config()
