"""MAML and FineTuner as Keras learners on real episodes."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import relative_error
from lite_tf.episode import Episode
from lite_tf.learners import base
from lite_tf.learners import finetuner
from lite_tf.learners import maml
from lite_tf.lite import model as lite_model


def _episode(way=3, shots=4, queries=3, size=16, seed=0):
  rng = np.random.RandomState(seed)
  prototypes = rng.uniform(-1, 1, (way, size, size, 3))
  def sample(n):
    labels = np.repeat(np.arange(way), n)
    return np.clip(prototypes[labels] + 0.3 * rng.normal(size=(len(labels), size, size, 3)),
                   -1, 1), labels
  sx, sy = sample(shots)
  qx, qy = sample(queries)
  return Episode.from_numpy(sx, sy, qx, qy, way)


def _support_loss(learner, params, episode):
  logits = learner.logits(params, episode.support_images, int(episode.way))
  return float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=episode.support_labels, logits=logits)))


def test_maml_inner_loop_fits_the_support_set():
  keras.utils.set_random_seed(0)
  learner = maml.Maml(backbone='conv4', image_size=16, max_way=5, num_inner_steps=10,
                      inner_lr=0.5)
  episode = _episode()
  before = _support_loss(learner, [v.value for v in learner.trainable_variables], episode)
  after = _support_loss(learner, learner.adapt(episode, training=False), episode)
  assert after < 0.5 * before
  assert learner.predict_episode(episode).shape == (9, 3)


def _nested_tape_meta_gradient(learner, episode, window):
  """Reference meta-gradient of the windowed estimator from its definition, with nested
  tapes: the inner trajectory theta_0..theta_K by plain SGD, then the query gradient at
  theta_K carried back through each window w as v <- v - m_w * alpha * H(theta_anchor) v, the
  Hessian-vector products taken with a tape inside a tape. window = 1 is exact MAML."""
  way = int(episode.way)
  support = lambda p: base.mean_cross_entropy(  # pylint: disable=unnecessary-lambda-assignment
      learner.logits(p, episode.support_images, way), episode.support_labels)
  theta = [[tf.convert_to_tensor(v) for v in learner.trainable_variables]]
  for _ in range(learner.num_inner_steps):
    with tf.GradientTape() as tape:
      tape.watch(theta[-1])
      loss = support(theta[-1])
    grads = tape.gradient(loss, theta[-1])
    theta.append([p - learner.inner_lr * g for p, g in zip(theta[-1], grads)])
  final = theta[-1]
  with tf.GradientTape() as tape:
    tape.watch(final)
    query = base.mean_cross_entropy(learner.logits(final, episode.query_images, way),
                                    episode.query_labels)
  v = tape.gradient(query, final)
  for start in reversed(range(0, learner.num_inner_steps, window)):
    size = min(window, learner.num_inner_steps - start)
    anchor = theta[start]
    with tf.GradientTape() as outer:
      outer.watch(anchor)
      with tf.GradientTape() as inner:
        inner.watch(anchor)
        loss = support(anchor)
      g = inner.gradient(loss, anchor)
      dot = tf.add_n([tf.reduce_sum(gi * tf.stop_gradient(vi)) for gi, vi in zip(g, v)])
    hv = outer.gradient(dot, anchor)
    v = [vi - size * learner.inner_lr * h for vi, h in zip(v, hv)]
  return v


@pytest.mark.parametrize('window', [1, 2, 3])
def test_maml_meta_gradient_matches_nested_tapes(window):
  keras.utils.set_random_seed(0)
  learner = maml.Maml(backbone='conv4', image_size=16, max_way=5, num_inner_steps=3,
                      inner_lr=0.1, window_size=window)
  episode = _episode()
  _, grads, predictions = learner.task_gradients(episode)
  reference = _nested_tape_meta_gradient(learner, episode, window)
  assert relative_error(grads, reference) < 1e-3, relative_error(grads, reference)
  assert predictions.shape == (9,)
  if window > 1:  # the estimator is not exact MAML: the reference must tell them apart
    exact = _nested_tape_meta_gradient(learner, episode, 1)
    assert relative_error(reference, exact) > 10 * relative_error(grads, reference)


def test_first_order_support_batches_equal_one_batch():
  keras.utils.set_random_seed(0)
  # Frozen batch norm keeps examples independent, so batches of 5 sum to the whole support
  # gradient (per-task statistics would differ between a batch of 5 and one of 12).
  whole = maml.Maml(backbone='conv4', image_size=16, max_way=5, num_inner_steps=2,
                    inner_lr=0.1, first_order=True, batch_norm='frozen')
  batched = maml.Maml(backbone='conv4', image_size=16, max_way=5, num_inner_steps=2,
                      inner_lr=0.1, first_order=True, support_batch_size=5,
                      batch_norm='frozen')
  batched.set_weights(whole.get_weights())
  episode = _episode(shots=4)
  _, g_whole, _ = whole.task_gradients(episode)
  _, g_batched, _ = batched.task_gradients(episode)
  for a, b in zip(g_whole, g_batched):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=1e-6)


def test_support_batches_need_first_order():
  with pytest.raises(ValueError, match='support_batch_size needs first_order=True'):
    maml.Maml(backbone='conv4', image_size=16, support_batch_size=4)


def test_maml_trains_under_fit():
  keras.utils.set_random_seed(0)
  learner = maml.Maml(backbone='conv4', image_size=16, max_way=3, num_inner_steps=1,
                      inner_lr=0.1)
  model = lite_model.make_meta_model(learner)
  model.compile(optimizer=lite_model.make_optimizer(1e-3), jit_compile=False)
  data = tf.data.Dataset.from_tensors(_episode().to_dict()).repeat(6)
  before = [v.numpy().copy() for v in learner.trainable_variables]
  history = model.fit(data, epochs=1, verbose=0)
  assert np.isfinite(history.history['loss'][0])
  assert any(not np.allclose(b, v.numpy()) for b, v in zip(before, learner.trainable_variables))


def test_finetuner_fits_separable_support_and_is_graph_safe():
  keras.utils.set_random_seed(0)
  learner = finetuner.FineTuner(backbone='conv4', image_size=16, num_steps=100,
                                learning_rate=1e-2)
  episode = _episode(way=3, shots=5, queries=5)
  eager = learner.predict_episode(episode)
  graph = tf.function(lambda d: learner.predict_episode(Episode.from_dict(d)))(
      episode.to_dict())
  np.testing.assert_allclose(eager.numpy(), graph.numpy(), rtol=1e-4, atol=1e-4)
  accuracy = np.mean(np.argmax(eager.numpy(), -1) == episode.query_labels.numpy())
  assert accuracy > 0.6
  loss, grads, _ = learner.task_gradients(episode)
  assert all(float(tf.reduce_sum(tf.abs(g))) == 0 for g in grads)


def test_finetuner_with_film_trains_film_parameters_with_the_head():
  """film=True: FiLM (gamma, beta) of every backbone layer are fitted with the head, starting
  at the identity; the support loss falls below the head-only fit's."""
  keras.utils.set_random_seed(0)
  plain = finetuner.FineTuner(backbone='conv4', image_size=16, num_steps=20, learning_rate=1e-2)
  filmed = finetuner.FineTuner(backbone='conv4', image_size=16, num_steps=20,
                               learning_rate=1e-2, film=True)
  filmed.backbone.set_weights(plain.backbone.get_weights())
  episode = _episode(way=3, shots=5, queries=5)
  support = episode.support_images
  features = plain.features(support)
  losses = {}
  for name, learner in (('plain', plain), ('film', filmed)):
    images = support if learner.film else None
    weights, bias, film = learner.fit_head(features, episode.support_labels, 3, images)
    assert (film is None) == (name == 'plain')
    logits = tf.matmul(learner.backbone(support, film=film), weights) + bias
    losses[name] = float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        tf.cast(episode.support_labels, tf.int32), logits)))
  assert [tuple(g.shape) for g, _ in film] == [(c,) for c in filmed.backbone.film_channels]
  assert max(float(tf.reduce_max(tf.abs(g))) for g, _ in film) > 0
  assert losses['film'] < losses['plain']
  # Graph == eager. Adam divides by sqrt(v) + 1e-7, so float rounding in near-zero gradients
  # (oneDNN's eager and graph kernels round differently) grows chaotically with the steps: with
  # oneDNN on, the logits agree to 3e-7 after 10 steps and 3e-3 after 20. Compare after 5.
  filmed.num_steps = 5
  graph = tf.function(lambda d: filmed.predict_episode(Episode.from_dict(d)))(episode.to_dict())
  np.testing.assert_allclose(filmed.predict_episode(episode).numpy(), graph.numpy(), rtol=1e-5,
                             atol=1e-5)
