"""The interface between a learner and LITE.

A learner adapts to a task through per-example support contributions and classifies queries
with the adapted task state:

  contributions_i = learner.support_contributions(x_i)        for every support image i
  task            = learner.adapt(contributions, labels, way)  an aggregate over the support set
  logits          = learner.query_logits(task, query_images)

Learners that adapt their feature extractor to the task (CNAPs, Simple CNAPs) add a first
stage with the same per-example shape, whose aggregate (the task context, e.g. FiLM
parameters generated from a mean-pooled task embedding) conditions the second:

  context_i       = learner.context_contributions(x_i)
  context         = learner.task_context(context_1..N)
  contributions_i = learner.support_contributions(x_i, context)
  task            = learner.adapt(contributions, labels, way, context)

LITE (lite_tf.lite) decides which contributions carry gradient; learners never see the H split,
chunking, N/H scaling or gradient accumulation.

Clip pooling (ORBIT's 2021 code): with `clip_pooling.context_clip_length = L` the support set
is read as clips of L consecutive rows (ORBIT episodes hold them clip after clip) and every
clip's contributions are mean-pooled into one example before `adapt` (`adapt_support`), so
class means, covariances and heads see one example per clip; LITE still draws H over frames
(pooling is linear in the rows, so its estimate stays unbiased). The task context is the mean
over frames either way. Learners whose queries split into `query_features` and
`logits_from_features` (ProtoNets, CNAPs, Simple CNAPs) can also classify a query from its
features pooled over several frames (ORBIT's target-frame history pooling, in
lite_tf.training.orbit_evaluation).

With `batch_norm.statistics = 'frozen_support'` or `'task_norm_i'` (lite_tf.backbones.task_norm)
the backbone's BatchNorm layers normalise with statistics of the task's support set, computed
before anything else and held for every forward pass of the task; the callers of a learner
(LITE, Learner.call, test-time adaptation) do that through norm_statistics and
fixed_norm_statistics (and LITE's TaskNorm-I estimate through estimating_norm_statistics), so
learners need no code of their own for it beyond attach_task_norm_alpha after creating the
backbone. A first stage that
normalises with the whole context set's statistics (CNAPs' set_encoder_norm='task') gets the
same through context_norm_statistics and fixed_context_norm_statistics.
"""

import contextlib

import gin
import keras
import tensorflow as tf

from lite_tf import episode as episode_lib
from lite_tf.backbones import task_norm


def mean_cross_entropy(logits, labels):
  """Mean softmax cross-entropy of logits [n, way] against integer labels [n], in float32
  whatever the logits' dtype."""
  return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=tf.cast(labels, tf.int32), logits=tf.cast(logits, tf.float32)))


def dense_gradients(grads, variables):
  """Gradients as dense tensors, zeros where a variable got none."""
  return [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
          for g, v in zip(grads, variables)]


@gin.configurable('clip_pooling')
def clip_pooling(context_clip_length=None):
  """gin: `clip_pooling.context_clip_length = 8` pools each clip of 8 support rows into one
  example (see the module docstring); None (default): every row is an example."""
  if context_clip_length is not None and (isinstance(context_clip_length, bool) or
                                          not isinstance(context_clip_length, int) or
                                          context_clip_length < 1):
    raise ValueError('clip_pooling.context_clip_length must be None or an integer >= 1; got '
                     f'{context_clip_length!r}')
  return context_clip_length


def pool_clips(rows, clip_length):
  """Rows [n, ...] (a nest) -> means of consecutive clips [n / clip_length, ...]; n must be a
  multiple of clip_length."""
  def pool(r):
    check = tf.debugging.assert_equal(
        tf.shape(r)[0] % clip_length, 0,
        message=f'clip_pooling.context_clip_length={clip_length}: the support set is not '
                'whole clips')
    with tf.control_dependencies([check]):
      shape = tf.concat([[-1, clip_length], tf.shape(r)[1:]], axis=0)
      return tf.reduce_mean(tf.reshape(r, shape), axis=1)
  return tf.nest.map_structure(pool, rows)


class Learner(keras.Model):
  """Base class: a Keras model holding every trainable part of a meta-learner."""

  # True for learners with a first stage (context_contributions / task_context).
  has_context = False

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.context_clip_length = clip_pooling()

  @contextlib.contextmanager
  def unpooled(self):
    """Clip pooling off for a while: building the layers on a small task whose support set is
    not clips (lite_tf.episode.building_episode)."""
    length, self.context_clip_length = self.context_clip_length, None
    try:
      yield
    finally:
      self.context_clip_length = length

  def adapt_support(self, contributions, labels, way, context=None):
    """`adapt` on the support set's contributions, clips pooled first when
    clip_pooling.context_clip_length is set (every caller of a learner uses this)."""
    length = self.context_clip_length
    if length:
      contributions = pool_clips(contributions, length)
      labels = labels[::length]
    return self.adapt(contributions, labels, way, context)

  def context_contributions(self, images):
    """First-stage per-example contributions (nest with leading dimension n), if any."""
    raise NotImplementedError

  def task_context(self, context_contributions):
    """The task context (a nest of tensors) from the first stage over the whole support set."""
    raise NotImplementedError

  def support_contributions(self, images, context=None, training=False):
    """Per-example support contributions.

    Args:
      images: [n, size, size, 3] float32.
      context: the task context (learners with has_context), else None.
      training: whether layers run in training mode (kept False for BatchNorm under LITE).
    Returns:
      A tensor (or nest of tensors) with leading dimension n; row i depends on image i (and
      the context) only.
    """
    raise NotImplementedError

  def adapt(self, contributions, labels, way, context=None):
    """Task state from the contributions of the whole support set and its labels [n]."""
    raise NotImplementedError

  def servable_task(self, task):
    """The task state of a classifier exported with its state fixed (a TFLite flatbuffer):
    the same logits through ops that TFLite has as builtins. By default the state itself;
    a learner whose classifier solves a linear system against a fixed matrix stores the
    matrix's inverse instead (Simple CNAPs)."""
    return task

  def regularization_loss(self):
    """A scalar added once per task to the meta-training loss (default 0)."""
    return tf.constant(0.0)

  def query_logits(self, task, images, training=False):
    """Logits [num_query, way] for query images [num_query, size, size, 3]."""
    return self.logits_from_features(task, self.query_features(task, images, training))

  def query_features(self, task, images, training=False):
    """Per-query features [num_query, d] that logits_from_features classifies."""
    raise NotImplementedError(f'{type(self).__name__} does not split its queries into features '
                              'and a classifier (needed to pool query features)')

  def logits_from_features(self, task, features):
    """Logits [num_query, way] of query features (possibly pooled over frames)."""
    raise NotImplementedError(f'{type(self).__name__} does not split its queries into features '
                              'and a classifier (needed to pool query features)')

  def _task_norm_state(self):
    """The backbone's NormState when it uses per-task BatchNorm statistics, else None."""
    state = getattr(getattr(self, 'backbone', None), 'task_norm', None)
    return state if state is not None and state.statistics in task_norm.PER_TASK else None

  def attach_task_norm_alpha(self):
    """With batch_norm.statistics='task_norm_i': the learner's TaskNorm-I blend parameters
    (task_norm.TaskNormAlpha, one (a, b) per BatchNorm layer), given to the backbone."""
    state = self._task_norm_state()
    if state is not None and state.task_norm_i:
      self.task_norm_alpha = task_norm.TaskNormAlpha(state.num_layers, name='task_norm_alpha')
      state.alpha = self.task_norm_alpha

  def estimating_norm_statistics(self, scale):
    """Context for LITE's one backbone call on H inside fixed_norm_statistics: TaskNorm-I's
    context moments carry LITE's gradient estimate from then on (NormState.estimating); a
    no-op otherwise."""
    state = self._task_norm_state()
    if state is None:
      return contextlib.nullcontext()
    return state.estimating(scale)

  def uses_task_norm_i(self):
    state = self._task_norm_state()
    return state is not None and state.task_norm_i

  def uses_task_statistics(self):
    """Whether the backbone normalises with per-task statistics (batch_norm.statistics)."""
    return self._task_norm_state() is not None

  def norm_statistics(self, contributions_fn, images, chunk_size=None, chunked_apply=None):
    """Per-task BatchNorm statistics (None with `batch_norm.statistics = 'moving'`).

    Args:
      contributions_fn: images [m, ...] -> support contributions, with the task's context.
      images: the whole support set.
      chunk_size: rows per gradient-free chunk; None: one pass over all images.
      chunked_apply: lite_tf.lite.chunking.chunked_apply (LITE passes it), for chunks.
    """
    state = self._task_norm_state()
    if state is None:
      return None
    return task_norm.task_statistics(state, contributions_fn, images, chunk_size,
                                     chunked_apply)

  def fixed_norm_statistics(self, statistics):
    """Context in which the backbone normalises with `statistics` (a no-op for None)."""
    if statistics is None:
      return contextlib.nullcontext()
    return self._task_norm_state().fixed(statistics)

  def _context_norm_state(self):
    """The first stage's NormState when it normalises with the whole context set's
    statistics (CNAPs' set_encoder_norm='task'), else None."""
    return None

  def context_norm_statistics(self, context_fn, images, chunk_size=None, chunked_apply=None):
    """The first stage's per-layer statistics over the whole context (support) set, without
    gradient (None unless it normalises with them); arguments as norm_statistics', context_fn:
    images [m, ...] -> context contributions."""
    state = self._context_norm_state()
    if state is None:
      return None
    return task_norm.task_statistics(state, context_fn, images, chunk_size, chunked_apply)

  def context_is_per_image(self):
    """Whether the first stage computes each image's row on its own (so that its rows can be
    recomputed in micro-batches, lite.recompute_batch); False for one that couples the images
    of a call (CNAPs' set_encoder_norm='batch')."""
    return True

  def context_rows(self, prepare, images, chunk_size, chunked_apply):
    """The first stage over the whole context (support) set without gradient, in chunks:
    (its rows [n, ...], what context_contributions(prepare(images)) gives, and its
    whole-context-set statistics, or None unless it normalises with them). The rows are
    computed with those statistics fixed.

    Args:
      prepare: stored images -> model input (lite_tf.episode.to_model_input).
      images: [n, ...] the support images as stored.
      chunk_size: rows per gradient-free chunk.
      chunked_apply: lite_tf.lite.chunking.chunked_apply.
    """

    def fn(x):
      return self.context_contributions(prepare(x))

    statistics = self.context_norm_statistics(fn, images, chunk_size, chunked_apply)
    with self.fixed_context_norm_statistics(statistics):
      return chunked_apply(fn, images, chunk_size), statistics

  def fixed_context_norm_statistics(self, statistics):
    """Context in which the first stage normalises with `statistics` (a no-op for None)."""
    if statistics is None:
      return contextlib.nullcontext()
    return self._context_norm_state().fixed(statistics)

  def call(self, inputs, training=False):
    """Adapts to the support set and classifies the query set in one forward pass.

    Args:
      inputs: an episode dict (see lite_tf.episode.Episode.to_dict()).
    """
    support_images = episode_lib.to_model_input(inputs['support_images'])
    context = None
    if self.has_context:
      with self.fixed_context_norm_statistics(
          self.context_norm_statistics(self.context_contributions, support_images)):
        context = self.task_context(self.context_contributions(support_images))
    statistics = self.norm_statistics(
        lambda x: self.support_contributions(x, context, training=training), support_images)
    with self.fixed_norm_statistics(statistics):
      contributions = self.support_contributions(support_images, context, training=training)
      task = self.adapt_support(contributions, inputs['support_labels'], inputs['way'], context)
      return self.query_logits(task, episode_lib.to_model_input(inputs['query_images']),
                               training=training)
