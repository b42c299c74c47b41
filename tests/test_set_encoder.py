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


def _generic_statistics(encoder, images, chunk_size):
  """The one-pass-per-layer statistics (task_norm.task_statistics) and the embeddings of
  one more chunked pass with them: what the staged passes replace."""
  from lite_tf.backbones import task_norm  # pylint: disable=g-import-not-at-top
  from lite_tf.lite import chunking  # pylint: disable=g-import-not-at-top
  statistics = task_norm.task_statistics(encoder.norm_state, encoder, images, chunk_size,
                                         chunking.chunked_apply)
  with encoder.norm_state.fixed(statistics):
    return statistics, chunking.chunked_apply(encoder, images, chunk_size)


@pytest.mark.parametrize('size,kb,stashed_from', [(40, 256, 1), (40, 8, 3), (40, 4, 4),
                                                  (40, 0, None), (84, 256, 2)])
@pytest.mark.parametrize('graph', [False, True])
def test_staged_statistics_are_the_one_pass_per_layer_ones(size, kb, stashed_from, graph):
  """The staged passes (a stash of block k's inputs once they fit kb per image) give the
  statistics and embeddings of one pass per layer from the images, in eager mode and in a
  traced function with the number of images unknown; the stash starts where the bound says."""
  from lite_tf.lite import chunking  # pylint: disable=g-import-not-at-top
  tf.keras.utils.set_random_seed(3)
  encoder = set_encoder.SetEncoder(norm='task')
  encoder.build((None, size, size, 3))
  for norm in encoder.norms:  # away from the initial unit scale and zero shift
    norm.gamma.assign(tf.random.uniform(norm.gamma.shape, 0.5, 1.5))
    norm.beta.assign(tf.random.uniform(norm.beta.shape, -0.5, 0.5))
  images = tf.random.uniform([7, size, size, 3], -1.0, 1.0)
  sides = encoder.block_input_sides(size)
  fits = [k for k in range(1, 5) if sides[k] ** 2 * 64 * 4 <= kb * 1024]
  assert (fits[0] if fits else None) == stashed_from

  def staged(x):
    return encoder.staged_task_statistics(tf.identity, x, 3, chunking.chunked_apply, kb)

  if graph:
    staged = tf.function(staged, input_signature=[
        tf.TensorSpec([None, size, size, 3], tf.float32)])
  calls = _count_conv_calls(encoder)
  statistics, embeddings = staged(images)
  if not graph:  # 3 chunks per pass; pass k runs convs level..k, the embeddings level..4
    assert calls == _staged_conv_calls(stashed_from, 3), calls
  expected_statistics, expected = _generic_statistics(encoder, images, 3)
  assert len(statistics) == len(expected_statistics) == 5
  for (mean, variance), (mean_e, variance_e) in zip(statistics, expected_statistics):
    np.testing.assert_allclose(mean.numpy(), mean_e.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(variance.numpy(), variance_e.numpy(), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(embeddings.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


def _count_conv_calls(encoder):
  calls = [0] * len(encoder.convs)
  for i, conv in enumerate(encoder.convs):
    original = conv.call

    def counted(x, i=i, original=original):
      calls[i] += 1
      return original(x)

    conv.call = counted
  return calls


def _staged_conv_calls(stashed_from, chunks, num_blocks=5):
  """Each conv's calls in the staged passes when block `stashed_from`'s inputs are the first
  kept (None: none kept, one pass from the images per layer and one for the embeddings)."""
  calls = [0] * num_blocks
  level = 0
  for k in range(num_blocks):
    for j in range(level, k + 1):
      calls[j] += chunks
    if stashed_from is not None and k >= stashed_from:
      level = k
  for j in range(level, num_blocks):
    calls[j] += chunks
  return calls


def test_stash_limit_refuses_what_is_not_a_size():
  with pytest.raises(ValueError, match='set_encoder_statistics.kb_per_image'):
    set_encoder.stash_limit(-1)
  with pytest.raises(ValueError, match='set_encoder_statistics.kb_per_image'):
    set_encoder.stash_limit('256')
  assert set_encoder.stash_limit(0) == 0


def test_relu_after_the_pool_is_the_reference_block():
  """Each block is the reference's Conv -> BatchNorm -> ReLU -> MaxPool: applying the ReLU
  after the pool (as the set encoder does, on a quarter of the pixels) gives the same maps."""
  tf.keras.utils.set_random_seed(4)
  encoder = set_encoder.SetEncoder(norm='batch')
  encoder.build((None, 40, 40, 3))
  for norm in encoder.norms:
    norm.beta.assign(tf.random.uniform(norm.beta.shape, -1.0, 1.0))
  images = tf.random.uniform([3, 40, 40, 3], -1.0, 1.0)
  x = images
  for conv, norm in zip(encoder.convs, encoder.norms):
    x = tf.nn.relu(norm(conv(x)))
    if x.shape[1] > 1:
      x = tf.nn.max_pool2d(x, 2, 2, 'VALID')
  np.testing.assert_array_equal(encoder(images).numpy(), tf.reduce_mean(x, [1, 2]).numpy())


def test_staged_statistics_under_mixed_precision_with_a_resize():
  """mixed_bfloat16 with the set encoder at a smaller side: the staged passes cast the images
  to the compute dtype before resizing, as the layer's call does, so their statistics and
  embeddings are those of the one-pass-per-layer computation through the call."""
  from lite_tf.lite import chunking  # pylint: disable=g-import-not-at-top
  tf.keras.utils.set_random_seed(5)
  policy = tf.keras.mixed_precision.global_policy()
  tf.keras.mixed_precision.set_global_policy('mixed_bfloat16')
  try:
    encoder = set_encoder.SetEncoder(norm='task', image_size=24)
    encoder.build((None, 40, 40, 3))
    images = tf.random.uniform([7, 40, 40, 3], -1.0, 1.0)
    statistics, embeddings = encoder.staged_task_statistics(
        tf.identity, images, 3, chunking.chunked_apply, 256)
    expected_statistics, expected = _generic_statistics(encoder, images, 3)
  finally:
    tf.keras.mixed_precision.set_global_policy(policy)
  for (mean, variance), (mean_e, variance_e) in zip(statistics, expected_statistics):
    np.testing.assert_allclose(mean.numpy(), mean_e.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(variance.numpy(), variance_e.numpy(), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(tf.cast(embeddings, tf.float32).numpy(),
                             tf.cast(expected, tf.float32).numpy(), rtol=1e-5, atol=1e-6)
