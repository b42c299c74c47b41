"""ResNet-18 (He et al., 2016) as used by the LITE paper: ImageNet stem, four stages of two
basic blocks, global average pooling to 512 features (about 11.2M parameters)."""

import gin
import keras
from keras import layers


def _basic_block(x, filters, stride, name):
  shortcut = x
  y = layers.Conv2D(filters, 3, strides=stride, padding='same', use_bias=False,
                    name=f'{name}_conv1')(x)
  y = layers.BatchNormalization(epsilon=1e-5, name=f'{name}_bn1')(y)
  y = layers.ReLU(name=f'{name}_relu1')(y)
  y = layers.Conv2D(filters, 3, padding='same', use_bias=False, name=f'{name}_conv2')(y)
  y = layers.BatchNormalization(epsilon=1e-5, name=f'{name}_bn2')(y)
  if stride != 1 or x.shape[-1] != filters:
    shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                             name=f'{name}_down_conv')(x)
    shortcut = layers.BatchNormalization(epsilon=1e-5, name=f'{name}_down_bn')(shortcut)
  y = layers.Add(name=f'{name}_add')([y, shortcut])
  return layers.ReLU(name=f'{name}_out')(y)


@gin.configurable
def resnet18(widths=(64, 128, 256, 512), name='resnet18'):
  """ResNet-18 feature extractor: [n, size, size, 3] -> [n, widths[-1]]."""
  inputs = keras.Input((None, None, 3))
  x = layers.Conv2D(widths[0], 7, strides=2, padding='same', use_bias=False,
                    name='stem_conv')(inputs)
  x = layers.BatchNormalization(epsilon=1e-5, name='stem_bn')(x)
  x = layers.ReLU(name='stem_relu')(x)
  x = layers.MaxPooling2D(3, strides=2, padding='same', name='stem_pool')(x)
  for stage, filters in enumerate(widths):
    for block in range(2):
      stride = 2 if (stage > 0 and block == 0) else 1
      x = _basic_block(x, filters, stride, name=f'stage{stage + 1}_block{block + 1}')
  outputs = layers.GlobalAveragePooling2D(name='pool')(x)
  return keras.Model(inputs, outputs, name=name)
