"""Multi-step gradient estimation for MAML (lite_tf/learners/maml.py): exactness properties."""

import numpy as np
import pytest
import tensorflow as tf

from lite_tf.learners import maml



def _problem(dim=4, seed=0):
  rng = np.random.RandomState(seed)
  m = rng.normal(size=(dim, dim))
  a = tf.constant(m @ m.T / dim + 0.5 * np.eye(dim), tf.float64)  # symmetric positive definite
  b = tf.constant(rng.normal(size=dim), tf.float64)
  c = tf.constant(rng.normal(size=dim), tf.float64)
  theta0 = tf.Variable(rng.normal(size=dim), dtype=tf.float64)
  return a, b, c, theta0


def _quadratic(a, b):
  return lambda p: 0.5 * tf.tensordot(p[0], tf.linalg.matvec(a, p[0]), 1) + tf.tensordot(b, p[0], 1)


def _nonlinear(x, y):
  """A small two-layer regression loss, so that third derivatives are not zero."""
  def loss(p):
    hidden = tf.tanh(tf.matmul(x, p[0]))
    return tf.reduce_mean(tf.square(tf.matmul(hidden, p[1])[:, 0] - y))
  return loss


def _meta_gradient(support_loss, query_loss, variables, **kwargs):
  with tf.GradientTape() as tape:
    adapted = maml.inner_loop(support_loss, [tf.convert_to_tensor(v) for v in variables],
                              **kwargs)
    loss = query_loss(adapted)
  return [g.numpy() for g in tape.gradient(loss, variables)], [p.numpy() for p in adapted]


def _exact_maml(support_loss, query_loss, variables, num_steps, inner_lr):
  """Reference: plain nested tapes, every inner gradient differentiated."""
  with tf.GradientTape() as outer:
    theta = [tf.convert_to_tensor(v) for v in variables]
    for _ in range(num_steps):
      with tf.GradientTape() as inner:
        inner.watch(theta)
        loss = support_loss(theta)
      theta = [p - inner_lr * g for p, g in zip(theta, inner.gradient(loss, theta))]
    query = query_loss(theta)
  return [g.numpy() for g in outer.gradient(query, variables)]


@pytest.fixture()
def nonlinear_problem():
  rng = np.random.RandomState(1)
  x = tf.constant(rng.normal(size=(12, 3)), tf.float64)
  y = tf.constant(rng.normal(size=12), tf.float64)
  xq = tf.constant(rng.normal(size=(9, 3)), tf.float64)
  yq = tf.constant(rng.normal(size=9), tf.float64)
  variables = [tf.Variable(rng.normal(size=(3, 5)) * 0.7), tf.Variable(rng.normal(size=(5, 1)))]
  return _nonlinear(x, y), _nonlinear(xq, yq), variables


def test_window_one_is_exact_second_order_maml(nonlinear_problem):
  support, query, variables = nonlinear_problem
  exact = _exact_maml(support, query, variables, num_steps=4, inner_lr=0.1)
  grads, _ = _meta_gradient(support, query, variables, num_steps=4, inner_lr=0.1, window_size=1)
  for g, e in zip(grads, exact):
    np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)


def test_adapted_parameters_identical_for_every_window(nonlinear_problem):
  support, query, variables = nonlinear_problem
  _, reference = _meta_gradient(support, query, variables, num_steps=5, inner_lr=0.1)
  for m in (2, 3, 5, 8):
    grads, adapted = _meta_gradient(support, query, variables, num_steps=5, inner_lr=0.1,
                                    window_size=m)
    for p, r in zip(adapted, reference):
      np.testing.assert_allclose(p, r, rtol=1e-12)
  # The literal variant moves differently (it reuses gradient values).
  _, literal = _meta_gradient(support, query, variables, num_steps=5, inner_lr=0.1,
                              window_size=5, literal_window=True)
  assert not np.allclose(literal[0], reference[0])


@pytest.mark.parametrize('num_steps,window', [(5, 1), (5, 2), (6, 3), (5, 5), (4, 10)])
def test_quadratic_closed_form(num_steps, window):
  """Meta-gradient = prod_w (I - m_w alpha A) grad q(theta_K) for L = theta'A theta/2 + b'theta
  and query loss q = c'theta + |theta|^2 / 2."""
  a, b, c, theta0 = _problem()
  alpha = 0.07
  query = lambda p: tf.tensordot(c, p[0], 1) + 0.5 * tf.reduce_sum(tf.square(p[0]))
  grads, adapted = _meta_gradient(_quadratic(a, b), query, [theta0], num_steps=num_steps,
                                  inner_lr=alpha, window_size=window)
  jacobian = np.eye(4)
  for size in maml.window_sizes(num_steps, window):
    jacobian = (np.eye(4) - size * alpha * a.numpy()) @ jacobian
  expected = jacobian.T @ (c.numpy() + adapted[0])
  np.testing.assert_allclose(grads[0], expected, rtol=1e-10)


def test_first_order_is_fomaml(nonlinear_problem):
  support, query, variables = nonlinear_problem
  grads, adapted = _meta_gradient(support, query, variables, num_steps=3, inner_lr=0.1,
                                  first_order=True)
  # FOMAML: the query gradient at the adapted parameters, applied to the initial ones.
  adapted_t = [tf.constant(p) for p in adapted]
  with tf.GradientTape() as tape:
    tape.watch(adapted_t)
    loss = query(adapted_t)
  for g, e in zip(grads, tape.gradient(loss, adapted_t)):
    np.testing.assert_allclose(g, e.numpy(), rtol=1e-10)


def test_larger_windows_drift_from_exact_but_stay_close(nonlinear_problem):
  support, query, variables = nonlinear_problem
  exact = np.concatenate([g.ravel() for g in _exact_maml(support, query, variables, 6, 0.05)])
  cosines = []
  for m in (2, 6):
    grads, _ = _meta_gradient(support, query, variables, num_steps=6, inner_lr=0.05,
                              window_size=m)
    flat = np.concatenate([g.ravel() for g in grads])
    assert not np.allclose(flat, exact)
    cosines.append(flat @ exact / np.linalg.norm(flat) / np.linalg.norm(exact))
  assert min(cosines) > 0.9


def test_bad_window():
  with pytest.raises(ValueError, match='window_size must be >= 1'):
    maml.inner_loop(lambda p: tf.reduce_sum(p[0]), [tf.zeros(2)], 2, 0.1, window_size=0)
