"""Per-task BatchNorm statistics (`batch_norm.statistics`): 'frozen_support' and TaskNorm-I.

With the default `'moving'`, a backbone's BatchNorm layers run in inference mode with their
moving statistics, so every image is processed on its own and LITE's decomposition of the
support set holds. But a backbone trained from scratch that way (the ProtoNets demo) never
updates its moving statistics: they stay at (0, 1) and BatchNorm never normalises. Training-mode
batch statistics would normalise, but they couple every image of a batch with every other, so
neither chunking nor LITE's subset estimate would compute the same network.

`'frozen_support'` (called `'task'` before issue #28; that name is still read) normalises with
the moments of the task's whole support set (biased variance), computed without gradient and
then held constant for every forward pass of that task: the gradient-free chunks, the
back-propagated subset H and every query batch. It is MetaBN with frozen moments, not TaskNorm.
The network a task sees is then a fixed function of each image, so LITE stays exact: averaged
over all subsets H its estimate equals the gradient of the same network with back-propagation
through the whole support set (tests/test_task_norm.py), and a query image's logits do not
depend on the other query images.

`'task_norm_i'` is TaskNorm-I as cambridge-mlg/cnaps defines it (Bronskill et al., 2020,
src/normalization_layers.py): each image is normalised with a blend of the context (support)
set's moments and its own instance moments, pooled_mean = alpha mu_c + (1 - alpha) mu_i and
pooled_var = alpha (var_c + (mu_c - pooled_mean)^2) + (1 - alpha) (var_i + (mu_i -
pooled_mean)^2), with alpha = sigmoid(a |context| + b), a and b learned per layer (initialised
at 0, owned by the learner: TaskNormAlpha), unbiased variances, and gradients through every
moment; query images use the context moments and |context| saved from the support set. With
exact back-propagation (Learner.call, `train_method.method = 'no_lite'`) it is cnaps' layer.
Under LITE the context moments' values are those of all N support images (so the forward is
exact), and their gradient is LITE's estimate from H: the moments are functions of per-layer
sums over the images, and H's share of each sum carries the gradient weighted like the support
path (N/|H| with support_scaling 'paper'; `NormState.estimating`). |H| = N is then exact
back-propagation; for |H| < N the estimate is biased, because layer l+1's inputs depend on
layer l's moments, so the gradient holds products of two subset sums over the same H.

Exact statistics need each layer's input normalised with the statistics of the layers before
it, over all N images. When the support set fits in one chunk that is one forward pass (each
layer normalises with its own batch's statistics, exactly training-mode BatchNorm with the
statistics' gradient stopped, or TaskNorm-I with it kept). Otherwise it is one partial forward
pass per BatchNorm layer (layer l: chunks run up to layer l, the statistics of layers < l
already fixed, and stop there): about L/2 gradient-free forward passes for L layers (Conv-4: 4
layers, about 2.5 passes counted by compute, ResNet-18: 20, EfficientNet-B0: 49), never more
memory than one chunk's activations. Per-chunk statistics are combined exactly (per-image means
and centred sums of squares, merged as in Chan et al.'s parallel variance), not averaged.
"""

import contextlib
import functools
import math

import gin
from keras import layers
from keras import ops
import tensorflow as tf

STATISTICS = ('moving', 'frozen_support', 'task_norm_i')
# Earlier names, still read (operative configs of older runs): name -> STATISTICS entry.
RENAMED = {'task': 'frozen_support'}
# The settings that normalise with per-task statistics (the learners' callers supply them).
PER_TASK = ('frozen_support', 'task_norm_i')


@gin.configurable('batch_norm')
def configured_statistics(statistics='moving'):
  """`batch_norm.statistics`: 'moving' (inference-mode BatchNorm, the reference),
  'frozen_support' (the support set's moments without gradient) or 'task_norm_i'."""
  if statistics not in STATISTICS and statistics not in RENAMED:
    raise ValueError(f'batch_norm.statistics must be one of {list(STATISTICS)}; got '
                     f'{statistics!r}')
  return RENAMED.get(statistics, statistics)


class TaskNormAlpha(layers.Layer):
  """TaskNorm-I's blend parameters, a [L] and b [L] (alpha_l = sigmoid(a_l |context| + b_l)),
  initialised at 0 as cnaps' register_extra_weights does. The learner owns them, not the
  backbone: a backbone's weights files stay those of the plain network, and the parameters
  train even when the backbone is frozen (as in cnaps, which registers them after freezing)."""

  def __init__(self, num_layers, **kwargs):
    super().__init__(**kwargs)
    self.a = self.add_weight(name='a', shape=(num_layers,), initializer='zeros')
    self.b = self.add_weight(name='b', shape=(num_layers,), initializer='zeros')
    self.built = True

  def alpha(self, index, context_size):
    return tf.sigmoid(self.a[index] * context_size + self.b[index])


class _Collected(Exception):
  """Ends a partial forward pass at the layer whose input statistics are being collected
  (the rows are in the NormState: Keras may re-create an exception on its way out)."""


class NormState:
  """What a backbone's BatchNorm layers do on the current call; shared by all of them.

  Outside the context managers below they are plain inference-mode BatchNorm layers.
  """

  def __init__(self, statistics):
    self.statistics = RENAMED.get(statistics, statistics)
    # TaskNorm-I: statistics are (mean, variance, context size), normalised with instance
    # moments pooled in (pooled_normalization), with gradient; alpha from self.alpha.
    self.task_norm_i = self.statistics == 'task_norm_i'
    self.alpha = None  # TaskNormAlpha, attached by the learner (Learner.attach_task_norm_alpha)
    self._estimate_scale = None  # set inside estimating()
    self._estimated = None
    self.num_layers = 0
    self._mode = None  # None, 'fixed', 'collect' or 'progressive'
    self._fixed = None  # per layer, in call order: (mean [C], variance [C]), TaskNorm-I's
    # with the context size too (combine)
    self._target = None
    self._recorded = None
    self._index = 0

  def register(self):
    self.num_layers += 1

  def begin_call(self):
    self._index = 0

  def end_call(self, name):
    if self._mode == 'fixed' and self._index != len(self._fixed):
      raise ValueError(f'{name}: {self._index} BatchNorm layers ran, but the task statistics '
                       f'hold {len(self._fixed)}')

  @contextlib.contextmanager
  def _entered(self, mode, fixed=None, target=None):
    if self._mode is not None:
      raise RuntimeError(f'per-task BatchNorm statistics: {mode!r} inside {self._mode!r}')
    self._mode, self._fixed, self._target, self._recorded = mode, fixed, target, []
    try:
      yield
    finally:
      self._mode = self._fixed = self._target = None

  @contextlib.contextmanager
  def single_layer(self, index, statistics):
    """The next BatchNorm call is layer `index` alone, normalised with `statistics` (a set
    encoder's staged passes run its blocks one at a time)."""
    with self._entered('fixed', fixed=[None] * index + [statistics]):
      self._index = index
      yield

  def fixed(self, statistics):
    """Every BatchNorm layer normalises with statistics[l] (l: call order)."""
    if len(statistics) != self.num_layers:
      raise ValueError(f'task statistics for {len(statistics)} BatchNorm layers; the backbone '
                       f'has {self.num_layers}')
    return self._entered('fixed', fixed=list(statistics))

  @contextlib.contextmanager
  def estimating(self, scale):
    """Inside fixed(): the one backbone call on LITE's back-propagated rows H turns each
    layer's fixed TaskNorm-I context moments (values over all N images) into LITE's estimate
    (estimated_moments: H's share of the moments' sums carries the gradient, times `scale`),
    normalises H with them and, on exit, keeps them as the fixed statistics for the rest of
    the fixed() scope (the query batch). A no-op unless TaskNorm-I."""
    if not self.task_norm_i:
      yield
      return
    if self._mode != 'fixed':
      raise RuntimeError('TaskNorm-I moment estimates need fixed task statistics')
    self._estimate_scale, self._estimated = scale, []
    try:
      yield
      if len(self._estimated) != self.num_layers:
        raise RuntimeError(f'TaskNorm-I: {len(self._estimated)} layers estimated their moments '
                           f'in the subset call; the backbone has {self.num_layers} (one '
                           'backbone call expected)')
      self._fixed = self._estimated
    finally:
      self._estimate_scale = self._estimated = None

  def combine(self, mean, m2, count):
    """The statistics of one layer from image_moments rows of every support image."""
    if self.task_norm_i:
      return context_moments(mean, m2, count)
    return combine_moments(mean, m2, count)

  def normalize(self, layer, index, x, statistics):
    if self.task_norm_i:
      if self.alpha is None:
        raise ValueError("batch_norm.statistics='task_norm_i': the backbone's TaskNorm-I "
                         'parameters are not attached (Learner.attach_task_norm_alpha)')
      mean, variance, size = statistics
      return pooled_normalization(layer, x, mean, variance,
                                  self.alpha.alpha(index, tf.cast(size, tf.float32)))
    mean, variance = statistics
    return ops.batch_normalization(x, tf.cast(mean, x.dtype), tf.cast(variance, x.dtype),
                                   axis=-1, offset=layer.beta, scale=layer.gamma,
                                   epsilon=layer.epsilon)

  def layer_call(self, layer, x, training):
    """The output of BatchNorm layer `layer` on x under the current mode."""
    if self._mode is None:
      return None
    index = self._index
    self._index += 1
    if self._mode == 'fixed' or (self._mode == 'collect' and index < len(self._fixed)):
      statistics = self._fixed[index]
      if self._estimate_scale is not None:
        statistics = estimated_moments(statistics, x, self._estimate_scale)
        self._estimated.append(statistics)
    elif self._mode == 'collect':  # index == target: this layer's input rows are the result
      self._recorded = image_moments(x)
      raise _Collected()
    else:  # progressive: this batch is the whole support set
      statistics = self.combine(*image_moments(x))
      self._recorded.append(statistics)
    del training
    return self.normalize(layer, index, x, statistics)


@functools.lru_cache(maxsize=None)
def _gpu_visible():
  return bool(tf.config.list_physical_devices('GPU'))


def image_moments(x):
  """Per-image statistics of x [m, ..., C] over all but the first and last axes:
  (mean [m, C], centred sum of squares [m, C], count [m])."""
  x = tf.cast(x, tf.float32)
  if len(x.shape) < 3:
    return x, tf.zeros_like(x), tf.ones_like(x[:, 0])
  positions = tf.reduce_prod(tf.shape(x)[1:-1])
  count = tf.cast(positions, tf.float32)
  channels = x.shape[-1] if x.shape[-1] is not None else tf.shape(x)[-1]
  if _gpu_visible():
    # On a GPU the reductions are fast, and a float32 matrix product may run in TF32.
    axes = list(range(1, len(x.shape) - 1))
    mean = tf.reduce_mean(x, axis=axes)
    centred = x - tf.reshape(mean, [-1] + [1] * len(axes) + [channels])
    m2 = tf.reduce_sum(tf.square(centred), axis=axes)
    return mean, m2, count * tf.ones_like(mean[:, 0])
  # The sums over positions as products with a row of ones: oneDNN's matrix product is
  # about 2.7x faster on CPU than TF's reduction over the middle axes of a channels-last map
  # (the set encoder's 224 x 224 x 64 maps: 2.2 against 5.9 ms per image on 2 cores) and,
  # in float32 on a CPU, its blocked sums no less accurate.
  rows = tf.reshape(x, [tf.shape(x)[0], positions, channels])
  ones = tf.ones([1, 1, positions], tf.float32)
  mean = tf.matmul(ones, rows) / count
  m2 = tf.matmul(ones, tf.math.squared_difference(rows, mean))
  return mean[:, 0], m2[:, 0], count * tf.ones_like(mean[:, 0, 0])


def _merged_moments(mean, m2, count):
  """(mean [C], centred sum of squares [C], positions) over every position of every image,
  from image_moments' rows, merged exactly (Chan et al.)."""
  total = tf.reduce_sum(count)
  weights = count[:, None]
  pooled = tf.reduce_sum(weights * mean, axis=0) / total
  spread = tf.reduce_sum(m2, axis=0) + tf.reduce_sum(weights * tf.square(mean - pooled), axis=0)
  return pooled, spread, total


def combine_moments(mean, m2, count):
  """Mean and (biased) variance over every position of every image, from image_moments."""
  pooled, spread, total = _merged_moments(mean, m2, count)
  return tf.stop_gradient(pooled), tf.stop_gradient(spread / total)


def context_moments(mean, m2, count):
  """TaskNorm-I's context statistics from image_moments rows of every support image:
  (mean [C], unbiased variance [C], number of images), with gradient (cnaps' torch.var)."""
  pooled, spread, total = _merged_moments(mean, m2, count)
  return pooled, spread / (total - 1.0), tf.cast(tf.shape(mean)[0], tf.float32)


def _spatial_axes(x, what):
  axes = list(range(1, len(x.shape) - 1))
  sides = [x.shape[a] for a in axes]
  if not axes or (None not in sides and math.prod(sides) == 1):
    raise ValueError(f"batch_norm.statistics='task_norm_i': {what} has inputs of shape "
                     f'{tuple(x.shape)}; instance moments need more than one position per '
                     'channel (a larger image_size, or another batch_norm.statistics)')
  return axes


def estimated_moments(statistics, x, scale):
  """LITE's estimate of TaskNorm-I context moments: the value of `statistics` (mean,
  unbiased variance, size N over all N support images, constants), the gradient of the same
  functions of the sums S1 = sum x and S2 = sum x^2 over every position of every image with
  the rows x [h, ..., C] of H contributing `scale` times their own gradient, the others none
  (stop_gradient(S) + scale * (S_H - stop_gradient(S_H)))."""
  mean, variance, size = (tf.stop_gradient(s) for s in statistics)
  x = tf.cast(x, tf.float32)
  axes = list(range(len(x.shape) - 1))
  positions = tf.cast(tf.reduce_prod(tf.shape(x)[1:-1]), tf.float32)
  total = size * positions
  s1 = mean * total
  s2 = variance * (total - 1.0) + total * tf.square(mean)
  h1 = tf.reduce_sum(x, axis=axes)
  h2 = tf.reduce_sum(tf.square(x), axis=axes)
  s1 = s1 + scale * (h1 - tf.stop_gradient(h1))
  s2 = s2 + scale * (h2 - tf.stop_gradient(h2))
  estimate_mean = s1 / total
  estimate_variance = (s2 - tf.square(s1) / total) / (total - 1.0)
  # The values stay exactly the constants (x - stop_gradient(x) is 0); the gradients are the
  # estimate's.
  return (mean + (estimate_mean - tf.stop_gradient(estimate_mean)),
          variance + (estimate_variance - tf.stop_gradient(estimate_variance)), size)


def pooled_normalization(layer, x, context_mean, context_variance, alpha):
  """cnaps' TaskNorm-I normalisation of x [m, ..., C] with the context moments [C] and
  x's own instance moments (unbiased), blended by alpha; gamma and beta of the layer."""
  axes = _spatial_axes(x, layer.name)
  dtype = x.dtype
  x = tf.cast(x, tf.float32)
  mean, m2, count = image_moments(x)
  per_image = [-1] + [1] * len(axes) + [x.shape[-1]]
  instance_mean = tf.reshape(mean, per_image)
  instance_variance = tf.reshape(m2 / (count[:, None] - 1.0), per_image)
  shape = [1] * (len(x.shape) - 1) + [-1]
  context_mean = tf.reshape(tf.cast(context_mean, tf.float32), shape)
  context_variance = tf.reshape(tf.cast(context_variance, tf.float32), shape)
  pooled_mean = alpha * context_mean + (1.0 - alpha) * instance_mean
  pooled_variance = (alpha * (context_variance + tf.square(context_mean - pooled_mean))
                     + (1.0 - alpha) * (instance_variance
                                        + tf.square(instance_mean - pooled_mean)))
  out = (x - pooled_mean) * tf.math.rsqrt(pooled_variance + layer.epsilon)
  if layer.gamma is not None:
    out = out * tf.reshape(tf.cast(layer.gamma, tf.float32), shape)
  if layer.beta is not None:
    out = out + tf.reshape(tf.cast(layer.beta, tf.float32), shape)
  return tf.cast(out, dtype)


def task_statistics(state, fn, images, chunk_size=None, chunked_apply=None):
  """Per-layer statistics of the task: (mean, variance) without gradient, or TaskNorm-I's
  (mean, unbiased variance, context size), with gradient in one pass (chunked passes are
  gradient-free).

  Args:
    state: the backbone's NormState.
    fn: images [m, ...] -> anything; runs the backbone once on them (with the task's FiLM
      parameters, if any), so its BatchNorm layers see the task's images.
    images: the whole support set [n, ...].
    chunk_size: rows per chunk; None, or not less than a static n: one forward pass.
    chunked_apply: (fn, images, chunk_size) -> fn's per-image rows over all images, chunk by
      chunk without gradient (lite_tf.lite.chunking.chunked_apply); needed with chunks.
  """
  static_n = images.shape[0]
  if chunk_size is None or (static_n is not None and static_n <= chunk_size):
    with state._entered('progressive'):  # pylint: disable=protected-access
      fn(images)
      return list(state._recorded)  # pylint: disable=protected-access
  if chunked_apply is None:
    raise ValueError('per-task BatchNorm statistics in chunks need a chunked_apply')
  statistics = []
  for layer in range(state.num_layers):

    def rows(x, layer=layer, known=tuple(statistics)):
      with state._entered('collect', fixed=list(known), target=layer):  # pylint: disable=protected-access
        try:
          fn(x)
        except _Collected:
          return state._recorded  # pylint: disable=protected-access
      raise RuntimeError(f'BatchNorm layer {layer} of {state.num_layers} was never reached')

    statistics.append(state.combine(*chunked_apply(rows, images, chunk_size)))
  return statistics


class BatchNormalization(layers.BatchNormalization):
  """keras.layers.BatchNormalization (same weights and names) that a backbone's NormState can
  switch to per-task statistics."""

  def __init__(self, state, **kwargs):
    super().__init__(**kwargs)
    self._norm_state = state
    state.register()

  def call(self, inputs, training=None, mask=None):
    out = self._norm_state.layer_call(self, inputs, training)
    if out is None:
      return super().call(inputs, training=training, mask=mask)
    return out
