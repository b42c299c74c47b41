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

  def call(self, images):
    if self.norm_state is not None:
      self.norm_state.begin_call()
    x = film.check_nonempty(images, self.name)
    if self.image_size and (images.shape[1] is None or images.shape[1] > self.image_size):
      x = tf.image.resize(x, [self.image_size, self.image_size], antialias=True)
    for i, conv in enumerate(self.convs):
      x = conv(x)
      if self.norms:
        x = self.norms[i](x)
      x = ops.relu(x)
      if not (x.shape[1] == 1 or x.shape[2] == 1):
        x = self.pool(x)
    if self.norm_state is not None:
      self.norm_state.end_call(self.name)
    return ops.mean(x, axis=(1, 2))


def task_embedding(embeddings):
  """Mean over the support set: [n, d] -> [d] (the DeepSets pooling)."""
  return tf.reduce_mean(embeddings, axis=0)
