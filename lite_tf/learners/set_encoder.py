"""The DeepSets set encoder of CNAPs (Requeima et al., 2019; Zaheer et al., 2017).

Each support image goes through a small conv net on its own; the task embedding is the mean of
the per-image outputs over the support set. No BatchNorm: training-mode statistics would couple
the images of a set and break LITE's per-example decomposition.
"""

import keras
from keras import layers
from keras import ops
import tensorflow as tf

from lite_tf.backbones import film


class SetEncoder(keras.Model):
  """images [n, size, size, 3] -> per-image embeddings [n, filters].

  Args:
    filters: width of every conv layer and of the embedding.
    num_blocks: conv-ReLU-maxpool blocks.
    image_size: larger images are resized to this side first (the set encoder needs far less
      resolution than the backbone; 224x224 tasks are encoded at 84x84).
  """

  def __init__(self, filters=64, num_blocks=5, image_size=84, name='set_encoder', **kwargs):
    super().__init__(name=name, **kwargs)
    self.image_size = image_size
    self.embedding_dim = filters
    self.convs = [layers.Conv2D(filters, 3, padding='same', name=f'conv{i}')
                  for i in range(num_blocks)]
    self.pool = layers.MaxPooling2D(2, padding='same', name='pool')

  def build(self, input_shape):
    self.call(ops.zeros([1, self.image_size, self.image_size, 3]))
    self.built = True

  def call(self, images):
    x = film.check_nonempty(images, self.name)
    if images.shape[1] is None or images.shape[1] > self.image_size:
      x = tf.image.resize(x, [self.image_size, self.image_size], antialias=True)
    for conv in self.convs:
      x = self.pool(ops.relu(conv(x)))
    return ops.mean(x, axis=(1, 2))


def task_embedding(embeddings):
  """Mean over the support set: [n, d] -> [d] (the DeepSets pooling)."""
  return tf.reduce_mean(embeddings, axis=0)
