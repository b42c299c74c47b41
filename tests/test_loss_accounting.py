"""The task loss LITE differentiates, against the reference codes' own formulas
(lite.regularizer_accounting, lite.support_scaling; estimator.LOSS_ACCOUNTINGS and
SUPPORT_SCALINGS cite the reference lines).

Per task, with T tasks per optimizer step, B query batches, CE_b the mean cross-entropy of
batch b and R = 0.001 * sum(r^2) the FiLM penalty, both references minimise
  sum_b c * CE_b / T + B * R,
c = 1 (cambridge-mlg/LITE) or N/|H| (ORBIT), the support path unscaled; the LITE paper scales
the subset path by N/|H| instead. lite_tf's optimizer averages the T tasks' gradients, so a
task's objective there is T times the reference's.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import small_episode
from conftest import small_protonets
from lite_tf.episode import Episode
from lite_tf.episode import to_model_input
from lite_tf.learners import simple_cnaps
from lite_tf.lite import estimator
from lite_tf.lite import model as lite_model

TASKS_PER_STEP = 2
QUERY_BATCH = 4  # 7 queries: batches of 4 and 3
SUBSETS = tf.constant([[0, 4], [1, 2]])  # H of each query batch, N = 6


@pytest.fixture(scope='module')
def learner():
  keras.utils.set_random_seed(3)
  model = simple_cnaps.SimpleCnaps(backbone='conv4', image_size=16, set_encoder_norm='none')
  model(small_episode().to_dict())
  # A penalty that is not negligible beside the cross-entropy (initially r ~ 0.001).
  for r in model.film_generator.gamma_regularizers + model.film_generator.beta_regularizers:
    r.assign(tf.random.stateless_normal(r.shape, seed=[4, 5], stddev=3.0))
  return model


def _film_penalty(learner):
  """0.001 * sum(r^2) over the FiLM scale vectors, as the references' regularization_term."""
  generator = learner.film_generator
  return 0.001 * sum(tf.reduce_sum(tf.square(r))
                     for r in generator.gamma_regularizers + generator.beta_regularizers)


def _cross_entropy(logits, labels):
  return tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
      tf.cast(labels, tf.int32), logits, from_logits=True))


def _query_batches(episode):
  num_query = int(episode.query_labels.shape[0])
  return [(start, min(start + QUERY_BATCH, num_query))
          for start in range(0, num_query, QUERY_BATCH)]


def _reference_full(learner, episode, tasks_per_step):
  """The reference's per-task loss and gradient with every support image back-propagated:
  one whole forward pass (learner.call) per query batch."""
  variables = learner.trainable_variables
  total, grads = 0.0, [tf.zeros_like(v) for v in variables]
  for start, end in _query_batches(episode):
    batch = Episode(episode.support_images, episode.support_labels,
                    episode.query_images[start:end], episode.query_labels[start:end],
                    episode.way)
    with tf.GradientTape() as tape:
      logits = learner(batch.to_dict(), training=False)
      loss = (_cross_entropy(logits, episode.query_labels[start:end]) / tasks_per_step
              + _film_penalty(learner))
    total += float(loss)
    grads = [g + tf.convert_to_tensor(d) for g, d in zip(grads, tape.gradient(loss, variables))]
  return total, grads


def _through_subset(rows, in_subset, scale):
  """rows [n, ...] whose gradient flows through the rows in_subset [n] only, times scale."""
  stopped = tf.stop_gradient(rows)
  mask = tf.reshape(in_subset, [-1] + [1] * (rows.shape.rank - 1))
  return tf.where(mask, stopped + scale * (rows - stopped), stopped)


def _reference_subsets(learner, episode, subsets, tasks_per_step, scaling):
  """The reference's per-task loss and gradient with subset H_b back-propagated for query
  batch b (the same H for the set encoder and the features, as both references), written
  from their training loops: 'none' cambridge-mlg/LITE, 'orbit' ORBIT (c = N/|H|), and
  'paper' the paper's N/|H| on the subset path."""
  variables = learner.trainable_variables
  n = int(episode.support_labels.shape[0])
  support = to_model_input(episode.support_images)
  total, grads = 0.0, [tf.zeros_like(v) for v in variables]
  for b, (start, end) in enumerate(_query_batches(episode)):
    in_subset = tf.reduce_any(tf.range(n)[:, None] == subsets[b][None, :], axis=1)
    ratio = n / int(subsets.shape[1])
    path_scale = ratio if scaling == 'paper' else 1.0
    c = ratio if scaling == 'orbit' else 1.0
    with tf.GradientTape() as tape:
      context = learner.task_context(_through_subset(
          learner.context_contributions(support), in_subset, path_scale))
      contributions = tf.nest.map_structure(
          lambda r: _through_subset(r, in_subset, path_scale),
          learner.support_contributions(support, context, training=False))
      adapted = learner.adapt_support(contributions, episode.support_labels,
                                      tf.cast(episode.way, tf.int32), context)
      logits = learner.query_logits(adapted, to_model_input(episode.query_images[start:end]),
                                    training=False)
      loss = (c * _cross_entropy(logits, episode.query_labels[start:end]) / tasks_per_step
              + _film_penalty(learner))
    total += float(loss)
    grads = [g + tf.convert_to_tensor(d) for g, d in zip(grads, tape.gradient(loss, variables))]
  return total, grads


def _assert_close(got, expected):
  for g, e in zip(got, expected):
    np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=2e-4,
                               atol=2e-5 * float(tf.reduce_max(tf.abs(e))) + 1e-7)


def test_reference_accounting_is_the_references_total_loss(learner):
  """|H| = N, two query batches of 4 and 3: the task's objective / T and gradient / T (the
  optimizer's mean over T tasks) are the reference's sum_b CE_b / T + B * 0.001 * R."""
  episode = small_episode()
  loss, objective, grads, _ = estimator.lite_task_objective(
      learner, episode, learner.trainable_variables, 6, 4, QUERY_BATCH,
      regularizer_scale=float(TASKS_PER_STEP), loss_accounting='reference')
  expected, expected_grads = _reference_full(learner, episode, TASKS_PER_STEP)
  np.testing.assert_allclose(float(objective) / TASKS_PER_STEP, expected, rtol=1e-5)
  _assert_close([g / TASKS_PER_STEP for g in grads], expected_grads)
  # The reported loss is the mean query cross-entropy plus the penalty once, as 'per_task'.
  per_task_loss, per_task_objective, _, _ = estimator.lite_task_objective(
      learner, episode, learner.trainable_variables, 6, 4, QUERY_BATCH)
  np.testing.assert_allclose(float(loss), float(per_task_loss), rtol=1e-6)
  np.testing.assert_allclose(float(per_task_objective), float(per_task_loss), rtol=1e-6)


@pytest.mark.parametrize('scaling', ['none', 'orbit', 'paper'])
def test_each_support_scaling_is_its_reference(learner, scaling):
  """|H| = 2 of N = 6, a given H per query batch: 'none' is cambridge-mlg/LITE's loss and
  gradient, 'orbit' ORBIT's (the cross-entropy times N/|H|), 'paper' the N/|H| subset path."""
  episode = small_episode()
  _, objective, grads, _ = estimator.lite_task_objective(
      learner, episode, learner.trainable_variables, 2, 4, QUERY_BATCH,
      backprop_indices=SUBSETS, context_subset='shared',
      regularizer_scale=float(TASKS_PER_STEP), loss_accounting='reference',
      support_scaling=scaling)
  expected, expected_grads = _reference_subsets(learner, episode, SUBSETS, TASKS_PER_STEP,
                                                scaling)
  np.testing.assert_allclose(float(objective) / TASKS_PER_STEP, expected, rtol=1e-5)
  _assert_close([g / TASKS_PER_STEP for g in grads], expected_grads)


def test_support_scalings_weight_the_paths_as_stated():
  """ProtoNets (no penalty, no context): with g_q the query path's gradient (|H| = 0) and
  g_none the unscaled one, 'paper' is g_q + (N/|H|)(g_none - g_q) and 'orbit' (N/|H|) g_none."""
  learner = small_protonets(0)
  episode = small_episode()
  variables = learner.trainable_variables

  def grads(num_backprop, **kwargs):
    return estimator.lite_task_gradients(learner, episode, variables, num_backprop, 4,
                                         QUERY_BATCH, **kwargs)[1]

  subset = dict(backprop_indices=SUBSETS)
  query_path = grads(0)
  unscaled = grads(2, support_scaling='none', **subset)
  ratio = 6 / 2
  _assert_close(grads(2, support_scaling='paper', **subset),
                [q + ratio * (u - q) for q, u in zip(query_path, unscaled)])
  _assert_close(grads(2, support_scaling='orbit', **subset), [ratio * u for u in unscaled])


def test_lite_model_passes_the_options_and_names_the_binding(learner):
  model = lite_model.make_lite_model(learner)
  assert (model.regularizer_accounting, model.support_scaling) == ('reference', 'paper')
  orbit = lite_model.make_lite_model(learner, num_backprop=2, chunk_size=4,
                                     query_batch_size=QUERY_BATCH, support_scaling='orbit')
  orbit.compile(optimizer=lite_model.make_optimizer(tasks_per_step=TASKS_PER_STEP),
                jit_compile=False)
  assert orbit.with_step(2, 3, 4, None).support_scaling == 'orbit'
  episode, seed = small_episode(), tf.constant([0, 7], tf.int64)
  _, got, _ = orbit.task_gradients(episode, learner.trainable_variables, seed)
  _, expected, _ = estimator.lite_task_gradients(
      learner, episode, learner.trainable_variables, 2, 4, QUERY_BATCH, seed=seed,
      regularizer_scale=float(TASKS_PER_STEP), loss_accounting='reference',
      support_scaling='orbit')
  _assert_close(got, expected)
  with pytest.raises(ValueError, match=r"lite\.support_scaling must be one of \['paper', "
                                       r"'none', 'orbit'\]; got 'unit'"):
    lite_model.make_lite_model(learner, support_scaling='unit')
  with pytest.raises(ValueError, match=r'lite\.regularizer_accounting must be one of'):
    estimator.lite_task_gradients(learner, small_episode(), learner.trainable_variables, 2,
                                  4, QUERY_BATCH, loss_accounting='twice')
