"""ResNet-18 (He et al., 2016) as used by the LITE paper: ImageNet stem, four stages of two
basic blocks, global average pooling to 512 features (about 11.2M parameters). FiLM follows
both BatchNorms of every basic block (16 FiLM layers), as in CNAPs."""

import gin
from keras import layers
from keras import ops

from lite_tf.backbones import film as film_lib


def _conv(filters, kernel, stride, name):
  return layers.Conv2D(filters, kernel, strides=stride, padding='same', use_bias=False,
                       name=name)


class ResNet18(film_lib.FilmBackbone):
  """ResNet-18 feature extractor: [n, size, size, 3] -> [n, widths[-1]]."""

  def __init__(self, widths=(64, 128, 256, 512), name='resnet18', **kwargs):
    super().__init__(name=name, **kwargs)
    self.feature_dim = widths[-1]
    self.stem_conv = _conv(widths[0], 7, 2, 'stem_conv')
    self.stem_bn = self.batch_norm('stem_bn', 1e-5)
    self.stem_pool = layers.MaxPooling2D(3, strides=2, padding='same', name='stem_pool')
    self.blocks = []
    self.film_channels = []
    in_filters = widths[0]
    for stage, filters in enumerate(widths):
      for block in range(2):
        stride = 2 if (stage > 0 and block == 0) else 1
        name = f'stage{stage + 1}_block{block + 1}'
        parts = {'conv1': _conv(filters, 3, stride, f'{name}_conv1'), 'bn1': self.batch_norm(f'{name}_bn1', 1e-5),
                 'conv2': _conv(filters, 3, 1, f'{name}_conv2'), 'bn2': self.batch_norm(f'{name}_bn2', 1e-5)}
        if stride != 1 or in_filters != filters:
          parts['down_conv'] = _conv(filters, 1, stride, f'{name}_down_conv')
          parts['down_bn'] = self.batch_norm(f'{name}_down_bn', 1e-5)
        self.blocks.append(parts)
        self.film_channels += [filters, filters]
        in_filters = filters
    self.global_pool = layers.GlobalAveragePooling2D(name='global_pool')

  def call(self, images, film=None, training=False):
    x = ops.relu(self.stem_bn(self.stem_conv(images), training=training))
    x = self.stem_pool(x)
    for i, block in enumerate(self.blocks):
      y = block['bn1'](block['conv1'](x), training=training)
      y = ops.relu(film_lib.apply_film(y, self.film_at(film, 2 * i)))
      y = block['bn2'](block['conv2'](y), training=training)
      y = film_lib.apply_film(y, self.film_at(film, 2 * i + 1))
      shortcut = x
      if 'down_conv' in block:
        shortcut = block['down_bn'](block['down_conv'](x), training=training)
      x = ops.relu(y + shortcut)
    return self.global_pool(x)


@gin.configurable
def resnet18(widths=(64, 128, 256, 512), name='resnet18'):
  return ResNet18(widths=widths, name=name)
