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

import gin
import keras
import tensorflow as tf

from lite_tf import backbones
from lite_tf import checks
from lite_tf import episode as episode_lib
from lite_tf.learners import base


def _gradients(loss_fn, params, differentiable):
  """grad loss_fn(params); with differentiable=False nothing links it to an outer tape."""
  if not differentiable:
    params = [tf.stop_gradient(p) for p in params]
  with tf.GradientTape() as tape:
    tape.watch(params)
    loss = loss_fn(params)
  grads = base.dense_gradients(tape.gradient(loss, params), params)
  if not differentiable:
    grads = [tf.stop_gradient(g) for g in grads]
  return grads


def inner_loop(loss_fn, params, num_steps, inner_lr, first_order=False, window_size=1,
               literal_window=False, gradient_fn=None):
  """Adapted parameters after `num_steps` SGD steps on `loss_fn`.

  Args:
    loss_fn: list of parameter tensors -> scalar support loss.
    params: list of tensors (read from the variables inside the caller's tape).
    num_steps: K.
    inner_lr: alpha.
    first_order: drop second-order terms (first-order MAML).
    window_size: m >= 1, steps per window of multi-step estimation (1: exact MAML).
    literal_window: reuse the anchor's gradient value inside a window too.
    gradient_fn: optional params -> gradient values for the steps that are not differentiated
      (first order, non-anchor steps), e.g. accumulated over support batches.
  Returns:
    list of adapted parameter tensors, differentiable w.r.t. `params` as described above.
  """
  if window_size < 1:
    raise ValueError(f'window_size must be >= 1; got {window_size}')
  value_fn = gradient_fn or (lambda p: _gradients(loss_fn, p, differentiable=False))
  theta = list(params)
  anchor = None
  for step in range(num_steps):
    if first_order:
      update = [tf.stop_gradient(g) for g in value_fn([tf.stop_gradient(p) for p in theta])]
    elif step % window_size == 0:
      anchor = _gradients(loss_fn, theta, differentiable=True)
      update = anchor
    elif literal_window:
      update = anchor
    else:
      value = [tf.stop_gradient(g) for g in value_fn([tf.stop_gradient(p) for p in theta])]
      update = [v + a - tf.stop_gradient(a) for v, a in zip(value, anchor)]
    theta = [p - inner_lr * u for p, u in zip(theta, update)]
  return theta


def window_sizes(num_steps, window_size):
  """Sizes m_w of the windows that split `num_steps` steps (the last may be shorter)."""
  return [min(window_size, num_steps - start) for start in range(0, num_steps, window_size)]


class Maml(keras.Model):
  """MAML over a backbone and a linear head of `max_way` outputs (logits sliced to the way).

  Batch norm is used per task: training-mode statistics of the batch at hand, moving averages
  never updated (Finn et al.'s transductive setting).

  Args:
    backbone, image_size: feature extractor (lite_tf.backbones) and image side.
    max_way: head size; episodes may have any way <= max_way.
    num_inner_steps, inner_lr: K and alpha of meta-training.
    test_num_inner_steps: K at test time (default: num_inner_steps).
    first_order, window_size, literal_window: see inner_loop.
    support_batch_size: first order only: support examples per batch of the inner gradient
      (accumulated), so large images fit.
    batch_norm: 'per_task' (statistics of the batch at hand) or 'frozen' (moving averages,
      inference mode; examples stay independent, so support batches sum exactly).
  """

  def __init__(self, backbone='conv4', image_size=84, max_way=50, num_inner_steps=5,
               inner_lr=0.01, test_num_inner_steps=None, first_order=False, window_size=1,
               literal_window=False, support_batch_size=None, batch_norm='per_task', **kwargs):
    checks.require_int('maml.image_size (IMAGE_SIZE in the gin files)', image_size, 1)
    super().__init__(**kwargs)
    if base.clip_pooling() is not None:
      raise ValueError('clip_pooling.context_clip_length: MAML adapts on frames and pools '
                       'no clips; unbind it (ProtoNets, CNAPs and Simple CNAPs pool clips)')
    if batch_norm not in ('per_task', 'frozen'):
      raise ValueError(f"Maml.batch_norm must be 'per_task' or 'frozen'; got {batch_norm!r}")
    self.batch_norm = batch_norm
    if support_batch_size is not None and (not isinstance(support_batch_size, int)
                                           or support_batch_size <= 0):
      raise ValueError(f'Maml.support_batch_size must be None or a positive integer; got '
                       f'{support_batch_size!r}')
    if support_batch_size and not first_order:
      raise ValueError('Maml.support_batch_size needs first_order=True (second-order terms '
                       'need the whole support set in one graph)')
    if support_batch_size and batch_norm == 'per_task':
      raise ValueError("Maml.support_batch_size needs batch_norm='frozen': with 'per_task' "
                       'each support batch is normalised with its own statistics, so the '
                       'batches do not add up to the support gradient')
    self.image_size = image_size
    self.max_way = max_way
    self.num_inner_steps = num_inner_steps
    self.test_num_inner_steps = test_num_inner_steps or num_inner_steps
    self.inner_lr = inner_lr
    self.first_order = first_order
    self.window_size = window_size
    self.literal_window = literal_window
    self.support_batch_size = support_batch_size
    self.backbone = backbones.create(backbone)
    if self.backbone.task_norm.statistics != 'moving':
      raise ValueError(f"batch_norm.statistics={self.backbone.task_norm.statistics!r} is for "
                       'the LITE learners (protonets, cnaps, simple_cnaps); MAML adapts '
                       "its own weights per task: use batch_norm.statistics='moving'")
    self.head = keras.layers.Dense(max_way, name='head')
    self.build((None, image_size, image_size, 3))

  def build(self, input_shape):
    self.backbone.build(input_shape)
    self.head.build(self.backbone.compute_output_shape(input_shape))
    self.built = True

  def call(self, images, training=False):
    return self.head(self.backbone(images, training=training))

  def logits(self, params, images, way):
    """Logits [n, way] of images under parameters `params` (list aligned with
    trainable_variables), batch norm with this batch's statistics."""
    outputs, _ = self.stateless_call(params, [v.value for v in self.non_trainable_variables],
                                     episode_lib.to_model_input(images),
                                     training=self.batch_norm == 'per_task')
    return outputs[:, :way]

  def _support_loss_fn(self, episode):
    way = tf.cast(episode.way, tf.int32)

    def loss(params, images=episode.support_images, labels=episode.support_labels):
      return base.mean_cross_entropy(self.logits(params, images, way), labels)
    return loss

  def _batched_gradient_fn(self, episode):
    """Support gradient accumulated over batches of support_batch_size (first order), in a
    sequential tf.while_loop: any support set size, static or not; no batch is empty."""
    if not self.support_batch_size:
      return None
    loss = self._support_loss_fn(episode)
    images, labels = episode.support_images, episode.support_labels
    batch = self.support_batch_size
    n = tf.shape(images)[0]
    num_batches = (n + batch - 1) // batch

    def gradient(params):
      def body(i, total):
        start = i * batch
        end = tf.minimum(start + batch, n)
        share = tf.cast(end - start, tf.float32) / tf.cast(n, tf.float32)
        grads = _gradients(lambda p: loss(p, images[start:end], labels[start:end]),
                           params, differentiable=False)
        return i + 1, [t + share * g for t, g in zip(total, grads)]

      _, total = tf.while_loop(lambda i, _: i < num_batches, body,
                               (tf.constant(0), [tf.zeros_like(p) for p in params]),
                               parallel_iterations=1)
      return total
    return gradient

  def adapt(self, episode, training):
    params = [v.value for v in self.trainable_variables]
    steps = self.num_inner_steps if training else self.test_num_inner_steps
    return inner_loop(self._support_loss_fn(episode), params, steps, self.inner_lr,
                      first_order=self.first_order or not training,
                      window_size=self.window_size, literal_window=self.literal_window,
                      gradient_fn=self._batched_gradient_fn(episode))

  def task_gradients(self, episode, seed=None):
    """(mean query loss, meta-gradients aligned with trainable_variables, predictions)."""
    del seed
    variables = self.trainable_variables
    with tf.GradientTape() as tape:
      adapted = self.adapt(episode, training=True)
      logits = self.logits(adapted, episode.query_images, tf.cast(episode.way, tf.int32))
      loss = base.mean_cross_entropy(logits, episode.query_labels)
    grads = base.dense_gradients(tape.gradient(loss, variables), variables)
    return loss, grads, tf.argmax(logits, axis=-1, output_type=tf.int32)

  def predict_episode(self, episode):
    """Test time: K first-order SGD steps on the support set, then query logits."""
    adapted = [tf.stop_gradient(p) for p in self.adapt(episode, training=False)]
    return self.logits(adapted, episode.query_images, tf.cast(episode.way, tf.int32))

  def test_time_cost(self):
    return {'forward_backward_steps': self.test_num_inner_steps, 'forward_passes': 1}


@gin.configurable('maml')
def make_maml(backbone='conv4', image_size=84, max_way=50, num_inner_steps=5, inner_lr=0.01,
              test_num_inner_steps=None, first_order=False, window_size=1,
              literal_window=False, support_batch_size=None, batch_norm='per_task'):
  """gin constructor: `run_training.learner = @maml()`."""
  return Maml(backbone=backbone, image_size=image_size, max_way=max_way,
              num_inner_steps=num_inner_steps, inner_lr=inner_lr,
              test_num_inner_steps=test_num_inner_steps, first_order=first_order,
              window_size=window_size, literal_window=literal_window,
              support_batch_size=support_batch_size, batch_norm=batch_norm)
