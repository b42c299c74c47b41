"""Tests written for the mutants that survived `make mutation` (docs/MUTATION_TESTING.md lists
which test kills which): the paths of lite_tf/lite/estimator.py that the LITE property tests
do not reach (test-time adaptation with per-task BatchNorm statistics, query features, the
servable state, recomputed micro-batches of an unknown number of rows, reduced and double
precision sums, given context subsets, the documented seed fold-ins, every refusal's message),
and edge cases of ORBIT's metrics."""

import types
import warnings

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import relative_error
from conftest import small_episode
from lite_tf.learners import base
from lite_tf.learners import simple_cnaps
from lite_tf.learners.protonets import ProtoNets
from lite_tf.lite import estimator
from lite_tf.training import orbit_metrics
# pylint: disable=g-bad-import-order
# learner: Simple CNAPs whose FiLM penalty is not negligible beside the cross-entropy.
from test_loss_accounting import learner  # pylint: disable=unused-import
from test_task_norm import _randomize_batch_norm


@pytest.fixture(scope='module', params=['moving', 'task'])
def protonets(request):
  """ProtoNets on Conv-4 at 16x16 whose BatchNorm uses its moving statistics or the task's
  (batch_norm.statistics)."""
  gin.bind_parameter('batch_norm.statistics', request.param)
  keras.utils.set_random_seed(2)
  model = ProtoNets(backbone='conv4', image_size=16)
  gin.clear_config()
  model(small_episode().to_dict())
  _randomize_batch_norm(model.backbone, 3)
  assert model.uses_task_statistics() == (request.param == 'task')
  return model


def _close(actual, expected):
  """Equal to float32 rounding (chunks and query batches of other sizes round otherwise)."""
  expected = np.asarray(expected)
  np.testing.assert_allclose(np.asarray(actual), expected,
                             atol=1e-4 * float(np.abs(expected).max()))


def test_test_time_adaptation_is_the_one_pass_forward(protonets):
  """adapt_task in chunks, then the query logits from the state and from the state's query
  features, equal the logits of one forward pass (Learner.call), with either statistics."""
  episode = small_episode(num_support=6, num_query=5)
  expected = protonets(episode.to_dict()).numpy()
  adapted = estimator.adapt_task(protonets, episode, chunk_size=4)
  assert isinstance(adapted, dict) == protonets.uses_task_statistics()
  if protonets.uses_task_statistics():
    assert sorted(adapted) == ['batch_norm', 'task']
    assert len(adapted['batch_norm']) == protonets.backbone.task_norm.num_layers
  images = episode.query_images
  _close(estimator.adapted_query_logits(protonets, adapted, images), expected)
  features = estimator.adapted_query_features(protonets, adapted, images)
  assert features.shape == (5, protonets.backbone.feature_dim)
  _close(estimator.adapted_logits_from_features(protonets, adapted, features), expected)
  _close(estimator.adapt_and_predict(protonets, episode, chunk_size=4, query_batch_size=2),
         expected)
  # Not trivial: the batch's statistics (training mode) give other logits.
  batch_mode = protonets.query_logits(adapted['task'] if isinstance(adapted, dict) else adapted,
                                      images, training=True).numpy()
  assert np.abs(batch_mode - expected).max() > 1e-2 * np.abs(expected).max()


def test_lite_step_is_the_full_forward_with_either_statistics(protonets):
  """A LITE step (|H| = 2 of 6, chunks of 4) normalises with the task's statistics when the
  backbone uses them, so its loss and predictions are the full forward pass's."""
  episode = small_episode(num_support=6, num_query=5)
  variables = protonets.trainable_variables
  full_loss, _, full_predictions = estimator.full_task_gradients(protonets, episode, variables)
  loss, _, predictions = estimator.lite_task_gradients(protonets, episode, variables, 2, 4, 3,
                                                       seed=(2, 3))
  np.testing.assert_allclose(float(loss), float(full_loss), rtol=1e-5)
  assert predictions.dtype == tf.int32
  np.testing.assert_array_equal(predictions, full_predictions)


@pytest.fixture(scope='module', params=['moving', 'task'])
def adapted_simple_cnaps(request):
  """(Simple CNAPs ('woodbury'), its episode, adapt_task's state) with the backbone's BatchNorm
  on its moving statistics or the task's."""
  gin.bind_parameter('batch_norm.statistics', request.param)
  keras.utils.set_random_seed(4)
  model = simple_cnaps.SimpleCnaps(backbone='conv4', image_size=16, set_encoder_norm='none')
  gin.clear_config()
  episode = small_episode(num_support=6, num_query=4)
  model(episode.to_dict())
  return model, episode, estimator.adapt_task(model, episode, chunk_size=3)


def test_servable_state_gives_the_same_logits_through_the_inverse(adapted_simple_cnaps):
  """estimator.servable_state holds G_k^-1 instead of its Cholesky factor, beside the same
  BatchNorm statistics, and gives the same logits."""
  model, episode, adapted = adapted_simple_cnaps
  servable = estimator.servable_state(model, adapted)
  task = servable['task'] if model.uses_task_statistics() else servable
  assert 'gram_inverse' in task['mahalanobis'] and 'cholesky' not in task['mahalanobis']
  if model.uses_task_statistics():
    assert sorted(servable) == ['batch_norm', 'task']
    assert servable['batch_norm'] is adapted['batch_norm']
  _close(estimator.adapted_query_logits(model, servable, episode.query_images),
         estimator.adapted_query_logits(model, adapted, episode.query_images))


def test_adapted_query_features_carry_the_task_film(adapted_simple_cnaps):
  """A learner whose query features depend on the task (FiLM): the logits of the state's query
  features are the state's query logits."""
  model, episode, adapted = adapted_simple_cnaps
  features = estimator.adapted_query_features(model, adapted, episode.query_images)
  _close(estimator.adapted_logits_from_features(model, adapted, features),
         estimator.adapted_query_logits(model, adapted, episode.query_images))


def _row_fn(weights):
  """A row-wise fn(images [m, 3], extra (shift [3], scale [], unused [1])) -> [m, 2] reading a
  variable."""

  def fn(x, extra):
    # Like every backbone under LITE_TF_CHECK_EMPTY_BATCHES: no call on an empty batch.
    with tf.control_dependencies([tf.debugging.assert_positive(tf.shape(x)[0])]):
      return tf.tanh(tf.matmul(x * extra[1] + extra[0], weights))

  return fn


@pytest.mark.parametrize('mode', estimator.RECOMPUTE_MODES)
@pytest.mark.parametrize('n', [3, 5])
def test_recomputed_rows_value_and_gradients_with_an_unknown_number_of_rows(mode, n):
  """recomputed_rows in micro-batches of 2 (the last one short; with max_rows 8 and n unknown
  to the trace, 'unrolled' runs micro-batches past n on one row and drops them) equals fn on
  all rows, in value and in the gradients of the nested `extra` and of the variable, static n
  or not; a variable in `wrt` and a tensor of `extra` that fn does not read get none."""
  weights = tf.Variable(tf.random.stateless_normal([3, 2], seed=[1, 2]))
  unused = tf.Variable([1.0])
  extra = (tf.constant([0.1, -0.2, 0.3]), tf.constant(1.5), tf.constant([7.0]))
  images = tf.random.stateless_normal([n, 3], seed=[3, 4])
  upstream = tf.random.stateless_normal([n, 2], seed=[5, 6])
  fn = _row_fn(weights)

  def value_and_grads(run, x):
    with tf.GradientTape() as tape:
      tape.watch(extra)
      y = run(x)
      loss = tf.reduce_sum(y * upstream)
    grads = tape.gradient(loss, [extra[0], extra[1], weights, unused, extra[2]])
    return y, grads[:3], grads[3:]

  expected, expected_grads, _ = value_and_grads(lambda x: fn(x, extra), images)
  recomputed = lambda x: estimator.recomputed_rows(fn, x, extra, 2, 8, mode, [weights, unused])
  unknown_rows = tf.function(lambda x: value_and_grads(recomputed, x),
                             input_signature=[tf.TensorSpec([None, 3], tf.float32)])
  for y, grads, unused_grads in (value_and_grads(recomputed, images), unknown_rows(images)):
    assert y.shape == (n, 2)
    np.testing.assert_allclose(y.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    for g, e in zip(grads, expected_grads):
      np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-5, atol=1e-6)
    assert all(g is None or not np.any(g.numpy()) for g in unused_grads)


def test_recomputed_rows_default_mode_and_refusals():
  """The default mode ('loop') gives fn's rows; an unknown mode and an fn of several outputs are refused
  with their messages."""
  weights = tf.Variable(tf.ones([3, 2]))
  extra = (tf.zeros([3]), tf.constant(1.0), tf.zeros([1]))
  images = tf.ones([3, 3])
  np.testing.assert_allclose(
      estimator.recomputed_rows(_row_fn(weights), images, extra, 2, 4).numpy(),
      _row_fn(weights)(images, extra).numpy(), rtol=1e-6)
  with pytest.raises(ValueError) as error:
    estimator.recomputed_rows(_row_fn(weights), images, extra, 2, 4, 'fused')
  assert str(error.value) == ("lite.recompute_mode must be one of ['unrolled', 'loop']; got "
                              "'fused'")
  with pytest.raises(ValueError, match=r'^recomputed_rows: fn must return one tensor; got '):
    estimator.recomputed_rows(lambda x, e: (x, x), images, extra, 2, 4, 'loop')


@pytest.mark.parametrize('dtype,rows,expected', [
    # float16 sums of 2048 + 1 + 1 + 1 round to 2048 step by step; in float32, 2051 -> 2052.
    (tf.float16, [2048.0, 1.0, 1.0, 1.0], 2052.0),
    # float64 keeps 1 + 3e-9, which float32 sums would round to 1.
    (tf.float64, [1.0, 1e-9, 1e-9, 1e-9], 1.0 + 3e-9)])
def test_looped_gradients_are_summed_in_float32_or_better(dtype, rows, expected):
  """'loop' recomputation sums the micro-batches' gradients of a reduced-precision tensor in
  float32 and those of a float64 one in float64."""
  scale = tf.constant(1.0, dtype)
  images = tf.constant(rows, dtype)[:, None]
  with tf.GradientTape() as tape:
    tape.watch(scale)
    total = tf.reduce_sum(estimator.recomputed_rows(lambda x, s: x * s, images, scale, 1, 4,
                                                    'loop'))
  grad = tape.gradient(total, scale)
  assert grad.dtype == dtype
  np.testing.assert_allclose(float(grad), expected, rtol=1e-12)


def test_grappler_add_rewrite_is_turned_off_once(monkeypatch):
  """disable_grappler_add_rewrite sets arithmetic_optimization to False when it is unset or
  on, and leaves it alone when it is already off."""
  calls = []
  monkeypatch.setattr(tf.config.optimizer, 'set_experimental_options', calls.append)
  for options, expected in (({}, [{'arithmetic_optimization': False}]),
                            ({'arithmetic_optimization': True},
                             [{'arithmetic_optimization': False}]),
                            ({'arithmetic_optimization': False}, [])):
    calls.clear()
    monkeypatch.setattr(tf.config.optimizer, 'get_experimental_options',
                        lambda options=options: dict(options))
    estimator.disable_grappler_add_rewrite()
    assert calls == expected, options


def _refused(learner, message, **kwargs):
  args = dict(num_backprop=2, chunk_size=3, query_batch_size=4)
  args.update(kwargs)
  with pytest.raises(ValueError) as error:
    estimator.lite_task_gradients(learner, small_episode(), learner.trainable_variables, **args)
  assert str(error.value) == message


def test_bad_lite_arguments_are_refused_with_their_message(protonets):
  """Every refusal of lite_task_gradients, word for word; the smallest accepted values pass."""
  if protonets.uses_task_statistics():
    pytest.skip('the refusals do not depend on the BatchNorm statistics')
  _refused(protonets, "lite.context_subset must be one of ['independent', 'shared']; got 'both'",
           context_subset='both')
  _refused(protonets, "lite.regularizer_accounting must be one of ['reference', 'per_task']; "
           "got 'twice'", loss_accounting='twice')
  _refused(protonets, "lite.support_scaling must be one of ['paper', 'none', 'orbit']; got "
           "'half'", support_scaling='half')
  _refused(protonets, 'num_backprop (|H|) must be >= 0; got -1', num_backprop=-1)
  _refused(protonets, 'query_batch_size must be positive; got 0', query_batch_size=0)
  for length in (0, True, 2.0):
    _refused(protonets, 'lite.backprop_clip_length must be None or an integer >= 1; got '
             f'{length!r}', backprop_clip_length=length)
  episode = small_episode()
  for kwargs in (dict(num_backprop=0, query_batch_size=1), dict(backprop_clip_length=1)):
    args = dict(num_backprop=2, chunk_size=3, query_batch_size=4)
    args.update(kwargs)
    estimator.lite_task_gradients(protonets, episode, protonets.trainable_variables, **args)


def test_refusals_of_a_learner_with_a_task_context(learner):
  _refused(learner, "lite.num_backprop = 0 leaves SimpleCnaps's task context (set encoder) "
           'without gradient; use lite.num_backprop >= 1', num_backprop=0)
  _refused(learner, "context_subset='independent' with backprop_indices needs "
           'context_indices too', backprop_indices=tf.constant([[0, 1], [2, 3]]))


def test_full_task_gradients_is_the_loss_with_its_penalty_and_loss_scale(learner):
  """full_task_gradients: the loss is the mean query cross-entropy of the inference-mode
  forward pass plus the penalty; loss_scale scales the gradients, not the loss; predictions
  are the int32 argmax over the classes."""
  episode = small_episode(num_support=6, num_query=5)
  variables = learner.trainable_variables
  loss, grads, predictions = estimator.full_task_gradients(learner, episode, variables)
  logits = learner(episode.to_dict(), training=False)
  penalty = float(learner.regularization_loss())
  assert penalty > 0.1
  np.testing.assert_allclose(
      float(loss), float(base.mean_cross_entropy(logits, episode.query_labels)) + penalty,
      rtol=1e-6)
  assert predictions.dtype == tf.int32
  np.testing.assert_array_equal(predictions, np.argmax(logits.numpy(), -1))
  scaled_loss, scaled, _ = estimator.full_task_gradients(learner, episode, variables,
                                                         loss_scale=4.0)
  assert float(scaled_loss) == float(loss)
  for g, s in zip(grads, scaled):
    np.testing.assert_allclose(s.numpy(), 4.0 * g.numpy(), rtol=1e-5, atol=1e-7)


@pytest.fixture(scope='module')
def shipped():
  """Simple CNAPs as shipped (set_encoder_norm='task': H_c's set-encoder rows normalised with
  the whole context set's statistics), built."""
  keras.utils.set_random_seed(5)
  model = simple_cnaps.SimpleCnaps(backbone='conv4', image_size=16)
  assert model.set_encoder.norm == 'task'
  model(small_episode().to_dict())
  return model


def _shipped_step(model):
  episode = small_episode(num_support=6, num_query=7)
  return episode, lambda: estimator.lite_task_gradients(
      model, episode, model.trainable_variables, 2, 3, 4, seed=(1, 2))


def test_shipped_context_learner_is_the_full_forward(shipped):
  """A LITE step with |H| = 2 of 6 has the full-set loss and predictions."""
  episode, step = _shipped_step(shipped)
  full_loss, _, full_predictions = estimator.full_task_gradients(
      shipped, episode, shipped.trainable_variables)
  loss, _, predictions = step()
  np.testing.assert_allclose(float(loss), float(full_loss), rtol=1e-5)
  np.testing.assert_array_equal(predictions, full_predictions)


@pytest.mark.slow
def test_shipped_context_learner_traced_step_is_the_eager_one(shipped):
  """The traced step (about 20 s on 2 cores) gives the eager step's loss and gradients."""
  _, step = _shipped_step(shipped)
  loss, grads, _ = step()
  graph_loss, graph_grads, _ = tf.function(step)()
  np.testing.assert_allclose(float(graph_loss), float(loss), rtol=1e-6)
  assert relative_error(graph_grads, grads) < 1e-5


def test_given_context_subsets_are_the_ones_back_propagated(learner):
  """context_indices are H_c: equal to backprop_indices they give context_subset='shared''s
  gradient, other subsets another one."""
  episode = small_episode(num_support=6, num_query=7)
  variables = learner.trainable_variables
  subsets = tf.constant([[0, 1], [2, 3]])
  step = lambda **kwargs: estimator.lite_task_gradients(
      learner, episode, variables, 2, 3, 4, backprop_indices=subsets, **kwargs)[1]
  shared = step(context_subset='shared')
  assert relative_error(step(context_indices=subsets), shared) < 1e-6
  assert relative_error(step(context_indices=tf.constant([[4, 5], [0, 5]])), shared) > 1e-3


def test_draws_are_the_documented_fold_ins():
  """Query batch b draws H with fold_in(seed, b) and H_c with fold_in(fold_in(seed, b), 1)
  (estimator._backprop_subset, _context_subset), so that runs repeat exactly."""
  seed = tf.constant([3, 4], tf.int64)
  task = types.SimpleNamespace(
      no_support_path=False, backprop_indices=None, context_indices=None,
      backprop_clip_length=None, n=6, num_backprop=2, context_subset='independent', seed=seed)
  for b in range(3):
    batch_seed = tf.random.experimental.stateless_fold_in(seed, tf.constant(b, tf.int64))
    chosen, rest = estimator._backprop_subset(task, tf.constant(b))  # pylint: disable=protected-access
    expected, expected_rest = estimator.sample_backprop_indices(batch_seed, 6, 2)
    np.testing.assert_array_equal(chosen, expected)
    np.testing.assert_array_equal(rest, expected_rest)
    context = estimator._context_subset(task, tf.constant(b), chosen)  # pylint: disable=protected-access
    np.testing.assert_array_equal(context, estimator.sample_backprop_indices(
        tf.random.experimental.stateless_fold_in(batch_seed, tf.constant(1, tf.int64)),
        6, 2)[0])


def test_orbit_empty_averages_and_one_frame_labels():
  """An empty average is NaN with n = 0; a label array of one frame is scored like its label,
  one of two frames is not (ORBIT's code cannot score frame labels)."""
  assert np.isnan(orbit_metrics.confidence_interval([]))
  empty = orbit_metrics._mean_ci([])  # pylint: disable=protected-access
  assert np.isnan(empty['mean']) and np.isnan(empty['ci95']) and empty['n'] == 0
  assert orbit_metrics._mean_ci([1.0, None]) == {'mean': None, 'ci95': None, 'n': 2}  # pylint: disable=protected-access
  assert orbit_metrics.video_accuracy(np.array([2]), [2, 2, 1]) == 1.0
  assert orbit_metrics.video_accuracy(np.array([[2]]), [1]) == 0.0
  assert orbit_metrics.video_accuracy(np.array([1, 1]), [1, 1]) is None


def test_orbit_empty_averages_warn_nothing_and_float32_scores_count_in_float64():
  """mutmut's orbit_metrics survivors _mean_ci 12 and confidence_interval 7 (an empty average
  computed anyway: NaN with numpy's empty-slice warnings), 3 and 5 (scores left in their own
  dtype: ORBIT's code takes the std of Python floats, i.e. in float64)."""
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    assert np.isnan(orbit_metrics._mean_ci([])['mean'])  # pylint: disable=protected-access
    assert np.isnan(orbit_metrics.confidence_interval([]))
  scores = np.random.RandomState(0).uniform(0.0, 1.0, 1001).astype(np.float32)
  expected = 1.96 * np.std(scores.astype(np.float64)) / np.sqrt(len(scores))
  assert orbit_metrics.confidence_interval(scores) == float(expected)


def test_orbit_summary_of_no_video_names_it():
  """summarize 11: the refusal of tasks without any target video says so."""
  task = orbit_metrics.TaskResult('P1', 0, ['pen'], [])
  with pytest.raises(ValueError, match=r'^no target videos to score \(every task is empty\)$'):
    orbit_metrics.summarize([task])


def test_orbit_predictions_json_orders_tasks_by_user_and_index():
  v = orbit_metrics.VideoResult
  results = [orbit_metrics.TaskResult('P2', 1, ['pen'], [v('c', 0, [5], [0])]),
             orbit_metrics.TaskResult('P1', 1, ['cup'], [v('b', 0, [2.0], [0])]),
             orbit_metrics.TaskResult('P1', 0, ['key'], [v('a', 0, [1], [0])])]
  out = orbit_metrics.predictions_json(results)
  assert list(out) == ['P1', 'P2']
  assert [t['task_object_list'] for t in out['P1']] == [['key'], ['cup']]
  assert out['P1'][1]['task_videos'] == {'b': {'2': 0}}


def test_recomputed_lite_steps_are_the_plain_ones(protonets, learner):
  """LITE with recompute_batch ('unrolled'; 'loop' is tested above on its own) gives the
  gradient without it: drawn subsets, given subsets larger than num_backprop, whole clips, and
  a learner with a task context."""
  if protonets.uses_task_statistics():
    pytest.skip('recomputation does not depend on the BatchNorm statistics')
  episode = small_episode(num_support=6, num_query=7)

  def grads(model, **kwargs):
    return estimator.lite_task_gradients(model, episode, model.trainable_variables,
                                         chunk_size=3, query_batch_size=4, **kwargs)[1]

  subsets = tf.constant([[0, 2, 4], [1, 3, 5]])
  for kwargs, recompute in (
      (dict(num_backprop=3, seed=(1, 2)), dict(recompute_batch=2)),
      (dict(num_backprop=1, backprop_indices=subsets), dict(recompute_batch=2)),
      (dict(num_backprop=1, backprop_clip_length=2, seed=(3, 4)), dict(recompute_batch=1))):
    assert relative_error(grads(protonets, **kwargs, **recompute),
                          grads(protonets, **kwargs)) < 1e-5, kwargs
  kwargs = dict(num_backprop=2, seed=(1, 2))
  assert relative_error(grads(learner, **kwargs, recompute_batch=1),
                        grads(learner, **kwargs)) < 1e-5


def test_single_image_subsets_average_to_the_full_gradient(protonets):
  """|H| = 1: the N/|H| = 6 weight of each of the 6 one-image subsets makes their average the
  full gradient."""
  if protonets.uses_task_statistics():
    pytest.skip('tested with the moving statistics')
  episode = small_episode(num_support=6, num_query=7)
  variables = protonets.trainable_variables
  _, full, _ = estimator.full_task_gradients(protonets, episode, variables)
  total = [tf.zeros_like(v) for v in variables]
  for i in range(6):
    _, grads, _ = estimator.lite_task_gradients(protonets, episode, variables, 1, 3, 7,
                                                backprop_indices=tf.constant([[i]]))
    total = [t + g for t, g in zip(total, grads)]
  assert relative_error([t / 6 for t in total], full) < 1e-5


def test_later_query_batches_reuse_the_cache_and_count_the_penalty_once():
  """Kills _accumulate_query_batches mutant 14 (later batches given no cache: they rebuild it
  and add the penalty to the reported loss again; since issue #31 the batches are
  _all_query_batches' loop, the first batch's role a bool tensor), and the one-batch task's
  penalty dropped (_query_objective). Three query batches, and one, |H| = N: the reported
  loss is the full-set loss, penalty once, and the gradient the full one."""
  from lite_tf.studies import subset_pairs  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(5)
  model = simple_cnaps.SimpleCnaps(backbone='conv4', image_size=16)
  model(small_episode().to_dict())
  subset_pairs.perturb_film(model, 0.5)
  assert float(model.regularization_loss()) > 1e-3
  episode = small_episode(num_support=6, num_query=7)
  full_loss, full, _ = estimator.full_task_gradients(model, episode, model.trainable_variables)
  for query_batch_size in (3, 7):
    loss, grads, _ = estimator.lite_task_gradients(model, episode, model.trainable_variables, 6,
                                                   chunk_size=3,
                                                   query_batch_size=query_batch_size)
    np.testing.assert_allclose(float(loss), float(full_loss), rtol=1e-5)
    assert relative_error(grads, full) < 1e-5, query_batch_size


def test_loss_scale_scales_the_lite_gradients_and_not_the_objective(protonets):
  """Kills _query_objective mutants 81 and 82 (the scaled objective dropped, or divided by
  loss_scale): float16 loss scaling returns gradients times loss_scale, the objective as it
  was."""
  episode = small_episode(num_support=6)
  variables = protonets.trainable_variables
  _, objective, grads, _ = estimator.lite_task_objective(protonets, episode, variables, 2, 3, 4)
  _, scaled_objective, scaled, _ = estimator.lite_task_objective(
      protonets, episode, variables, 2, 3, 4, loss_scale=8.0)
  np.testing.assert_allclose(float(scaled_objective), float(objective), rtol=1e-6)
  assert relative_error([g / 8.0 for g in scaled], grads) < 1e-5
