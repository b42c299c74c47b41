"""FiLM parameter generators of CNAPs (Requeima et al., 2019, Sec. 3.2 and App. E).

For each adapted layer with C channels, a small network maps the task embedding z to
  gamma = gamma_regularizer * W_gamma(h(z)),   beta = beta_regularizer * W_beta(h(z)),
applied as x * (1 + gamma) + beta (lite_tf.backbones.film), so that the backbone starts as the
pretrained one. The per-channel regularizers start near zero (normal, std 0.001) and are
penalised by weight * sum(regularizer^2) (the paper's weight regularizer, 0.001).
"""

import keras
from keras import layers
import tensorflow as tf


class FilmGenerator(keras.Model):
  """z [d] -> [(gamma [C_l], beta [C_l]) for every C_l in film_channels]."""

  def __init__(self, film_channels, hidden_dim=64, regularization_weight=1e-3,
               name='film_generator', **kwargs):
    super().__init__(name=name, **kwargs)
    self.film_channels = list(film_channels)
    self.regularization_weight = regularization_weight
    self.processors = [layers.Dense(hidden_dim, activation='relu', name=f'layer{i}_processor')
                       for i in range(len(self.film_channels))]
    self.gamma_heads = [layers.Dense(c, name=f'layer{i}_gamma')
                        for i, c in enumerate(self.film_channels)]
    self.beta_heads = [layers.Dense(c, name=f'layer{i}_beta')
                       for i, c in enumerate(self.film_channels)]
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
    film = []
    for i in range(len(self.film_channels)):
      h = self.processors[i](z)
      film.append((self.gamma_heads[i](h)[0] * self.gamma_regularizers[i],
                   self.beta_heads[i](h)[0] * self.beta_regularizers[i]))
    return film

  def regularization_loss(self):
    squares = [tf.reduce_sum(tf.square(r.value))
               for r in self.gamma_regularizers + self.beta_regularizers]
    return self.regularization_weight * tf.add_n(squares)
