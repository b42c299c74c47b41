"""MAML's support batches (first order) on episodes of unknown static shape, and the settings
that cannot be batched."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import small_episode
from lite_tf.episode import Episode
from lite_tf.learners import maml


def _pair(support_batch_size):
  keras.utils.set_random_seed(0)
  whole = maml.Maml(backbone='conv4', image_size=16, max_way=5, num_inner_steps=2,
                    inner_lr=0.1, first_order=True, batch_norm='frozen')
  batched = maml.Maml(backbone='conv4', image_size=16, max_way=5, num_inner_steps=2,
                      inner_lr=0.1, first_order=True, support_batch_size=support_batch_size,
                      batch_norm='frozen')
  batched.set_weights(whole.get_weights())
  return whole, batched


def test_support_batches_on_episodes_of_unknown_shape_equal_one_batch():
  """A records pipeline gives episodes whose support size is None at trace time: the batched
  inner gradient (a while loop over 11 = 4 + 4 + 3 images) equals the whole-support one."""
  whole, batched = _pair(4)
  episode = small_episode(num_support=11, num_query=5, size=16, way=3)
  _, g_whole, _ = whole.task_gradients(episode)
  signature = {k: tf.TensorSpec([None] + list(v.shape[1:]), v.dtype) if v.shape.rank else
               tf.TensorSpec([], v.dtype) for k, v in episode.to_dict().items()}
  step = tf.function(lambda d: batched.task_gradients(Episode.from_dict(d))[1],
                     input_signature=[signature])
  assert step.get_concrete_function().structured_outputs  # traced with unknown sizes
  for a, b in zip(g_whole, step(episode.to_dict())):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=1e-6)
  predicted = tf.function(lambda d: batched.predict_episode(Episode.from_dict(d)),
                          input_signature=[signature])(episode.to_dict())
  np.testing.assert_allclose(predicted.numpy(), whole.predict_episode(episode).numpy(),
                             rtol=1e-4, atol=1e-5)


def test_support_batches_are_refused_with_per_task_batch_norm():
  with pytest.raises(ValueError, match="support_batch_size needs batch_norm='frozen'"):
    maml.Maml(backbone='conv4', image_size=16, first_order=True, support_batch_size=4)


@pytest.mark.parametrize('value', [0, -2, 2.5])
def test_support_batch_size_must_be_a_positive_integer(value):
  with pytest.raises(ValueError, match='Maml.support_batch_size must be None or a positive'):
    maml.Maml(backbone='conv4', image_size=16, first_order=True, support_batch_size=value,
              batch_norm='frozen')
