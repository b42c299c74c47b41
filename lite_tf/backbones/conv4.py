"""Conv-4 (Vinyals et al., 2016; Snell et al., 2017): four conv-BN-ReLU-maxpool blocks, with
FiLM after each BatchNorm."""

import gin
from keras import layers
from keras import ops

from lite_tf.backbones import film as film_lib


class Conv4(film_lib.FilmBackbone):
  """Conv-4 with global average pooling; features [n, filters] for any image size >= 16."""

  def __init__(self, filters=64, name='conv4', **kwargs):
    super().__init__(name=name, **kwargs)
    self.feature_dim = filters
    self.film_channels = [filters] * 4
    self.convs = [layers.Conv2D(filters, 3, padding='same', use_bias=False,
                                name=f'block{i}_conv') for i in range(4)]
    self.norms = [self.batch_norm(f'block{i}_bn') for i in range(4)]
    self.pool = layers.MaxPooling2D(2, name='pool')
    self.global_pool = layers.GlobalAveragePooling2D(name='global_pool')

  def call(self, images, film=None, training=False):
    x = images
    for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
      x = film_lib.apply_film(norm(conv(x), training=training), self.film_at(film, i))
      x = self.pool(ops.relu(x))
    return self.global_pool(x)


@gin.configurable
def conv4(filters=64, name='conv4'):
  return Conv4(filters=filters, name=name)
