"""The set encoder: the reference's floored pooling, and the same weights under every norm."""

import numpy as np
import pytest
import tensorflow as tf

from lite_tf.learners import set_encoder


def _map_sizes(encoder, size):
  """The side of the feature map after each block, recorded from the pool's outputs."""
  sizes = [size]
  pool_call = encoder.pool.call

  def recording(x):
    out = pool_call(x)
    sizes.append(int(out.shape[1]))
    return out

  encoder.pool.call = recording
  try:
    encoder(tf.zeros([1, size, size, 3]))
  finally:
    encoder.pool.call = pool_call
  return sizes


def test_pooling_floors_as_the_references_max_pool():
  """MaxPool2d(2, 2) (ceil_mode=False) in cambridge-mlg/LITE's set_encoder.py: 84 goes
  84-42-21-10-5-2 (padding 'same' gave 84-42-21-11-6-3), 224 ends at 7."""
  encoder = set_encoder.SetEncoder()
  encoder.build((None, 84, 84, 3))
  assert _map_sizes(encoder, 84) == [84, 42, 21, 10, 5, 2]
  assert _map_sizes(encoder, 224) == [224, 112, 56, 28, 14, 7]
  earlier = set_encoder.SetEncoder(pooling='same')  # lite_tf's before: old runs resume with it
  earlier.build((None, 84, 84, 3))
  assert _map_sizes(earlier, 84) == [84, 42, 21, 11, 6, 3]


def test_small_images_keep_their_last_pixel():
  """Below 32 pixels the reference fails (a 1-pixel map cannot be pooled); here it is kept."""
  encoder = set_encoder.SetEncoder()
  encoder.build((None, 28, 28, 3))
  assert _map_sizes(encoder, 28) == [28, 14, 7, 3, 1]
  out = encoder(tf.random.uniform([2, 16, 16, 3]))
  assert out.shape == (2, 64) and np.all(np.isfinite(out.numpy()))


@pytest.mark.parametrize('norm', ['task', 'batch'])
def test_weights_are_the_same_under_task_and_batch_norm(norm):
  """'task' and 'batch' hold the same weights (names and shapes), so saved ones load either
  way: 5 x [Conv3x3(64) with bias, BatchNorm(64) affine], 150,144 parameters."""
  encoder = set_encoder.SetEncoder(norm=norm)
  encoder.build((None, 84, 84, 3))
  assert [(v.path, tuple(v.shape)) for v in encoder.weights] == [
      (v.path, tuple(v.shape)) for v in _reference_weights()]
  assert sum(int(np.prod(v.shape)) for v in encoder.weights) == 150144


def _reference_weights():
  encoder = set_encoder.SetEncoder(norm='batch')
  encoder.build((None, 84, 84, 3))
  return encoder.weights
