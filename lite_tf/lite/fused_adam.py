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

  def update_step(self, gradient, variable, learning_rate):
    handle = getattr(variable, 'handle', None)
    if self.amsgrad or handle is None or isinstance(gradient, tf.IndexedSlices):
      return super().update_step(gradient, variable, learning_rate)
    dtype = variable.dtype
    index = self._get_variable_index(variable)
    step = tf.cast(self.iterations + 1, dtype)
    beta_1 = tf.cast(self.beta_1, dtype)
    beta_2 = tf.cast(self.beta_2, dtype)
    tf.raw_ops.ResourceApplyAdam(
        var=handle, m=self._momentums[index].handle, v=self._velocities[index].handle,
        beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
        lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
        epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype))
    return None
