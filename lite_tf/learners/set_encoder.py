"""The DeepSets set encoder of CNAPs (Requeima et al., 2019; Zaheer et al., 2017), as the LITE
reference code builds it (cambridge-mlg/LITE `set_encoder.py`).

Each support image goes through five blocks of Conv3x3(64) -> BatchNorm -> ReLU -> MaxPool2
(floored: 84 -> 42 -> 21 -> 10 -> 5 -> 2) and a global average pool (150,144 parameters); the task embedding is the mean of the per-image
outputs over the support set.

BatchNorm (`norm`): the reference keeps the set encoder in training mode always, so every call
normalises with the statistics of the images it is given (a chunk of the support set, or LITE's
subset H_c); 'batch' does that (no moving statistics: they would never be used). This couples the
images of a call, so LITE's chunks and H_c compute different networks: neither its forward value
nor its gradient is the full set's. 'task' (the default) normalises every image with the
statistics of the task's whole context (support) set, computed without gradient before anything
else (chunked, chunk moments merged exactly: lite_tf.backbones.task_norm.task_statistics) and
held constant for every call of the task: the chunks, H_c and test-time adaptation see one
fixed function of each image, so LITE's forward value is the full set's and its gradient is
unbiased. The learned scale and shift stay (per-image, they keep the decomposition; the weights
are those of 'batch', so checkpoints load either way). 'none' drops the normalisation (and the
128 affine parameters per block).

Resolution (`image_size`): the reference encodes the images at the backbone's resolution
(224x224); an integer resizes larger images to that side first (84 costs about 7x less).
"""

import gin
import keras
from keras import layers
from keras import ops
import tensorflow as tf

from lite_tf.backbones import film
from lite_tf.backbones import task_norm

NORMS = ('task', 'batch', 'none')
POOLINGS = ('floor', 'same')


class BatchStatNorm(layers.Layer):
  """BatchNorm that always normalises with the statistics of its input (PyTorch's BatchNorm2d
  in training mode, epsilon 1e-5), with a learned per-channel scale and shift."""

  def __init__(self, epsilon=1e-5, **kwargs):
    super().__init__(**kwargs)
    self.epsilon = epsilon

  def build(self, input_shape):
    channels = input_shape[-1]
    self.gamma = self.add_weight(shape=(channels,), initializer='ones', name='gamma')
    self.beta = self.add_weight(shape=(channels,), initializer='zeros', name='beta')

  def call(self, x):
    mean, variance = tf.nn.moments(x, axes=[0, 1, 2])
    return tf.nn.batch_normalization(x, mean, variance, self.beta, self.gamma, self.epsilon)


class TaskStatNorm(BatchStatNorm):
  """BatchStatNorm whose statistics the set encoder's NormState fixes to the whole context
  set's (norm='task'). A call outside the NormState's modes is one call on the whole context
  set (Learner.call): it normalises with its own statistics, gradient stopped, as those are."""

  def __init__(self, state, **kwargs):
    super().__init__(**kwargs)
    self._norm_state = state
    state.register()

  def call(self, x):
    out = self._norm_state.layer_call(self, x, None)
    if out is not None:
      return out
    mean, variance = tf.nn.moments(x, axes=[0, 1, 2])
    return tf.nn.batch_normalization(x, tf.stop_gradient(mean), tf.stop_gradient(variance),
                                     self.beta, self.gamma, self.epsilon)


class SetEncoder(keras.Model):
  """images [n, size, size, 3] -> per-image embeddings [n, filters].

  Args:
    filters: width of every conv layer and of the embedding.
    num_blocks: conv-norm-ReLU-maxpool blocks.
    image_size: None: the images as given (the reference); an integer: larger images are
      resized to this side first.
    norm: 'task' (statistics of the whole context set, fixed through norm_state), 'batch'
      (the reference: batch statistics of each call) or 'none'.
    pooling: 'floor' (the reference's MaxPool2d(2, 2)) or 'same' (odd sides rounded up, as
      lite_tf before issue #28: runs trained with it resume with it).
  """

  def __init__(self, filters=64, num_blocks=5, image_size=None, norm='task', pooling='floor',
               name='set_encoder', **kwargs):
    super().__init__(name=name, **kwargs)
    if norm not in NORMS:
      raise ValueError(f'set_encoder_norm must be one of {list(NORMS)}; got {norm!r}')
    if pooling not in POOLINGS:
      raise ValueError(f'set_encoder_pooling must be one of {list(POOLINGS)}; got {pooling!r}')
    self.image_size = image_size
    self.norm = norm
    self.embedding_dim = filters
    self.convs = [layers.Conv2D(filters, 3, padding='same', name=f'conv{i}')
                  for i in range(num_blocks)]
    # norm='task': the NormState that fixes its layers' statistics (None otherwise).
    self.norm_state = task_norm.NormState('frozen_support') if norm == 'task' else None
    if norm == 'task':
      self.norms = [TaskStatNorm(self.norm_state, name=f'norm{i}') for i in range(num_blocks)]
    else:
      self.norms = ([BatchStatNorm(name=f'norm{i}') for i in range(num_blocks)]
                    if norm == 'batch' else [])
    # The reference's MaxPool2d(2, 2) floors odd sides (84: 84-42-21-10-5-2; 224: 7x7). A map
    # already 1 pixel wide is not pooled (call): the reference fails there (below 32 pixels:
    # the 28x28 demo, 16x16 tests), which keeps that pixel.
    self.pool = layers.MaxPooling2D(2, padding='valid' if pooling == 'floor' else 'same',
                                    name='pool')

  def build(self, input_shape):
    size = self.image_size or input_shape[1] or 84
    self.call(ops.zeros([2, size, size, 3]))
    self.built = True

  def _prepared(self, images):
    x = film.check_nonempty(images, self.name)
    if self.image_size and (images.shape[1] is None or images.shape[1] > self.image_size):
      x = tf.image.resize(x, [self.image_size, self.image_size], antialias=True)
    return x

  def _after_conv(self, i, x):
    """Block i after its convolution: norm (as the current NormState mode says), ReLU, pool."""
    if self.norms:
      x = self.norms[i](x)
    # ReLU after the max pool: the same values (max and ReLU commute), on 4x fewer pixels.
    if not (x.shape[1] == 1 or x.shape[2] == 1):
      x = self.pool(x)
    return ops.relu(x)

  def call(self, images):
    if self.norm_state is not None:
      self.norm_state.begin_call()
    x = self._prepared(images)
    for i, conv in enumerate(self.convs):
      x = self._after_conv(i, conv(x))
    if self.norm_state is not None:
      self.norm_state.end_call(self.name)
    return ops.mean(x, axis=(1, 2))

  def block_input_sides(self, image_side):
    """The side of block i's input maps, i = 0..num_blocks (the last: the pooled output's)."""
    side = min(self.image_size, image_side) if self.image_size else image_side
    sides = [side]
    for _ in self.convs:
      if side != 1:
        side = side // 2 if self.pool.padding == 'valid' else -(-side // 2)
      sides.append(side)
    return sides

  def staged_task_statistics(self, prepare, images, chunk_size, chunked_apply,
                             stash_kb_per_image):
    """norm='task': the whole context set's statistics of every layer and the embeddings of
    every image normalised with them, [n, filters], all without gradient, in chunks.

    Layer k's statistics need every image's input to conv k normalised with layers < k's, so
    the passes are sequential. Instead of one pass from the images per layer (the generic
    task_norm.task_statistics, then one more for the embeddings: about 4.8 set-encoder passes
    by compute at 84 and at 224), the pass for layer k keeps block k's input maps of all n
    images (the stash) once they take at most `stash_kb_per_image` KB per image, and the later
    passes start there: at 224 (256 KB) the stash is block 3's input, 28 x 28 x 64 float32
    (196 KB per image), and a step's set-encoder convolutions fall from about 4.8 to 2.9
    passes' worth (measured on 2 cores: 44.7 to 22.3 ms per image, one pass taking 6.9); at 84,
    block 2's (21 x 21 x 64, 110 KB), to 2.1. The same operations on the same rows in chunks of
    the same size: the values of the one-pass-per-layer computation.

    Args:
      prepare: model input from the stored images (lite_tf.episode.to_model_input).
      images: [n, ...] the whole context set, as stored.
      chunk_size, chunked_apply: as task_norm.task_statistics'.
      stash_kb_per_image: the stash's bound per image (0: no stash).
    Returns:
      (statistics: per layer (mean, variance), embeddings [n, filters]).
    """
    state = self.norm_state
    side = images.shape[1]
    sides = self.block_input_sides(side) if side is not None else None
    itemsize = tf.as_dtype(self.compute_dtype).size
    statistics = []
    source, level = images, 0  # source's rows are block `level`'s inputs (0: stored images)

    def blocks(x, start, stop):
      if start == 0:  # cast first, as Keras' call does (the resize runs in the compute dtype)
        x = self._prepared(tf.cast(prepare(x), self.compute_dtype))
      for j in range(start, stop):
        y = self.convs[j](x)
        with state.single_layer(j, statistics[j]):
          x = self._after_conv(j, y)
      return x

    for k, conv in enumerate(self.convs):
      block_input_bytes = (None if sides is None
                           else sides[k] ** 2 * self.embedding_dim * itemsize)
      stash = (k > level and block_input_bytes is not None
               and block_input_bytes <= stash_kb_per_image * 1024)

      def rows(x, k=k, start=level, stash=stash, conv=conv):
        x = blocks(x, start, k)
        moments = task_norm.image_moments(conv(x))
        return (moments, x) if stash else moments

      out = chunked_apply(rows, source, chunk_size)
      if stash:
        out, source, level = out[0], out[1], k
      statistics.append(state.combine(*out))
    embeddings = chunked_apply(
        lambda x: ops.mean(blocks(x, level, len(self.convs)), axis=(1, 2)), source, chunk_size)
    return statistics, embeddings


@gin.configurable('set_encoder_statistics')
def stash_limit(kb_per_image=256):
  """`set_encoder_statistics.kb_per_image`: how much of the set encoder's maps per support
  image the staged statistics passes may keep (SetEncoder.staged_task_statistics); 0 keeps
  none (one pass from the images per layer)."""
  if isinstance(kb_per_image, bool) or not isinstance(kb_per_image, (int, float)) or (
      kb_per_image < 0):
    raise ValueError(f'set_encoder_statistics.kb_per_image must be a number >= 0; got '
                     f'{kb_per_image!r}')
  return kb_per_image


def task_embedding(embeddings):
  """Mean over the support set: [n, d] -> [d] (the DeepSets pooling)."""
  return tf.reduce_mean(embeddings, axis=0)
