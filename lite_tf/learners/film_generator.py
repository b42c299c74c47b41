"""FiLM parameter generators of CNAPs / Simple CNAPs as the LITE reference code builds them
(cambridge-mlg/LITE `features.py`, microsoft/ORBIT-Dataset `feature_adapters/`).

For each adapted layer with C channels there are two separate networks, one for gamma and one
for beta, each Dense(64) -> LayerNorm -> ReLU -> Dense(C) on the task embedding z, and two
learnable per-channel scale vectors r_gamma, r_beta (normal, std 0.001):
  gamma = r_gamma * net_gamma(z),   beta = r_beta * net_beta(z),
applied as x * (1 + gamma) + beta (lite_tf.backbones.film), so that the backbone starts as the
pretrained one. The penalty is weight * sum(r^2) over the scale vectors (0.001, as the
reference). That is 8,576 + 132 C parameters per layer: 1.51M over EfficientNet-B0's 18
adapted layers, 0.64M over ResNet-18's 16.

`architecture='shared_hidden'` is a lighter variant (one Dense(64)+ReLU per layer shared by
gamma and beta, no LayerNorm: 4,160 + 130 C per layer).
"""

import keras
from keras import layers
import tensorflow as tf

ARCHITECTURES = ('reference', 'shared_hidden')


def _dense_block(hidden_dim, channels, name):
  """The reference's DenseBlock: Linear -> LayerNorm -> ReLU -> Linear."""
  return keras.Sequential([
      layers.Dense(hidden_dim, name='linear1'),
      layers.LayerNormalization(epsilon=1e-5, name='layer_norm'),  # PyTorch's epsilon
      layers.ReLU(name='relu'),
      layers.Dense(channels, name='linear2'),
  ], name=name)


class FilmGenerator(keras.Model):
  """z [d] -> [(gamma [C_l], beta [C_l]) for every C_l in film_channels]."""

  def __init__(self, film_channels, hidden_dim=64, regularization_weight=1e-3,
               architecture='reference', name='film_generator', **kwargs):
    super().__init__(name=name, **kwargs)
    if architecture not in ARCHITECTURES:
      raise ValueError(f'film_architecture must be one of {list(ARCHITECTURES)}; '
                       f'got {architecture!r}')
    self.architecture = architecture
    self.film_channels = list(film_channels)
    self.regularization_weight = regularization_weight
    if architecture == 'reference':
      self.gamma_nets = [_dense_block(hidden_dim, c, f'layer{i}_gamma')
                         for i, c in enumerate(self.film_channels)]
      self.beta_nets = [_dense_block(hidden_dim, c, f'layer{i}_beta')
                        for i, c in enumerate(self.film_channels)]
    else:
      processors = [layers.Dense(hidden_dim, activation='relu', name=f'layer{i}_processor')
                    for i in range(len(self.film_channels))]
      self.gamma_nets = [keras.Sequential([p, layers.Dense(c, name='gamma')],
                                          name=f'layer{i}_gamma')
                         for i, (p, c) in enumerate(zip(processors, self.film_channels))]
      self.beta_nets = [keras.Sequential([p, layers.Dense(c, name='beta')],
                                         name=f'layer{i}_beta')
                        for i, (p, c) in enumerate(zip(processors, self.film_channels))]
    init = keras.initializers.RandomNormal(stddev=1e-3)
    self.gamma_regularizers = [self.add_weight(shape=(c,), initializer=init,
                                               name=f'layer{i}_gamma_regularizer')
                               for i, c in enumerate(self.film_channels)]
    self.beta_regularizers = [self.add_weight(shape=(c,), initializer=init,
                                              name=f'layer{i}_beta_regularizer')
                              for i, c in enumerate(self.film_channels)]

  def build(self, input_shape):
    self.call(tf.zeros([input_shape[-1]]))
    self.built = True

  def call(self, task_embedding):
    z = task_embedding[None, :]
    return [(g(z)[0] * rg, b(z)[0] * rb) for g, b, rg, rb in zip(
        self.gamma_nets, self.beta_nets, self.gamma_regularizers, self.beta_regularizers)]

  def regularization_loss(self):
    squares = [tf.reduce_sum(tf.square(r.value))
               for r in self.gamma_regularizers + self.beta_regularizers]
    return self.regularization_weight * tf.add_n(squares)
