"""Property tests of the LITE gradient estimator (lite_tf/lite/estimator.py)."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from conftest import relative_error
from conftest import small_episode
from conftest import small_protonets
from lite_tf.lite import estimator


@pytest.fixture(scope='module')
def learner():
  return small_protonets(1)


def test_average_over_all_subsets_equals_full_gradient(learner):
  """E_H[LITE gradient] = full gradient: average over all C(6, 2) = 15 subsets."""
  episode = small_episode(num_support=6)
  variables = learner.trainable_variables
  _, full, _ = estimator.full_task_gradients(learner, episode, variables)
  subsets = list(itertools.combinations(range(6), 2))
  total = [tf.zeros_like(v) for v in variables]
  for subset in subsets:
    _, grads, _ = estimator.lite_task_gradients(
        learner, episode, variables, num_backprop=2, chunk_size=3, query_batch_size=7,
        backprop_indices=tf.constant([subset]))
    total = [t + g for t, g in zip(total, grads)]
  mean = [t / len(subsets) for t in total]
  assert relative_error(mean, full) < 1e-5
  # A single subset is a noisy estimate, not the full gradient: the test above is not trivial.
  _, one, _ = estimator.lite_task_gradients(
      learner, episode, variables, 2, 3, 7, backprop_indices=tf.constant([subsets[0]]))
  assert relative_error(one, full) > 1e-2


@pytest.mark.parametrize('num_backprop', [6, 10])
def test_backprop_whole_support_set_is_exact(learner, num_backprop):
  episode = small_episode(num_support=6)
  variables = learner.trainable_variables
  full_loss, full, _ = estimator.full_task_gradients(learner, episode, variables)
  loss, grads, _ = estimator.lite_task_gradients(learner, episode, variables, num_backprop,
                                                 chunk_size=4, query_batch_size=7)
  assert relative_error(grads, full) < 1e-5
  np.testing.assert_allclose(float(loss), float(full_loss), rtol=1e-6)


def test_query_batches_accumulate_to_one_batch_gradient(learner):
  episode = small_episode(num_support=6, num_query=11)
  variables = learner.trainable_variables
  _, one_batch, one_predictions = estimator.lite_task_gradients(learner, episode, variables, 6,
                                                                4, 11)
  for batch_size in (1, 3, 5):
    _, grads, predictions = estimator.lite_task_gradients(learner, episode, variables, 6, 4,
                                                          batch_size)
    assert relative_error(grads, one_batch) < 1e-5
    np.testing.assert_array_equal(predictions, one_predictions)


def test_subset_per_query_batch_is_unbiased(learner):
  """Two query batches, each with its own subset: the average over all pairs is exact."""
  episode = small_episode(num_support=4, num_query=6)
  variables = learner.trainable_variables
  _, full, _ = estimator.full_task_gradients(learner, episode, variables)
  subsets = list(itertools.combinations(range(4), 2))
  total = [tf.zeros_like(v) for v in variables]
  pairs = list(itertools.product(subsets, subsets))
  for first, second in pairs:
    _, grads, _ = estimator.lite_task_gradients(
        learner, episode, variables, 2, 2, 3, backprop_indices=tf.constant([first, second]))
    total = [t + g for t, g in zip(total, grads)]
  assert relative_error([t / len(pairs) for t in total], full) < 1e-5


@pytest.mark.parametrize('num_backprop,chunk_size', [(1, 1), (2, 3), (3, 100)])
def test_forward_loss_equals_full_set_loss(learner, num_backprop, chunk_size):
  episode = small_episode(num_support=6, num_query=9)
  full_loss, _, full_predictions = estimator.full_task_gradients(
      learner, episode, learner.trainable_variables)
  loss, _, predictions = estimator.lite_task_gradients(
      learner, episode, learner.trainable_variables, num_backprop, chunk_size, 4, seed=(3, 4))
  np.testing.assert_allclose(float(loss), float(full_loss), rtol=1e-5)
  np.testing.assert_array_equal(predictions, full_predictions)


def test_graph_mode_matches_eager(learner):
  episode = small_episode(num_support=6, num_query=9)
  variables = learner.trainable_variables
  args = (learner, episode, variables, 2, 4, 4)
  eager_loss, eager_grads, _ = estimator.lite_task_gradients(*args, seed=(5, 6))
  graph_loss, graph_grads, _ = tf.function(
      lambda: estimator.lite_task_gradients(*args, seed=(5, 6)))()
  np.testing.assert_allclose(float(graph_loss), float(eager_loss), rtol=1e-6)
  assert relative_error(graph_grads, eager_grads) < 1e-5


def test_random_subsets_depend_on_seed_and_average_towards_full(learner):
  episode = small_episode(num_support=6)
  variables = learner.trainable_variables
  _, full, _ = estimator.full_task_gradients(learner, episode, variables)
  _, a, _ = estimator.lite_task_gradients(learner, episode, variables, 2, 4, 7, seed=(0, 1))
  _, b, _ = estimator.lite_task_gradients(learner, episode, variables, 2, 4, 7, seed=(0, 1))
  assert relative_error(a, b) == 0.0
  errors = []
  total = [tf.zeros_like(v) for v in variables]
  for draw in range(1, 101):
    _, g, _ = estimator.lite_task_gradients(learner, episode, variables, 2, 4, 7,
                                            seed=(7, draw))
    total = [t + x for t, x in zip(total, g)]
    if draw in (5, 100):
      errors.append(relative_error([t / draw for t in total], full))
  assert errors[1] < errors[0]


def test_scale_gradient_keeps_value_and_scales_gradient():
  x = tf.constant([1.5, -2.0])
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = estimator.scale_gradient(x, 4.0)
    loss = tf.reduce_sum(y * tf.constant([1.0, 3.0]))
  np.testing.assert_array_equal(y.numpy(), x.numpy())
  np.testing.assert_allclose(tape.gradient(loss, x).numpy(), [4.0, 12.0])


def test_sample_backprop_indices_is_a_partition():
  chosen, rest = estimator.sample_backprop_indices(tf.constant([1, 2], tf.int64), 10, 4)
  assert len(chosen) == 4 and len(rest) == 6
  assert sorted(np.concatenate([chosen, rest]).tolist()) == list(range(10))


def test_adapt_and_predict_matches_one_forward_pass(learner):
  episode = small_episode(num_support=6, num_query=9)
  direct = learner(episode.to_dict())
  chunked = estimator.adapt_and_predict(learner, episode, chunk_size=4, query_batch_size=2)
  np.testing.assert_allclose(chunked.numpy(), direct.numpy(), rtol=1e-5, atol=1e-5)


def test_clip_subsets_are_whole_clips_and_unbiased(learner):
  """backprop_clip_length=2: the 6 support images are 3 clips of 2 contiguous images and H is
  whole clips. Every draw is a union of clips, a draw's gradient is the subset gradient of its
  rows, and the average over the 3 one-clip subsets is the full gradient."""
  episode = small_episode(num_support=6)
  variables = learner.trainable_variables
  _, full, _ = estimator.full_task_gradients(learner, episode, variables)
  for s in range(6):
    chosen, rest = estimator.sample_backprop_clips(tf.constant([s, 1]), 6, 1, 2)
    chosen = sorted(chosen.numpy().tolist())
    assert len(chosen) == 2 and chosen[0] % 2 == 0 and chosen[1] == chosen[0] + 1
    assert sorted(chosen + rest.numpy().tolist()) == list(range(6))
  _, drawn, _ = estimator.lite_task_gradients(learner, episode, variables, 1, chunk_size=3,
                                              query_batch_size=7, seed=(4, 0),
                                              backprop_clip_length=2)
  rows, _ = estimator.sample_backprop_clips(
      tf.random.experimental.stateless_fold_in(tf.constant([4, 0], tf.int64),
                                               tf.constant(0, tf.int64)), 6, 1, 2)
  _, same, _ = estimator.lite_task_gradients(learner, episode, variables, 2, 3, 7,
                                             backprop_indices=rows[None])
  # The same rows by two paths: equal up to float32 summation order (1.1e-6 seen on CI).
  assert relative_error(drawn, same) < 1e-5
  total = [tf.zeros_like(v) for v in variables]
  for clip in range(3):
    _, grads, _ = estimator.lite_task_gradients(
        learner, episode, variables, 2, 3, 7, backprop_indices=tf.constant([[2 * clip,
                                                                             2 * clip + 1]]))
    total = [t + g for t, g in zip(total, grads)]
  assert relative_error([t / 3 for t in total], full) < 1e-5
  with pytest.raises(tf.errors.InvalidArgumentError, match='not whole clips'):
    estimator.lite_task_gradients(learner, small_episode(num_support=5), variables, 1, 3, 7,
                                  backprop_clip_length=2)


def test_zero_backprop_is_the_query_path_gradient(learner):
  """|H| = 0: the support embeddings enter the prototypes without gradient, so LITE's gradient
  is the exact gradient of the loss with the support path cut."""
  from lite_tf.episode import to_model_input  # pylint: disable=g-import-not-at-top
  from lite_tf.learners import base  # pylint: disable=g-import-not-at-top
  from lite_tf.learners import protonets  # pylint: disable=g-import-not-at-top
  episode = small_episode(num_support=9, num_query=8)
  variables = learner.trainable_variables
  with tf.GradientTape() as tape:
    support = tf.stop_gradient(learner.backbone(to_model_input(episode.support_images)))
    prototypes = protonets.class_means(support, episode.support_labels, episode.way)
    logits = protonets.squared_euclidean_logits(
        learner.backbone(to_model_input(episode.query_images)), prototypes)
    loss = base.mean_cross_entropy(logits, episode.query_labels)
  expected = tape.gradient(loss, variables)
  lite_loss, grads, _ = estimator.lite_task_gradients(learner, episode, variables, 0, 4, 3)
  assert float(lite_loss) == pytest.approx(float(loss), rel=1e-5)
  assert relative_error(grads, expected) < 1e-5
  full = estimator.full_task_gradients(learner, episode, variables)[1]
  assert relative_error(grads, full) > 1e-3  # the support path does carry gradient


def test_zero_backprop_refused_for_learners_with_a_task_context():
  from lite_tf.learners import simple_cnaps  # pylint: disable=g-import-not-at-top
  learner = simple_cnaps.SimpleCnaps(backbone='conv4', image_size=16, set_encoder_norm='none')
  episode = small_episode()
  learner(episode.to_dict())
  with pytest.raises(ValueError, match=r'lite.num_backprop = 0 leaves SimpleCnaps'):
    estimator.lite_task_gradients(learner, episode, learner.trainable_variables, 0, 4, 3)
