"""Adam with one fused update op per variable (TF's ResourceApplyAdam).

Keras 3's Adam writes its update as some 25 element-wise ops per variable; for a FiLM-ed
EfficientNet-B0 with its set encoder and FiLM generators (~270 variables) that is ~6,000 ops
of a traced training step's ~26,000, which TensorFlow traces, optimises (Grappler) and keeps
for every traced step. ResourceApplyAdam computes the same update in one kernel:

  alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
  m <- m + (1 - beta_1) (g - m);  v <- v + (1 - beta_2) (g^2 - v)
  w <- w - alpha m / (sqrt(v) + epsilon)

which is Keras' Adam (the same epsilon placement). AMSGrad, sparse (IndexedSlices) gradients
and variables without a resource handle fall back to Keras' own update.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable('lite_tf')
class FusedAdam(keras.optimizers.Adam):
  """keras.optimizers.Adam whose per-variable update is one ResourceApplyAdam op."""

  _step_scalars = None  # {(dtype, device): the update's scalars} during one update

  def _backend_update_step(self, grads, trainable_variables, learning_rate):
    # One set of the update's scalars (the step, beta powers, lr and epsilon casts) per dtype
    # and device for all variables, instead of some 9 ops per variable in a traced step.
    self._step_scalars = {}
    try:
      return super()._backend_update_step(grads, trainable_variables, learning_rate)
    finally:
      self._step_scalars = None

  def _scalars(self, dtype, device, learning_rate):
    key = (dtype, device)
    if self._step_scalars is not None and key in self._step_scalars:
      return self._step_scalars[key]
    step = tf.cast(self.iterations + 1, dtype)
    beta_1 = tf.cast(self.beta_1, dtype)
    beta_2 = tf.cast(self.beta_2, dtype)
    scalars = dict(beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
                   lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
                   epsilon=tf.cast(self.epsilon, dtype))
    if self._step_scalars is not None:
      self._step_scalars[key] = scalars
    return scalars

  def update_step(self, gradient, variable, learning_rate):
    handle = getattr(variable, 'handle', None)
    if self.amsgrad or handle is None or isinstance(gradient, tf.IndexedSlices):
      return super().update_step(gradient, variable, learning_rate)
    dtype = variable.dtype
    index = self._get_variable_index(variable)
    tf.raw_ops.ResourceApplyAdam(
        var=handle, m=self._momentums[index].handle, v=self._velocities[index].handle,
        grad=tf.cast(gradient, dtype),
        **self._scalars(dtype, getattr(variable, 'device', None), learning_rate))
    return None
