"""EfficientNet-B0 (Tan & Le, 2019) with FiLM, as in the LITE paper's best model.

About 4.0M parameters; features [n, 1280]. FiLM follows the stem BatchNorm, the depthwise
BatchNorm of every MBConv block (16 blocks) and the head BatchNorm: 18 FiLM layers.

Layer names follow keras.applications.EfficientNetB0 (`stem_conv`, `block2a_expand_bn`,
`top_conv`, ...), so its ImageNet weights file loads by name from a local path
(lite_tf.backbones.weights). Inputs in [-1, 1] are mapped to ImageNet-normalized RGB inside
the model. Stochastic depth is not applied: under CNAPs and LITE the backbone is frozen.
"""

import gin
from keras import layers
from keras import ops

from lite_tf.backbones import depthwise
from lite_tf.backbones import film as film_lib

# (kernel, repeats, filters_in, filters_out, expand_ratio, stride) of the 7 stages.
B0_STAGES = (
    (3, 1, 32, 16, 1, 1),
    (3, 2, 16, 24, 6, 2),
    (5, 2, 24, 40, 6, 2),
    (3, 3, 40, 80, 6, 2),
    (5, 3, 80, 112, 6, 1),
    (5, 4, 112, 192, 6, 2),
    (3, 1, 192, 320, 6, 1),
)
# keras.applications.EfficientNetB0's initialiser of every convolution kernel (He-style, fan
# out). Keras' default (Glorot uniform) shrinks the signal block after block: at random
# initialisation with inference BatchNorm, the features of 84x84 images were ~1e-16 and
# Simple CNAPs' logits equal, so a backbone trained from scratch got no gradient.
CONV_INIT = {'class_name': 'VarianceScaling',
             'config': {'scale': 2.0, 'mode': 'fan_out', 'distribution': 'truncated_normal'}}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_BN_EPSILON = 1e-3


class _MBConv:
  """Layers of one mobile inverted bottleneck block with squeeze-and-excitation."""

  def __init__(self, kernel, filters_in, filters_out, expand_ratio, stride, name, batch_norm):
    self.stride = stride
    self.residual = stride == 1 and filters_in == filters_out
    self.channels = filters_in * expand_ratio
    self.expand_conv = self.expand_bn = None
    if expand_ratio != 1:
      self.expand_conv = layers.Conv2D(self.channels, 1, padding='same', use_bias=False,
                                       kernel_initializer=CONV_INIT, name=f'{name}expand_conv')
      self.expand_bn = batch_norm(f'{name}expand_bn', _BN_EPSILON)
    self.dwconv = depthwise.DepthwiseConv2D(kernel, strides=stride, padding='same',
                                            use_bias=False, depthwise_initializer=CONV_INIT,
                                            name=f'{name}dwconv')
    self.bn = batch_norm(f'{name}bn', _BN_EPSILON)
    squeezed = max(1, int(filters_in * 0.25))
    self.se_reduce = layers.Conv2D(squeezed, 1, padding='same', kernel_initializer=CONV_INIT,
                                   name=f'{name}se_reduce')
    self.se_expand = layers.Conv2D(self.channels, 1, padding='same',
                                   kernel_initializer=CONV_INIT, name=f'{name}se_expand')
    self.project_conv = layers.Conv2D(filters_out, 1, padding='same', use_bias=False,
                                      kernel_initializer=CONV_INIT, name=f'{name}project_conv')
    self.project_bn = batch_norm(f'{name}project_bn', _BN_EPSILON)

  def layers(self):
    return [l for l in (self.expand_conv, self.expand_bn, self.dwconv, self.bn, self.se_reduce,
                        self.se_expand, self.project_conv, self.project_bn) if l is not None]

  def __call__(self, inputs, film, training):
    x = inputs
    if self.expand_conv is not None:
      x = ops.silu(self.expand_bn(self.expand_conv(x), training=training))
    x = self.bn(self.dwconv(x), training=training)
    x = ops.silu(film_lib.apply_film(x, film))
    se = ops.mean(x, axis=(1, 2), keepdims=True)
    se = ops.sigmoid(self.se_expand(ops.silu(self.se_reduce(se))))
    x = self.project_bn(self.project_conv(x * se), training=training)
    return x + inputs if self.residual else x


class EfficientNetB0(film_lib.FilmBackbone):
  """EfficientNet-B0 feature extractor: [n, size, size, 3] in [-1, 1] -> [n, 1280]."""

  def __init__(self, name='efficientnet_b0', **kwargs):
    super().__init__(name=name, **kwargs)
    self.feature_dim = 1280
    self.stem_conv = layers.Conv2D(32, 3, strides=2, padding='same', use_bias=False,
                                   kernel_initializer=CONV_INIT, name='stem_conv')
    self.stem_bn = self.batch_norm('stem_bn', _BN_EPSILON)
    self.mbconv = []
    block_layers = []
    for stage, (kernel, repeats, f_in, f_out, expand, stride) in enumerate(B0_STAGES):
      for j in range(repeats):
        block = _MBConv(kernel, f_in if j == 0 else f_out, f_out, expand,
                        stride if j == 0 else 1, name=f'block{stage + 1}{chr(97 + j)}_',
                        batch_norm=self.batch_norm)
        self.mbconv.append(block)
        block_layers += block.layers()
    self.block_layers = block_layers  # tracked by Keras (the _MBConv holders are not layers)
    self.top_conv = layers.Conv2D(1280, 1, padding='same', use_bias=False,
                                  kernel_initializer=CONV_INIT, name='top_conv')
    self.top_bn = self.batch_norm('top_bn', _BN_EPSILON)
    self.global_pool = layers.GlobalAveragePooling2D(name='global_pool')
    self.film_channels = [32] + [b.channels for b in self.mbconv] + [1280]

  def call(self, images, film=None, training=False):
    mean = ops.convert_to_tensor(IMAGENET_MEAN, images.dtype)
    std = ops.convert_to_tensor(IMAGENET_STD, images.dtype)
    x = ((images + 1.0) * 0.5 - mean) / std
    x = self.stem_bn(self.stem_conv(x), training=training)
    x = ops.silu(film_lib.apply_film(x, self.film_at(film, 0)))
    for i, block in enumerate(self.mbconv):
      x = block(x, self.film_at(film, i + 1), training)
    x = self.top_bn(self.top_conv(x), training=training)
    x = ops.silu(film_lib.apply_film(x, self.film_at(film, len(self.mbconv) + 1)))
    return self.global_pool(x)


@gin.configurable
def efficientnet_b0(name='efficientnet_b0'):
  return EfficientNetB0(name=name)
