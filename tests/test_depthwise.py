"""lite_tf.backbones.depthwise: a strided bfloat16 depthwise convolution whose input gradient
is computed in float32 gives keras.layers.DepthwiseConv2D's results and gradients."""

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from lite_tf.backbones import depthwise


def _grads(layer, x, dy):
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = layer(x)
  dx, dk = tape.gradient(y, [x, layer.kernel], output_gradients=dy)
  return y, dx, dk


@pytest.fixture(autouse=True)
def _clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.mark.parametrize('stride,kernel', [(2, 3), (2, 5), (1, 3)])
def test_matches_keras_layer_in_bfloat16_and_float32_reference(stride, kernel):
  """Same forward pass and kernel gradient as Keras' layer; an input gradient at least as
  close to the float32 computation as Keras' bfloat16 one (closer where strided)."""
  gin.bind_parameter('depthwise.enabled', True)
  keras.utils.set_random_seed(0)
  rng = np.random.RandomState(0)
  x32 = tf.constant(rng.normal(size=(3, 11, 11, 8)), tf.float32)
  ours = depthwise.DepthwiseConv2D(kernel, strides=stride, padding='same', use_bias=True,
                                   dtype='mixed_bfloat16')
  theirs = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding='same', use_bias=True,
                                        dtype='mixed_bfloat16')
  exact = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding='same', use_bias=True)
  for layer in (ours, theirs, exact):
    layer.build(x32.shape)
  theirs.set_weights(ours.get_weights())
  # The float32 reference with the kernel the bfloat16 calls see (rounded to bfloat16).
  exact.set_weights([tf.cast(tf.cast(w, tf.bfloat16), tf.float32) for w in ours.get_weights()])
  x = tf.cast(x32, tf.bfloat16)
  out_shape = ours.compute_output_shape(x.shape)
  dy32 = tf.constant(rng.normal(size=out_shape), tf.float32)
  dy = tf.cast(dy32, tf.bfloat16)
  y, dx, dk = _grads(ours, x, dy)
  y_k, dx_k, dk_k = _grads(theirs, x, dy)
  _, dx_ref, _ = _grads(exact, tf.cast(x, tf.float32), tf.cast(dy, tf.float32))
  assert y.dtype == tf.bfloat16 and dx.dtype == tf.bfloat16 and dk.dtype == tf.float32
  np.testing.assert_array_equal(tf.cast(y, tf.float32), tf.cast(y_k, tf.float32))
  np.testing.assert_allclose(dk, dk_k, rtol=2e-2, atol=2e-2)
  err_ours = np.abs(tf.cast(dx, tf.float32) - dx_ref).max()
  err_keras = np.abs(tf.cast(dx_k, tf.float32) - dx_ref).max()
  scale = np.abs(dx_ref).max()
  if stride > 1:
    # Computed in float32: one bfloat16 rounding of the float32 result (half an ulp, 2^-9
    # relative; 2^-8 allowed).
    assert err_ours <= scale * 2 ** -8, (err_ours, scale)
    assert err_ours <= err_keras + 1e-6 * scale
  else:
    # Unstrided: TF's own bfloat16 kernel, whose error depends on the CPU (within 2^-8 with
    # native bfloat16, 1.2x that where TF emulates it): exactly Keras' result.
    np.testing.assert_array_equal(tf.cast(dx, tf.float32), tf.cast(dx_k, tf.float32))


def test_float32_and_disabled_calls_are_keras_own():
  """float32 inputs, or the option off: exactly Keras' layer (its own call)."""
  rng = np.random.RandomState(1)
  x = tf.constant(rng.normal(size=(2, 9, 9, 4)), tf.float32)
  ours = depthwise.DepthwiseConv2D(3, strides=2, padding='same', use_bias=False)
  theirs = keras.layers.DepthwiseConv2D(3, strides=2, padding='same', use_bias=False)
  ours.build(x.shape)
  theirs.build(x.shape)
  theirs.set_weights(ours.get_weights())
  for a, b in zip(_grads(ours, x, tf.ones([2, 5, 5, 4])), _grads(theirs, x, tf.ones([2, 5, 5, 4]))):
    np.testing.assert_array_equal(a, b)
  gin.bind_parameter('depthwise.enabled', False)
  assert not depthwise.float32_strided_input_gradient()
  gin.bind_parameter('depthwise.enabled', None)
  assert depthwise.float32_strided_input_gradient() == (
      not tf.config.list_logical_devices('GPU'))


def test_efficientnet_b0_bfloat16_input_gradient_follows_float32():
  """EfficientNet-B0 uses the layer; under mixed_bfloat16 with it on, the gradient of the
  features with respect to the images points the way float32's does (cosine > 0.99)."""
  from lite_tf.backbones import efficientnet  # pylint: disable=g-import-not-at-top
  gin.bind_parameter('depthwise.enabled', True)
  images = tf.constant(np.random.RandomState(2).uniform(-1, 1, (2, 32, 32, 3)), tf.float32)
  grads = {}
  previous = keras.config.dtype_policy()
  try:
    for policy in ('float32', 'mixed_bfloat16'):
      keras.config.set_dtype_policy(policy)
      keras.utils.set_random_seed(0)
      net = efficientnet.EfficientNetB0()
      net.build(images.shape)
      assert all(isinstance(b.dwconv, depthwise.DepthwiseConv2D) for b in net.mbconv)
      if policy == 'float32':
        # He-normal kernels (Keras' default Glorot ones shrink the features to ~1e-15 over 16
        # blocks, and the gradient with them).
        rng = np.random.RandomState(3)
        for v in net.weights:
          if v.path.endswith('kernel'):
            fan_in = np.prod(v.shape[:2] if 'dwconv' in v.path else v.shape[:-1])
            v.assign(rng.normal(0, np.sqrt(2.0 / fan_in), v.shape))
        weights = net.get_weights()
      else:
        net.set_weights(weights)
      with tf.GradientTape() as tape:
        tape.watch(images)
        loss = tf.reduce_sum(tf.cast(net(tf.cast(images, net.compute_dtype)), tf.float32) ** 2)
      grads[policy] = tf.reshape(tape.gradient(loss, images), [-1])
  finally:
    keras.config.set_dtype_policy(previous)
  a, b = grads['float32'], tf.cast(grads['mixed_bfloat16'], tf.float32)
  cosine = float(tf.reduce_sum(a * b) / (tf.norm(a) * tf.norm(b)))
  assert cosine > 0.99, cosine
