"""The interface between a learner and LITE.

A learner adapts to a task through per-example support contributions and classifies queries
with the adapted task state:

  contributions_i = learner.support_contributions(x_i)        for every support image i
  task            = learner.adapt(contributions, labels, way)  an aggregate over the support set
  logits          = learner.query_logits(task, query_images)

LITE (lite_tf.lite) decides which contributions carry gradient; learners never see the H split,
chunking, N/H scaling or gradient accumulation.
"""

import keras
import tensorflow as tf

from lite_tf import episode as episode_lib


def mean_cross_entropy(logits, labels):
  """Mean softmax cross-entropy of logits [n, way] against integer labels [n]."""
  return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=tf.cast(labels, tf.int32), logits=logits))


def dense_gradients(grads, variables):
  """Gradients as dense tensors, zeros where a variable got none."""
  return [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
          for g, v in zip(grads, variables)]


class Learner(keras.Model):
  """Base class: a Keras model holding every trainable part of a meta-learner."""

  def support_contributions(self, images, training=False):
    """Per-example support contributions.

    Args:
      images: [n, size, size, 3] float32.
      training: whether layers run in training mode (kept False for BatchNorm under LITE).
    Returns:
      A tensor (or nest of tensors) with leading dimension n; row i depends on image i only.
    """
    raise NotImplementedError

  def adapt(self, contributions, labels, way):
    """Task state from the contributions of the whole support set and its labels [n]."""
    raise NotImplementedError

  def query_logits(self, task, images, training=False):
    """Logits [num_query, way] for query images [num_query, size, size, 3]."""
    raise NotImplementedError

  def call(self, inputs, training=False):
    """Adapts to the support set and classifies the query set in one forward pass.

    Args:
      inputs: an episode dict (see lite_tf.episode.Episode.to_dict()).
    """
    contributions = self.support_contributions(
        episode_lib.to_model_input(inputs['support_images']), training=training)
    task = self.adapt(contributions, inputs['support_labels'], inputs['way'])
    return self.query_logits(task, episode_lib.to_model_input(inputs['query_images']),
                             training=training)
