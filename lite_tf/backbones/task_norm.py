"""Per-task BatchNorm statistics (`batch_norm.statistics = 'task'`), TaskNorm-style.

With the default `'moving'`, a backbone's BatchNorm layers run in inference mode with their
moving statistics, so every image is processed on its own and LITE's decomposition of the
support set holds. But a backbone trained from scratch that way (the ProtoNets demo) never
updates its moving statistics: they stay at (0, 1) and BatchNorm never normalises. Training-mode
batch statistics would normalise, but they couple every image of a batch with every other, so
neither chunking nor LITE's subset estimate would compute the same network.

`'task'` normalises with statistics of the task's whole support set, computed without gradient
and then held constant for every forward pass of that task: the gradient-free chunks, the
back-propagated subset H and every query batch (Bronskill et al., 2020, "TaskNorm", whose
transductive-free variants also keep query images out of the statistics). The network a task
sees is then a fixed function of each image, so LITE stays exact: averaged over all subsets
H its estimate equals the gradient of the same network with back-propagation through the
whole support set (tests/test_task_norm.py), and a query image's logits do not depend on the
other query images.

Exact statistics need each layer's input normalised with the statistics of the layers before
it, over all N images. When the support set fits in one chunk that is one forward pass (each
layer normalises with its own batch's statistics, exactly training-mode BatchNorm with the
statistics' gradient stopped). Otherwise it is one partial forward pass per BatchNorm layer
(layer l: chunks run up to layer l, the statistics of layers < l already fixed, and stop
there): about L/2 gradient-free forward passes for L layers (Conv-4: 4 layers, about 2.5
passes counted by compute, ResNet-18: 20, EfficientNet-B0: 49), never more memory than one
chunk's activations. Per-chunk statistics are combined exactly (per-image means and centred
sums of squares, merged as in Chan et al.'s parallel variance), not averaged.
"""

import contextlib

import gin
from keras import layers
from keras import ops
import tensorflow as tf

STATISTICS = ('moving', 'task')


@gin.configurable('batch_norm')
def configured_statistics(statistics='moving'):
  """`batch_norm.statistics`: 'moving' (inference-mode BatchNorm, the reference) or 'task'."""
  if statistics not in STATISTICS:
    raise ValueError(f'batch_norm.statistics must be one of {list(STATISTICS)}; got '
                     f'{statistics!r}')
  return statistics


class _Collected(Exception):
  """Ends a partial forward pass at the layer whose input statistics are being collected
  (the rows are in the NormState: Keras may re-create an exception on its way out)."""


class NormState:
  """What a backbone's BatchNorm layers do on the current call; shared by all of them.

  Outside the context managers below they are plain inference-mode BatchNorm layers.
  """

  def __init__(self, statistics):
    self.statistics = statistics
    self.num_layers = 0
    self._mode = None  # None, 'fixed', 'collect' or 'progressive'
    self._fixed = None  # [(mean [C], variance [C])] per layer, in call order
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

  def fixed(self, statistics):
    """Every BatchNorm layer normalises with statistics[l] (l: call order)."""
    if len(statistics) != self.num_layers:
      raise ValueError(f'task statistics for {len(statistics)} BatchNorm layers; the backbone '
                       f'has {self.num_layers}')
    return self._entered('fixed', fixed=list(statistics))

  def layer_call(self, layer, x, training):
    """The output of BatchNorm layer `layer` on x under the current mode."""
    if self._mode is None:
      return None
    index = self._index
    self._index += 1
    if self._mode == 'fixed' or (self._mode == 'collect' and index < len(self._fixed)):
      mean, variance = self._fixed[index]
    elif self._mode == 'collect':  # index == target: this layer's input rows are the result
      self._recorded = image_moments(x)
      raise _Collected()
    else:  # progressive: this batch is the whole support set
      mean, variance = combine_moments(*image_moments(x))
      self._recorded.append((mean, variance))
    del training
    return ops.batch_normalization(x, tf.cast(mean, x.dtype), tf.cast(variance, x.dtype),
                                   axis=-1, offset=layer.beta, scale=layer.gamma,
                                   epsilon=layer.epsilon)


def image_moments(x):
  """Per-image statistics of x [m, ..., C] over all but the first and last axes:
  (mean [m, C], centred sum of squares [m, C], count [m])."""
  x = tf.cast(x, tf.float32)
  axes = list(range(1, len(x.shape) - 1))
  if not axes:
    return x, tf.zeros_like(x), tf.ones_like(x[:, 0])
  mean = tf.reduce_mean(x, axis=axes)
  centred = x - tf.reshape(mean, [-1] + [1] * len(axes) + [x.shape[-1]])
  m2 = tf.reduce_sum(tf.square(centred), axis=axes)
  count = tf.cast(tf.reduce_prod(tf.shape(x)[1:-1]), tf.float32) * tf.ones_like(mean[:, 0])
  return mean, m2, count


def combine_moments(mean, m2, count):
  """Mean and (biased) variance over every position of every image, from image_moments."""
  total = tf.reduce_sum(count)
  weights = count[:, None]
  pooled = tf.reduce_sum(weights * mean, axis=0) / total
  spread = tf.reduce_sum(m2, axis=0) + tf.reduce_sum(weights * tf.square(mean - pooled), axis=0)
  return tf.stop_gradient(pooled), tf.stop_gradient(spread / total)


def task_statistics(state, fn, images, chunk_size=None, chunked_apply=None):
  """Per-layer (mean, variance) of the task, without gradient.

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

    statistics.append(combine_moments(*chunked_apply(rows, images, chunk_size)))
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
