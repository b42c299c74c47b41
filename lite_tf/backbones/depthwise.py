"""A depthwise convolution whose bfloat16 input gradient, when strided, is computed in float32.

On CPU, TF's bfloat16 kernel for the input gradient of a *strided* depthwise convolution
(`DepthwiseConv2dNativeBackpropInput`) ran 9x slower than the float32 one on this project's
machine (40 x 42 x 42 x 96, 3x3, stride 2: 38.7 against 4.3 ms, casts included; stride 1 is not
affected: 2.2 ms in bfloat16), and it was what made a mixed_bfloat16 Simple CNAPs +
EfficientNet-B0 step slower than a float32 one (docs/BENCHMARKS.md). Under a bfloat16 compute
dtype, `DepthwiseConv2D` keeps the forward pass and the kernel's gradient in bfloat16 and
computes the input gradient of a strided call in float32 (the upstream gradient and the kernel
cast up, the result cast back): the same mathematics at float32 accuracy. Every other case
(float32, float16, stride 1, dilation) is keras.layers.DepthwiseConv2D's own call.

`depthwise.float32_strided_input_gradient`: None (default) does this where no GPU is visible
(TF's GPU kernels do not have the slow path); True or False forces it on or off.
"""

import gin
import tensorflow as tf
from keras import layers


@gin.configurable('depthwise')
def float32_strided_input_gradient(enabled=None):
  """Whether strided bfloat16 depthwise convolutions take their input gradient in float32."""
  if enabled is None:
    return not tf.config.list_logical_devices('GPU')
  return bool(enabled)


def _strided_depthwise(strides, padding):
  """tf.nn.depthwise_conv2d(x, kernel, strides, padding), NHWC, with the input gradient in
  float32; both gradients come back in the inputs' dtypes."""

  @tf.custom_gradient
  def conv(x, kernel):
    y = tf.nn.depthwise_conv2d(x, kernel, strides, padding)

    def grad(dy):
      dx = tf.nn.depthwise_conv2d_backprop_input(
          tf.shape(x), tf.cast(kernel, tf.float32), tf.cast(dy, tf.float32), strides, padding)
      # Pruned from the graph when the kernel is frozen (nothing asks for its gradient).
      dkernel = tf.nn.depthwise_conv2d_backprop_filter(x, tf.shape(kernel), dy, strides,
                                                       padding)
      return tf.cast(dx, x.dtype), dkernel

    return y, grad

  return conv


class DepthwiseConv2D(layers.DepthwiseConv2D):
  """keras.layers.DepthwiseConv2D (same weights, names and results) with a float32 input
  gradient for strided bfloat16 calls where `float32_strided_input_gradient()` says so."""

  def call(self, inputs):
    strided = tuple(self.strides) != (1, 1)
    if (inputs.dtype != tf.bfloat16 or not strided or tuple(self.dilation_rate) != (1, 1)
        or self.data_format != 'channels_last' or not float32_strided_input_gradient()):
      return super().call(inputs)
    outputs = _strided_depthwise((1, *self.strides, 1), self.padding.upper())(
        inputs, tf.cast(self.kernel, inputs.dtype))
    if self.use_bias:
      outputs = outputs + tf.cast(self.bias, outputs.dtype)
    if self.activation is not None:
      outputs = self.activation(outputs)
    return outputs
