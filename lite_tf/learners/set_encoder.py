"""The DeepSets set encoder of CNAPs (Requeima et al., 2019; Zaheer et al., 2017), as the LITE
reference code builds it (cambridge-mlg/LITE `set_encoder.py`).

Each support image goes through five blocks of Conv3x3(64) -> BatchNorm -> ReLU -> MaxPool2
and a global average pool (150,144 parameters); the task embedding is the mean of the per-image
outputs over the support set.

BatchNorm (`norm`): the reference keeps the set encoder in training mode always, so every call
normalises with the statistics of the images it is given (a chunk of the support set, or LITE's
subset H); 'batch' does that (no moving statistics: they would never be used). This couples the
images of a call, so LITE's estimate of the set encoder's gradient is then not an average of
per-example terms; 'none' drops the normalisation (the 128 affine parameters per block stay
out), which keeps every image independent and lets LITE be exact in expectation (the
exactness tests use it).

Resolution (`image_size`): the reference encodes the images at the backbone's resolution
(224x224); an integer resizes larger images to that side first (84 costs about 7x less).
"""

import keras
from keras import layers
from keras import ops
import tensorflow as tf

from lite_tf.backbones import film

NORMS = ('batch', 'none')


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


class SetEncoder(keras.Model):
  """images [n, size, size, 3] -> per-image embeddings [n, filters].

  Args:
    filters: width of every conv layer and of the embedding.
    num_blocks: conv-norm-ReLU-maxpool blocks.
    image_size: None: the images as given (the reference); an integer: larger images are
      resized to this side first.
    norm: 'batch' (the reference: batch statistics of each call) or 'none'.
  """

  def __init__(self, filters=64, num_blocks=5, image_size=None, norm='batch',
               name='set_encoder', **kwargs):
    super().__init__(name=name, **kwargs)
    if norm not in NORMS:
      raise ValueError(f'set_encoder_norm must be one of {list(NORMS)}; got {norm!r}')
    self.image_size = image_size
    self.norm = norm
    self.embedding_dim = filters
    self.convs = [layers.Conv2D(filters, 3, padding='same', name=f'conv{i}')
                  for i in range(num_blocks)]
    self.norms = ([BatchStatNorm(name=f'norm{i}') for i in range(num_blocks)]
                  if norm == 'batch' else [])
    # 'same' padding: as the reference's MaxPool2d(2) on even sizes (224 -> 7x7), and small
    # images (the 28x28 demo) keep a pixel after five pools.
    self.pool = layers.MaxPooling2D(2, padding='same', name='pool')

  def build(self, input_shape):
    size = self.image_size or input_shape[1] or 84
    self.call(ops.zeros([2, size, size, 3]))
    self.built = True

  def call(self, images):
    x = film.check_nonempty(images, self.name)
    if self.image_size and (images.shape[1] is None or images.shape[1] > self.image_size):
      x = tf.image.resize(x, [self.image_size, self.image_size], antialias=True)
    for i, conv in enumerate(self.convs):
      x = conv(x)
      if self.norms:
        x = self.norms[i](x)
      x = self.pool(ops.relu(x))
    return ops.mean(x, axis=(1, 2))


def task_embedding(embeddings):
  """Mean over the support set: [n, d] -> [d] (the DeepSets pooling)."""
  return tf.reduce_mean(embeddings, axis=0)
