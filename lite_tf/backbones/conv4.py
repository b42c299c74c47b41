"""Conv-4 (Vinyals et al., 2016; Snell et al., 2017): four conv-BN-ReLU-maxpool blocks."""

import gin
import keras
from keras import layers


@gin.configurable
def conv4(filters=64, name='conv4'):
  """Conv-4 with global average pooling; features [n, filters] for any image size >= 16."""
  inputs = keras.Input((None, None, 3))
  x = inputs
  for i in range(4):
    x = layers.Conv2D(filters, 3, padding='same', use_bias=False, name=f'block{i}_conv')(x)
    x = layers.BatchNormalization(name=f'block{i}_bn')(x)
    x = layers.ReLU(name=f'block{i}_relu')(x)
    x = layers.MaxPooling2D(2, name=f'block{i}_pool')(x)
  outputs = layers.GlobalAveragePooling2D(name='pool')(x)
  return keras.Model(inputs, outputs, name=name)
