"""Prototypical Networks (Snell et al., 2017) trained with LITE.

Class prototypes are the means of the support embeddings; logits are negative squared Euclidean
distances to them (Snell et al., Eq. 1-2). The whole backbone learns.
"""

import gin
import tensorflow as tf

from lite_tf import backbones
from lite_tf import checks
from lite_tf import precision
from lite_tf.learners import base


def class_means(features, labels, way):
  """Per-class means of features [n, d] -> [way, d]; classes without examples get zeros."""
  labels = tf.cast(labels, tf.int32)
  sums = tf.math.unsorted_segment_sum(features, labels, way)
  counts = tf.math.unsorted_segment_sum(tf.ones_like(labels, features.dtype), labels, way)
  return sums / tf.maximum(counts, 1.0)[:, None]


def squared_euclidean_logits(query_features, prototypes):
  """-||q - p||^2 for query features [q, d] and prototypes [way, d] -> [q, way]."""
  q_sq = tf.reduce_sum(tf.square(query_features), axis=1, keepdims=True)
  p_sq = tf.reduce_sum(tf.square(prototypes), axis=1)[None, :]
  return -(q_sq - 2.0 * tf.matmul(query_features, prototypes, transpose_b=True) + p_sq)


class ProtoNets(base.Learner):
  """ProtoNets over a backbone chosen by name (see lite_tf.backbones)."""

  def __init__(self, backbone='conv4', image_size=84, **kwargs):
    checks.require_int('protonets.image_size (IMAGE_SIZE in the gin files)', image_size, 1)
    super().__init__(**kwargs)
    self.image_size = image_size
    self.backbone_name = backbone
    self.backbone = backbones.create(backbone)
    self.attach_task_norm_alpha()
    self.backbone.build((None, image_size, image_size, 3))

  def support_contributions(self, images, context=None, training=False):
    return precision.to_float32(self.backbone(images, training=training))

  def adapt(self, contributions, labels, way, context=None):
    return class_means(contributions, labels, way)

  def query_features(self, task, images, training=False):
    return precision.to_float32(self.backbone(images, training=training))

  def logits_from_features(self, task, features):
    return squared_euclidean_logits(features, task)


@gin.configurable('protonets')
def make_protonets(backbone='conv4', image_size=84):
  """gin constructor: `train.learner = @protonets()` with `protonets.backbone = 'resnet18'`."""
  return ProtoNets(backbone=backbone, image_size=image_size)
