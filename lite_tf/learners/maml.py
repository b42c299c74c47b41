"""MAML (Finn et al., 2017), first-order MAML, and multi-step gradient estimation
(Kim, Park and Choi, "Multi-step Estimation for Gradient-based Meta-learning", 2020).

Inner loop, K steps of SGD on the support loss L_s with rate alpha:
  theta_{t+1} = theta_t - alpha * g(theta_t),   g = grad L_s.

Multi-step estimation with window size m: the steps are grouped into windows of m steps; only
the window's first (anchor) step j is differentiated twice. Inside the window every step moves
by its true gradient value but differentiates through the anchor gradient:
  theta_{t+1} = theta_t - alpha * (stop_gradient(g(theta_t)) + g(theta_j) - stop_gradient(g(theta_j)))
so the adapted parameters are exactly MAML's for every m, and d theta_{j+m} / d theta_j =
I - m * alpha * H(theta_j). m = 1 is exact second-order MAML; m >= K keeps one Hessian term.
The literal variant (`literal_window=True`) also reuses the anchor's gradient value:
theta_{t+1} = theta_t - alpha * g(theta_j). First order drops every second-order term.

Non-anchor gradients are computed on stop_gradient'ed parameters, so no tape records them and
their activations are freed at once: memory falls roughly as 1/m.
"""

import tensorflow as tf


def _gradients(loss_fn, params, differentiable):
  """grad loss_fn(params); with differentiable=False nothing links it to an outer tape."""
  if not differentiable:
    params = [tf.stop_gradient(p) for p in params]
  with tf.GradientTape() as tape:
    tape.watch(params)
    loss = loss_fn(params)
  grads = tape.gradient(loss, params)
  grads = [tf.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
  if not differentiable:
    grads = [tf.stop_gradient(g) for g in grads]
  return grads


def inner_loop(loss_fn, params, num_steps, inner_lr, first_order=False, window_size=1,
               literal_window=False):
  """Adapted parameters after `num_steps` SGD steps on `loss_fn`.

  Args:
    loss_fn: list of parameter tensors -> scalar support loss.
    params: list of tensors (read from the variables inside the caller's tape).
    num_steps: K.
    inner_lr: alpha.
    first_order: drop second-order terms (first-order MAML).
    window_size: m >= 1, steps per window of multi-step estimation (1: exact MAML).
    literal_window: reuse the anchor's gradient value inside a window too.
  Returns:
    list of adapted parameter tensors, differentiable w.r.t. `params` as described above.
  """
  if window_size < 1:
    raise ValueError(f'window_size must be >= 1; got {window_size}')
  theta = list(params)
  anchor = None
  for step in range(num_steps):
    if first_order:
      update = _gradients(loss_fn, theta, differentiable=False)
    elif step % window_size == 0:
      anchor = _gradients(loss_fn, theta, differentiable=True)
      update = anchor
    elif literal_window:
      update = anchor
    else:
      value = _gradients(loss_fn, theta, differentiable=False)
      update = [v + a - tf.stop_gradient(a) for v, a in zip(value, anchor)]
    theta = [p - inner_lr * u for p, u in zip(theta, update)]
  return theta


def window_sizes(num_steps, window_size):
  """Sizes m_w of the windows that split `num_steps` steps (the last may be shorter)."""
  return [min(window_size, num_steps - start) for start in range(0, num_steps, window_size)]
