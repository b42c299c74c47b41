"""What a traced LITE step holds (issue #31 item 2): each network pass traced once, the
optimizer's scalars once, and Grappler's lean passes on a CPU. These are what make the first
step short (docs/BENCHMARKS.md, "The first step"); the values are tested elsewhere."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import relative_error
from conftest import small_episode
from conftest import small_protonets
from lite_tf.lite import chunking
from lite_tf.lite import estimator
from lite_tf.lite import fused_adam
from lite_tf.lite import grappler

_is_lean = grappler._is_lean  # pylint: disable=protected-access
_watchable = estimator._watchable  # pylint: disable=protected-access


def _trace(fn, *specs):
  """fn traced as Keras' train step is (no AutoGraph); returns the concrete function."""
  return tf.function(fn, autograph=False).get_concrete_function(*specs)


def test_chunked_map_traces_its_function_once_and_runs_it_in_the_loop():
  calls = []

  def fn(x):
    calls.append(x.shape)
    return {'mean': tf.reduce_mean(tf.cast(x, tf.float32), [1, 2]),
            'max': tf.reduce_max(x, [1, 2, 3])}

  traced = _trace(lambda images: chunking.chunked_apply(fn, images, 2),
                  tf.TensorSpec([None, 4, 4, 3], tf.uint8))
  assert len(calls) == 1  # not once for the output shapes and again for the loop body
  images = np.random.RandomState(0).randint(0, 256, (5, 4, 4, 3)).astype(np.uint8)
  out = traced(tf.constant(images))
  np.testing.assert_allclose(out['mean'], images.astype(np.float32).mean((1, 2)), rtol=1e-6)
  np.testing.assert_array_equal(out['max'], images.max((1, 2, 3)))
  assert out['mean'].shape == (5, 3)


def test_a_traced_step_traces_one_query_batch_whatever_their_number():
  """With the query set's size unknown when tracing (as in training), the batches are one
  tf.while_loop whose body is the only trace of a query batch; run with 1, 2 and 3 batches and
  |H| = N it gives the exact loss and gradient."""
  learner = small_protonets(0)
  variables = learner.trainable_variables
  calls = []
  query_logits = learner.query_logits

  def counted(*args, **kwargs):
    calls.append(1)
    return query_logits(*args, **kwargs)

  learner.query_logits = counted
  try:
    def step(support, support_labels, query, query_labels):
      from lite_tf.episode import Episode  # pylint: disable=g-import-not-at-top
      episode = Episode(support, support_labels, query, query_labels, tf.constant(3))
      loss, grads, _ = estimator.lite_task_gradients(
          learner, episode, variables, num_backprop=6, chunk_size=3, query_batch_size=3)
      return loss, grads

    traced = _trace(step, tf.TensorSpec([None, 16, 16, 3], tf.float32),
                    tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, 16, 16, 3], tf.float32),
                    tf.TensorSpec([None], tf.int32))
    assert len(calls) == 1
    for num_query in (2, 5, 7):
      episode = small_episode(num_support=6, num_query=num_query)
      loss, grads = traced(episode.support_images, episode.support_labels,
                           episode.query_images, episode.query_labels)
      full_loss, full, _ = estimator.full_task_gradients(learner, episode, variables)
      np.testing.assert_allclose(float(loss), float(full_loss), rtol=1e-5)
      assert relative_error(grads, full) < 1e-5, num_query
  finally:
    learner.query_logits = query_logits


def test_fused_adam_computes_its_scalars_once_per_update():
  variables = [tf.Variable(tf.ones(shape)) for shape in [(3, 3), (4,), (2, 5), (7,)]]
  optimizer = fused_adam.FusedAdam(learning_rate=0.01)
  optimizer.build(variables)
  traced = _trace(lambda grads: optimizer.apply_gradients(zip(grads, variables)),
                  [tf.TensorSpec(v.shape, tf.float32) for v in variables])
  ops = [op.type for op in traced.graph.get_operations()]
  assert ops.count('ResourceApplyAdam') == len(variables)
  assert ops.count('Pow') == 2  # beta_1^t and beta_2^t, shared by the four variables


def test_lean_grappler_passes_on_a_cpu(monkeypatch):
  """The traced LITE step sets LEAN_CPU_PASSES for the thread's function calls, on top of the
  ArithmeticOptimizer being off; grappler.lean_on_cpu = False and a GPU leave TF's passes."""
  tf.config.optimizer.set_experimental_options({})  # resets the thread's options
  assert not _is_lean(grappler.current_rewrite_options())
  assert not grappler.configure(lean_on_cpu=False)
  assert not _is_lean(grappler.current_rewrite_options())
  learner = small_protonets(0)
  _trace(lambda: estimator.lite_task_gradients(learner, small_episode(),
                                               learner.trainable_variables, 2, 3, 7))
  options = grappler.current_rewrite_options()
  for field, value in grappler.LEAN_CPU_PASSES.items():
    assert getattr(options, field) == value, field
  assert options.arithmetic_optimization == grappler.rewriter_config_pb2.RewriterConfig.OFF

  tf.config.optimizer.set_experimental_options({})
  monkeypatch.setattr(tf.config, 'list_logical_devices',
                      lambda kind=None: ['/device:GPU:0'] if kind == 'GPU' else [])
  assert not grappler.configure()
  assert not _is_lean(grappler.current_rewrite_options())


@pytest.fixture(autouse=True)
def _lean_again():
  yield
  tf.config.optimizer.set_experimental_options({})
  estimator.disable_grappler_add_rewrite()


def test_the_query_batch_watches_tf_and_keras_variables():
  """The query batch's tape watches only the differentiated variables: a Keras variable (a
  learner's) through its tf.Variable, a tf.Variable as it is, anything else refused (never
  left unwatched with a zero gradient)."""
  import keras  # pylint: disable=g-import-not-at-top
  assert isinstance(_watchable(tf.Variable(1.0)), tf.Variable)
  keras_variable = keras.Variable(1.0)
  assert isinstance(_watchable(keras_variable), tf.Variable)
  with pytest.raises(TypeError, match='cannot watch'):
    _watchable(tf.constant(1.0))
