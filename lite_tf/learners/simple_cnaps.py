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

Two exact ways to apply Q_k^{-1} (`solver`):
  'direct':   Cholesky of every d x d Q_k: way * d^3 / 3 work and its backward pass, which
              dominates a LITE step for d = 1280 (EfficientNet-B0).
  'woodbury': Q_k = beta I + A_k^T A_k with A_k = [s_k C_k ; t_k X] the scaled class-centred
              rows C_k and task-centred rows X (r_k = n_k + N rows, s_k^2 = lambda_k /
              (n_k - 1), t_k^2 = (1 - lambda_k) / (N - 1)). With G_k = beta I + A_k A_k^T
              (r x r, by Cholesky) and z = G_k^{-1} A_k v, the Woodbury identity gives
              Q_k^{-1} v = (v - A_k^T z) / beta and A_k Q_k^{-1} v = z, so
                v^T Q_k^{-1} v = |v - A_k^T z|^2 / beta + |z|^2,
              a sum of two non-negative terms. Cheaper whenever N + max n_k < d.
              (The expanded (|v|^2 - v^T A_k^T z) / beta subtracts two numbers that are
              nearly equal when v lies along high-variance directions: in float32 it lost up
              to 0.35 of a logit at d = 1280 with class means 20 apart per feature, where this
              form and 'direct' stay at ~1e-3; tests/test_cnaps.py measures both.)
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


def _class_rows(centered, labels, way, counts):
  """Rows of each class, zero-padded: [way, max n_k, d] (padding rows add nothing)."""
  num = tf.shape(labels)[0]
  order = tf.argsort(labels, stable=True)
  sorted_labels = tf.gather(labels, order)
  offsets = tf.cumsum(tf.cast(counts, tf.int32), exclusive=True)
  ranks = tf.range(num) - tf.gather(offsets, sorted_labels)
  max_count = tf.reduce_max(tf.cast(counts, tf.int32))
  shape = tf.stack([way, max_count, tf.shape(centered)[1]])
  return tf.scatter_nd(tf.stack([sorted_labels, ranks], 1), tf.gather(centered, order), shape)


def woodbury_parameters(features, labels, way, beta=1.0):
  """The 'woodbury' solver's task state (see the module docstring): a dict of
  means [way, d], class_rows [way, m, d], task_rows [N, d], class_scale [way], task_scale
  [way], cholesky [way, m + N, m + N] and beta."""
  labels = tf.cast(labels, tf.int32)
  features = tf.convert_to_tensor(features)
  dtype = features.dtype
  means = protonets.class_means(features, labels, way)
  num = tf.cast(tf.shape(features)[0], dtype)
  counts = tf.math.unsorted_segment_sum(tf.ones_like(labels, dtype), labels, way)
  lam = counts / (counts + 1.0)
  class_scale = tf.sqrt(lam / tf.maximum(counts - 1.0, 1.0))
  task_scale = tf.sqrt((1.0 - lam) / tf.maximum(num - 1.0, 1.0))
  class_rows = _class_rows(features - tf.gather(means, labels), labels, way, counts)
  task_rows = features - tf.reduce_mean(features, 0, keepdims=True)
  # beta I + A_k A_k^T from three Gram blocks.
  cc = tf.matmul(class_rows, class_rows, transpose_b=True)          # [way, m, m]
  cx = tf.einsum('kmd,nd->kmn', class_rows, task_rows)             # [way, m, N]
  xx = tf.matmul(task_rows, task_rows, transpose_b=True)            # [N, N]
  s, t = class_scale[:, None, None], task_scale[:, None, None]
  top = tf.concat([s * s * cc, s * t * cx], 2)
  bottom = tf.concat([s * t * tf.transpose(cx, [0, 2, 1]), t * t * xx[None]], 2)
  gram = tf.concat([top, bottom], 1)
  size = tf.shape(gram)[1]
  cholesky = tf.linalg.cholesky(gram + beta * tf.eye(size, dtype=dtype)[None])
  return {'means': means, 'class_rows': class_rows, 'task_rows': task_rows,
          'class_scale': class_scale, 'task_scale': task_scale, 'cholesky': cholesky,
          'beta': tf.constant(beta, dtype)}


def woodbury_logits(features, state):
  """-1/2 squared Mahalanobis distances [q, way] from the 'woodbury' task state, as
  |v - A_k^T z|^2 / beta + |z|^2 (module docstring): no cancellation between large terms."""
  diff = features[None, :, :] - state['means'][:, None, :]          # [way, q, d]
  class_scale = state['class_scale'][:, None, None]
  task_scale = state['task_scale'][:, None, None]
  class_part = tf.matmul(state['class_rows'], diff, transpose_b=True)  # [way, m, q]
  task_part = tf.einsum('nd,kqd->knq', state['task_rows'], diff)   # [way, N, q]
  projected = tf.concat([class_scale * class_part, task_scale * task_part], 1)  # A_k v
  if 'gram_inverse' in state:  # servable_woodbury: a matmul instead of two triangular solves
    z = tf.matmul(state['gram_inverse'], projected)
  else:
    z = tf.linalg.cholesky_solve(state['cholesky'], projected)     # [way, m + N, q]
  m = tf.shape(state['class_rows'])[1]
  back = (tf.matmul(class_scale * z[:, :m], state['class_rows'], transpose_a=True)
          + tf.einsum('knq,nd->kqd', task_scale * z[:, m:], state['task_rows']))  # A_k^T z
  squared = (tf.reduce_sum(tf.square(diff - back), -1) / state['beta']
             + tf.reduce_sum(tf.square(z), 1))
  return -0.5 * tf.transpose(squared)


def mahalanobis_logits(features, means, cholesky=None, cholesky_inverse=None):
  """-1/2 squared Mahalanobis distances [q, way] of features [q, d] to every class, with the
  Cholesky factors L_k [way, d, d] of Q_k or their inverses L_k^-1 (servable_direct)."""
  diff = tf.transpose(features[None, :, :] - means[:, None, :], [0, 2, 1])  # [way, d, q]
  if cholesky_inverse is not None:
    solved = tf.matmul(cholesky_inverse, diff)
  else:
    solved = tf.linalg.triangular_solve(cholesky, diff, lower=True)
  return -0.5 * tf.transpose(tf.reduce_sum(tf.square(solved), axis=1))


def servable_woodbury(state):
  """The 'woodbury' state with G_k^-1 [way, r, r] in place of its Cholesky factor: TFLite
  has no triangular solve, and G_k is small (r = m + N) and well conditioned (beta I +
  A_k A_k^T, eigenvalues >= beta)."""
  state = dict(state)
  cholesky = state.pop('cholesky')
  eye = tf.eye(tf.shape(cholesky)[1], batch_shape=tf.shape(cholesky)[:1], dtype=cholesky.dtype)
  state['gram_inverse'] = tf.linalg.cholesky_solve(cholesky, eye)
  return state


def servable_direct(task):
  """The 'direct' state with L_k^-1 in place of L_k (the same size, d x d per class)."""
  task = dict(task)
  cholesky = task.pop('cholesky')
  eye = tf.eye(tf.shape(cholesky)[1], batch_shape=tf.shape(cholesky)[:1], dtype=cholesky.dtype)
  task['cholesky_inverse'] = tf.linalg.triangular_solve(cholesky, eye, lower=True)
  return task


class SimpleCnaps(cnaps.FilmAdaptedLearner):
  """Simple CNAPs; `beta` is the weight of the identity in Q_k (1 in the paper); `solver`
  'woodbury' (default) or 'direct' (see the module docstring: same logits)."""

  def __init__(self, beta=1.0, solver='woodbury', logit_scale=1.0, **kwargs):
    super().__init__(**kwargs)
    if solver not in ('woodbury', 'direct'):
      raise ValueError(f"simple_cnaps.solver must be 'woodbury' or 'direct'; got {solver!r}")
    self.beta = beta
    self.solver = solver
    self.logit_scale = logit_scale

  def adapt(self, contributions, labels, way, context=None):
    if self.solver == 'woodbury':
      return {'film': context,
              'mahalanobis': woodbury_parameters(contributions, labels, way, self.beta)}
    means, cholesky = mahalanobis_parameters(contributions, labels, way, self.beta)
    return {'film': context, 'means': means, 'cholesky': cholesky}

  def classify(self, task, features):
    """-logit_scale * squared Mahalanobis distance (1: the reference's logits)."""
    if self.solver == 'woodbury':
      half = woodbury_logits(features, task['mahalanobis'])
    else:
      half = mahalanobis_logits(features, task['means'], task.get('cholesky'),
                                task.get('cholesky_inverse'))
    return (2.0 * self.logit_scale) * half

  def servable_task(self, task):
    if self.solver == 'woodbury':
      return {**task, 'mahalanobis': servable_woodbury(task['mahalanobis'])}
    return servable_direct(task)


@gin.configurable('simple_cnaps')
def make_simple_cnaps(backbone='efficientnet_b0', image_size=224, backbone_weights=None,
                      set_encoder_size=None, regularization_weight=1e-3, beta=1.0,
                      solver='woodbury', logit_scale=1.0, set_encoder_norm='task',
                      film_architecture='reference', set_encoder_pooling='floor'):
  """gin constructor: `run_training.learner = @simple_cnaps()`. logit_scale 1 gives the
  reference's logits (minus the squared Mahalanobis distance), 0.5 the Gaussian
  log-likelihood's."""
  return SimpleCnaps(backbone=backbone, image_size=image_size,
                     backbone_weights=backbone_weights, set_encoder_size=set_encoder_size,
                     regularization_weight=regularization_weight, beta=beta, solver=solver,
                     logit_scale=logit_scale, set_encoder_norm=set_encoder_norm,
                     film_architecture=film_architecture,
                     set_encoder_pooling=set_encoder_pooling)
