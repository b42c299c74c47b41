"""Simple CNAPs (Bateni et al., 2020) trained with LITE: CNAPs' feature adaptation with a
Mahalanobis-distance classifier instead of a generated linear head.

For class k with n_k support features (Bateni et al., Eq. 2-4):
  mu_k     = class mean
  Q_k      = lambda_k Sigma_k + (1 - lambda_k) Sigma_task + beta I,  lambda_k = n_k / (n_k + 1)
  logit_k  = -1/2 (f - mu_k)^T Q_k^{-1} (f - mu_k)
Sigma_k and Sigma_task are unbiased sample covariances of the class's and of all support
features. A one-shot class has no sample covariance: Sigma_k is the zero matrix (d x d), so
Q_k = Sigma_task / 2 + beta I. (The reference code computes a 1x1 "covariance" across the
feature dimension there and broadcasts it as a scalar.)
"""

import gin
import tensorflow as tf

from lite_tf.learners import cnaps
from lite_tf.learners import protonets


def _covariance(centered, count):
  """Unbiased covariance [d, d] of rows already centered, [m, d]; zeros when count < 2."""
  return tf.matmul(centered, centered, transpose_a=True) / tf.maximum(count - 1.0, 1.0)


def mahalanobis_parameters(features, labels, way, beta=1.0):
  """Class means [way, d] and Cholesky factors [way, d, d] of the Q_k of Simple CNAPs."""
  labels = tf.cast(labels, tf.int32)
  features = tf.convert_to_tensor(features)
  dim = tf.shape(features)[1]
  means = protonets.class_means(features, labels, way)
  num = tf.cast(tf.shape(features)[0], features.dtype)
  task_covariance = _covariance(features - tf.reduce_mean(features, 0, keepdims=True), num)
  counts = tf.math.unsorted_segment_sum(tf.ones_like(labels, features.dtype), labels, way)
  centered = features - tf.gather(means, labels)

  def class_covariance(k):
    # Only class k's rows: N d^2 work over all classes instead of way * N d^2.
    rows = tf.boolean_mask(centered, tf.equal(labels, k))
    return _covariance(rows, counts[k])

  class_covariances = tf.map_fn(class_covariance, tf.range(way),
                                fn_output_signature=tf.TensorSpec([None, None],
                                                                  features.dtype))
  lam = (counts / (counts + 1.0))[:, None, None]
  q = (lam * class_covariances + (1.0 - lam) * task_covariance[None]
       + beta * tf.eye(dim, dtype=features.dtype)[None])
  return means, tf.linalg.cholesky(q)


def mahalanobis_logits(features, means, cholesky):
  """-1/2 squared Mahalanobis distances [q, way] of features [q, d] to every class."""
  diff = features[None, :, :] - means[:, None, :]  # [way, q, d]
  solved = tf.linalg.triangular_solve(cholesky, tf.transpose(diff, [0, 2, 1]), lower=True)
  return -0.5 * tf.transpose(tf.reduce_sum(tf.square(solved), axis=1))


class SimpleCnaps(cnaps.FilmAdaptedLearner):
  """Simple CNAPs; `beta` is the weight of the identity in Q_k (1 in the paper)."""

  def __init__(self, beta=1.0, **kwargs):
    super().__init__(**kwargs)
    self.beta = beta

  def adapt(self, contributions, labels, way, context=None):
    means, cholesky = mahalanobis_parameters(contributions, labels, way, self.beta)
    return {'film': context, 'means': means, 'cholesky': cholesky}

  def classify(self, task, features):
    return mahalanobis_logits(features, task['means'], task['cholesky'])


@gin.configurable('simple_cnaps')
def make_simple_cnaps(backbone='efficientnet_b0', image_size=224, backbone_weights=None,
                      set_encoder_size=84, regularization_weight=1e-3, beta=1.0):
  """gin constructor: `run_training.learner = @simple_cnaps()`."""
  return SimpleCnaps(backbone=backbone, image_size=image_size,
                     backbone_weights=backbone_weights, set_encoder_size=set_encoder_size,
                     regularization_weight=regularization_weight, beta=beta)
