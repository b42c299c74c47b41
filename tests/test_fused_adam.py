"""FusedAdam (make_optimizer's default) against keras.optimizers.Adam: the same weights and
optimizer state after steps on the same gradients, alone and accumulating tasks."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lite_tf.lite import fused_adam
from lite_tf.lite import model as lite_model


def _run(optimizer, steps, seed=0):
  rng = np.random.RandomState(seed)
  variables = [keras.Variable(rng.normal(size=shape).astype(np.float32))
               for shape in [(3, 3, 4, 8), (8,), (17,)]]
  optimizer.build(variables)

  @tf.function
  def apply(grads):
    optimizer.apply_gradients(zip(grads, variables))

  for _ in range(steps):
    # Gradients of varied scale and sign, so the bias corrections and epsilon matter.
    apply([tf.constant(rng.normal(scale=10.0 ** rng.randint(-4, 2), size=v.shape),
                       tf.float32) for v in variables])
  return ([v.numpy() for v in variables],
          [v.numpy() for v in optimizer.variables if 'iteration' not in v.name])


@pytest.mark.parametrize('accumulate', [None, 3])
def test_fused_adam_equals_keras_adam(accumulate):
  kwargs = dict(learning_rate=0.01, gradient_accumulation_steps=accumulate)
  fused, fused_state = _run(fused_adam.FusedAdam(**kwargs), 9)
  plain, plain_state = _run(keras.optimizers.Adam(**kwargs), 9)
  start, _ = _run(keras.optimizers.SGD(0.0), 0)
  # Equal up to float32 rounding (m + (1 - b1)(g - m) against b1 m + (1 - b1) g): 1.7e-7 at
  # most here, on entries of order 1 and updates of 0.01.
  for f, p in zip(fused + fused_state, plain + plain_state):
    np.testing.assert_allclose(f, p, rtol=1e-5, atol=1e-5 * np.abs(p).max())
  assert not all(np.allclose(f, s) for f, s in zip(fused, start))  # the steps moved them


def test_make_optimizer_is_fused_by_default_and_says_so_when_asked_otherwise():
  assert isinstance(lite_model.make_optimizer(), fused_adam.FusedAdam)
  assert type(lite_model.make_optimizer(fused=False)) is keras.optimizers.Adam  # pylint: disable=unidiomatic-typecheck
  with pytest.raises(ValueError, match=r'make_optimizer\.fused must be True or False'):
    lite_model.make_optimizer(fused='yes')


def test_fused_step_has_far_fewer_ops():
  """One op per variable for the update instead of Keras' element-wise chain."""
  def ops(optimizer):
    variables = [keras.Variable(np.zeros((4, 4), np.float32)) for _ in range(20)]
    optimizer.build(variables)
    graph = tf.function(lambda g: optimizer.apply_gradients(zip(g, variables))
                        ).get_concrete_function([tf.TensorSpec((4, 4))] * 20).graph
    return len(graph.get_operations())
  assert ops(fused_adam.FusedAdam()) < 0.6 * ops(keras.optimizers.Adam())
