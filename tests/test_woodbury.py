"""Simple CNAPs' Mahalanobis classifier in float32 at EfficientNet-B0's scale (d = 1280)
against float64 NumPy: the 'woodbury' solver must be as accurate as the 'direct' one."""

import numpy as np
import pytest
import tensorflow as tf

from lite_tf.learners import simple_cnaps

DIM = 1280  # EfficientNet-B0's feature size
COUNTS = {'7': (1, 4, 2), '26': (1, 5, 10, 3, 7),
          '100': (1, 1, 2, 10, 10, 10, 10, 10, 10, 10, 10, 10, 6)}


def _task(counts, seed=0, spread=20.0, noise=0.3, num_query=30):
  """float32 support [N, d], labels [N], query [q, d], query labels [q].

  Class means differ by `spread` per feature (RMS; |mu_j - mu_k| ~ 20 sqrt(d) ~ 700), within-class
  noise `noise` per feature: the support set spans directions of variance ~100-1000, far above
  beta = 1, so that Q_k^{-1} shrinks the query's offsets along them by that much.
  """
  rng = np.random.RandomState(seed)
  means = rng.normal(0, spread / np.sqrt(2), (len(counts), DIM))
  labels = np.concatenate([np.full(c, k) for k, c in enumerate(counts)])
  rng.shuffle(labels)
  query_labels = rng.randint(0, len(counts), num_query)

  def draw(classes):
    return (means[classes] + noise * rng.normal(size=(len(classes), DIM))).astype(np.float32)
  return draw(labels), labels, draw(query_labels), query_labels


def _numpy_logits(support, labels, query, way, beta=1.0):
  """float64 reference from Bateni et al. (2020), Eq. 2-4 (the float32 inputs, exactly)."""
  support, query = support.astype(np.float64), query.astype(np.float64)
  task_covariance = np.cov(support, rowvar=False)
  logits = np.zeros((len(query), way))
  for k in range(way):
    rows = support[labels == k]
    class_covariance = np.cov(rows, rowvar=False) if len(rows) > 1 else 0.0
    lam = len(rows) / (len(rows) + 1.0)
    q = lam * class_covariance + (1 - lam) * task_covariance + beta * np.eye(DIM)
    diff = query - rows.mean(0)
    logits[:, k] = -0.5 * np.sum(diff * np.linalg.solve(q, diff.T).T, 1)
  return logits


def _logits(solver, support, labels, query, way):
  support, query = tf.convert_to_tensor(support), tf.convert_to_tensor(query)
  if solver == 'woodbury':
    return simple_cnaps.woodbury_logits(
        query, simple_cnaps.woodbury_parameters(support, labels, way))
  means, cholesky = simple_cnaps.mahalanobis_parameters(support, labels, way)
  return simple_cnaps.mahalanobis_logits(query, means, cholesky)


@pytest.mark.parametrize('num_support', sorted(COUNTS))
@pytest.mark.parametrize('solver', ['direct', 'woodbury'])
def test_float32_logits_match_float64_at_efficientnet_scale(solver, num_support):
  """Max |float32 logit - float64 logit| < 1e-2 for both solvers (logits up to ~700).

  Measured (seed 0; N = 7 / 26 / 100): 'direct' 5.7e-3 / 4.3e-3 / 1.6e-3; 'woodbury' 8.4e-4 /
  5.2e-4 / 4.2e-4 (over seeds 0-3 and noise 0.3 or 1: at most 2.5e-3). The former Woodbury
  form (|v|^2 - |L_k^{-1} A_k v|^2) / beta lost 0.22 / 0.36 / 0.35 here (0.19-0.49 over those
  seeds): it subtracts squared norms of ~5e5 that are nearly equal. 1e-2 is 4x the worst
  Woodbury error measured and 19x below the smallest loss of the former form.
  """
  counts = COUNTS[num_support]
  support, labels, query, _ = _task(counts)
  reference = _numpy_logits(support, labels, query, len(counts))
  got = _logits(solver, support, labels, query, len(counts)).numpy()
  error = np.abs(got - reference).max()
  print(f'{solver}, N = {len(labels)}: max error {error:.2e} (logits up to '
        f'{np.abs(reference).max():.0f})')
  assert error < 1e-2


def _loss_gradients(solver, support, labels, query, query_labels, way, dtype):
  """Gradients of a cross-entropy of logits / 100 (softmax not saturated) w.r.t. support
  and query features."""
  support, query = tf.constant(support, dtype), tf.constant(query, dtype)
  with tf.GradientTape() as tape:
    tape.watch([support, query])
    logits = _logits(solver, support, labels, query, way)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=query_labels, logits=logits / 100.0))
  return [g.numpy().astype(np.float64) for g in tape.gradient(loss, [support, query])]


def test_float32_woodbury_gradient_matches_float64_direct():
  """Relative error of the float32 Woodbury gradients (support, query) against the float64
  direct solver's, N = 7: measured 5.3e-4 / 6.7e-4 (the former form: 5.9e-2 / 9.7e-2;
  the float32 direct solver: 9.7e-2 / 1.0e-1)."""
  counts = COUNTS['7']
  support, labels, query, query_labels = _task(counts)
  reference = _loss_gradients('direct', support, labels, query, query_labels, len(counts),
                              tf.float64)
  got = _loss_gradients('woodbury', support, labels, query, query_labels, len(counts),
                        tf.float32)
  for g, r in zip(got, reference):
    assert np.linalg.norm(g - r) < 5e-3 * np.linalg.norm(r)


def test_woodbury_gradient_equals_direct_in_float64():
  """The two solvers are the same function: same gradients in float64 (d = 40)."""
  rng = np.random.RandomState(0)
  labels = np.array([0, 1, 1, 2, 2, 2, 1, 0, 2, 1])
  support = rng.normal(size=(10, 40)) + 3 * labels[:, None]
  query, query_labels = rng.normal(size=(6, 40)), rng.randint(0, 3, 6)
  direct, woodbury = (_loss_gradients(solver, support, labels, query, query_labels, 3,
                                      tf.float64) for solver in ('direct', 'woodbury'))
  for w, d in zip(woodbury, direct):
    np.testing.assert_allclose(w, d, rtol=1e-8, atol=1e-12)
