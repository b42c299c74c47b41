"""Per-task BatchNorm statistics (batch_norm.statistics='frozen_support', called 'task' before
issue #28; lite_tf.backbones.task_norm). TaskNorm-I: tests/test_task_norm_i.py."""

import itertools

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import relative_error
from conftest import small_episode
from lite_tf import backbones
from lite_tf.backbones import task_norm
from lite_tf.learners import simple_cnaps
from lite_tf.learners.protonets import ProtoNets
from lite_tf.lite import chunking
from lite_tf.lite import estimator


def _task_mode():
  gin.bind_parameter('batch_norm.statistics', 'frozen_support')


def _randomize_batch_norm(backbone, seed):
  """Non-trivial gamma, beta and moving statistics, so that every way of normalising differs."""
  rng = np.random.RandomState(seed)
  for layer in backbone._flatten_layers(include_self=False):  # pylint: disable=protected-access
    if isinstance(layer, keras.layers.BatchNormalization):
      for v in layer.weights:
        low = 0.5 if 'variance' in v.path or 'gamma' in v.path else -0.5
        v.assign(rng.uniform(low, low + 1.0, v.shape).astype(np.float32))


@pytest.mark.parametrize('name,size', [('conv4', 16), ('resnet18', 32),
                                       pytest.param('efficientnet_b0', 32, marks=pytest.mark.slow)])
def test_chunked_task_statistics_normalise_like_training_mode_batch_norm(name, size):
  """Statistics computed in chunks of 3 over 7 images, layer by layer, then held fixed, give the
  network that Keras' own training-mode BatchNorm computes on the whole batch at once."""
  _task_mode()
  keras.utils.set_random_seed(0)
  backbone = backbones.create(name)
  backbone.build((None, size, size, 3))
  _randomize_batch_norm(backbone, 1)
  images = tf.random.stateless_uniform([7, size, size, 3], seed=[3, 4], minval=-1, maxval=1)
  state = backbone.task_norm
  chunked = task_norm.task_statistics(state, backbone, images, chunk_size=3,
                                      chunked_apply=chunking.chunked_apply)
  assert len(chunked) == state.num_layers
  one_pass = task_norm.task_statistics(state, backbone, images)
  for (m, v), (m1, v1) in zip(chunked, one_pass):
    np.testing.assert_allclose(m, m1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(v, v1, rtol=1e-4, atol=1e-5)
  with state.fixed(chunked):
    fixed = backbone(images).numpy()
  inference = backbone(images, training=False).numpy()
  training_mode = backbone(images, training=True).numpy()  # Keras: the batch's statistics
  scale = np.abs(training_mode).max()
  np.testing.assert_allclose(fixed, training_mode, atol=2e-4 * scale)
  assert np.abs(inference - training_mode).max() > 1e-2 * scale  # the comparison is not trivial


def _protonets(seed=1):
  _task_mode()
  keras.utils.set_random_seed(seed)
  model = ProtoNets(backbone='conv4', image_size=16)
  model(small_episode().to_dict())
  _randomize_batch_norm(model.backbone, seed)
  return model


def lite_over_all_subsets(learner, episode, variables, full_loss):
  """LITE's gradient (chunks of 3, |H| = 2, query batches of 4, one traced step) averaged over
  all 15 subsets of a 6-image support set; every subset's loss must equal full_loss."""

  @tf.function
  def lite(subset):
    return estimator.lite_task_gradients(learner, episode, variables, num_backprop=2,
                                         chunk_size=3, query_batch_size=4,
                                         backprop_indices=tf.stack([subset, subset]))

  subsets = list(itertools.combinations(range(6), 2))
  total = [tf.zeros_like(v) for v in variables]
  for subset in subsets:
    loss, grads, _ = lite(tf.constant(subset))
    np.testing.assert_allclose(float(loss), float(full_loss), rtol=1e-5)
    total = [t + g for t, g in zip(total, grads)]
  return [t / len(subsets) for t in total]


def assert_all_of_h_is_exact(learner, episode, variables, full):
  """|H| = N (chunks of 4, query batches of 3) is the gradient `full`, eager and graph."""
  for run in (lambda f: f(), lambda f: tf.function(f)()):
    _, exact, _ = run(lambda: estimator.lite_task_gradients(learner, episode, variables, 6,
                                                            chunk_size=4, query_batch_size=3))
    assert relative_error(exact, full) < 1e-5


def test_lite_is_exact_with_task_statistics():
  """The statistics are constants of the task, so LITE's estimate (chunks of 3, H of 2)
  averaged over all 15 subsets equals the gradient of the same network back-propagated through
  the whole support set at once; |H| = N is that gradient, in eager and graph mode."""
  learner = _protonets()
  episode = small_episode(num_support=6)
  variables = learner.trainable_variables
  full_loss, full, _ = estimator.full_task_gradients(learner, episode, variables)

  assert relative_error(lite_over_all_subsets(learner, episode, variables, full_loss),
                        full) < 1e-5
  assert_all_of_h_is_exact(learner, episode, variables, full)
  # The network is not the inference-mode one: its loss differs.
  gin.clear_config()
  keras.utils.set_random_seed(1)
  moving = ProtoNets(backbone='conv4', image_size=16)
  moving(small_episode().to_dict())
  moving.set_weights(learner.get_weights())
  moving_loss, _, _ = estimator.full_task_gradients(moving, episode,
                                                    moving.trainable_variables)
  assert abs(float(moving_loss) - float(full_loss)) > 1e-3


def test_statistics_come_from_the_support_set_only():
  """A query image's logits do not depend on the other query images (one by one = batched),
  and the test-time path equals one forward pass of the learner."""
  learner = _protonets()
  episode = small_episode(num_support=6, num_query=5)
  batched = estimator.adapt_and_predict(learner, episode, chunk_size=4, query_batch_size=5)
  single = estimator.adapt_and_predict(learner, episode, chunk_size=4, query_batch_size=1)
  np.testing.assert_allclose(single, batched, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(learner(episode.to_dict()), batched, rtol=1e-4, atol=1e-4)
  adapted = estimator.adapt_task(learner, episode, chunk_size=4)
  assert len(adapted['batch_norm']) == learner.backbone.task_norm.num_layers
  logits = estimator.adapted_query_logits(learner, adapted, episode.query_images)
  np.testing.assert_allclose(logits, batched, rtol=1e-5, atol=1e-5)


def test_simple_cnaps_with_task_statistics_backprop_all_is_exact():
  """With FiLM: the statistics are those of the FiLM-adapted backbone on the task."""
  _task_mode()
  keras.utils.set_random_seed(2)
  learner = simple_cnaps.SimpleCnaps(backbone='conv4', image_size=16, set_encoder_norm='none')
  learner(small_episode().to_dict())
  _randomize_batch_norm(learner.backbone, 2)
  episode = small_episode()
  variables = learner.trainable_variables
  full_loss, full, _ = estimator.full_task_gradients(learner, episode, variables)
  loss, grads, _ = estimator.lite_task_gradients(learner, episode, variables, 6, chunk_size=4,
                                                 query_batch_size=3)
  assert abs(float(loss) - float(full_loss)) < 1e-5
  assert relative_error(grads, full) < 1e-5


def test_bad_settings_are_named():
  gin.bind_parameter('batch_norm.statistics', 'per_batch')
  with pytest.raises(ValueError, match=r"batch_norm.statistics must be one of \['moving', "
                                       r"'frozen_support', 'task_norm_i'\]; got 'per_batch'"):
    backbones.create('conv4')
  gin.clear_config()
  _task_mode()
  from lite_tf.learners import maml  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError,
                     match="batch_norm.statistics='frozen_support' is for the LITE learners"):
    maml.Maml(backbone='conv4', image_size=16)


@pytest.mark.parametrize('gpu', [False, True])
def test_image_moments_match_float64(monkeypatch, gpu):
  """Per-image means and centred sums of squares of [m, h, w, c] maps, by matrix products
  (CPU) or by reductions (where a GPU is visible, as TF32 could round a product's inputs),
  against numpy in float64; the channel count may be unknown when tracing."""
  monkeypatch.setattr(task_norm, '_gpu_visible', lambda: gpu)
  rng = np.random.RandomState(0)
  x = (rng.normal(size=(3, 9, 7, 5)) * 3 + 5).astype(np.float32)
  traced = tf.function(task_norm.image_moments,
                       input_signature=[tf.TensorSpec([None, None, None, None], tf.float32)])
  for moments in (task_norm.image_moments(tf.constant(x)), traced(tf.constant(x))):
    mean, m2, count = (t.numpy() for t in moments)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(
        m2, ((x64 - x64.mean(axis=(1, 2), keepdims=True)) ** 2).sum(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_array_equal(count, [63.0] * 3)
