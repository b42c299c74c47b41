"""FiLM (Perez et al., 2018) for backbones: per-channel x * (1 + gamma) + beta after a
normalization layer. Zero gamma and beta leave the layer unchanged, so a FiLM backbone with
zero (or no) FiLM parameters is the plain pretrained network.

A backbone's FiLM parameters are a list with one (gamma [C], beta [C]) pair per adapted layer,
in the order of `backbone.film_channels`; one pair serves every image of a task.
"""

import keras
import tensorflow as tf


def apply_film(x, params):
  """x [n, h, w, C] (or [n, C]) modulated by params = (gamma [C], beta [C]) or None."""
  if params is None:
    return x
  gamma, beta = params
  return x * (1.0 + gamma) + beta


class FilmBackbone(keras.Model):
  """Base of lite_tf's backbones: images [n, size, size, 3] in [-1, 1] -> features [n, d].

  Subclasses set `feature_dim` and `film_channels` and implement
  `call(images, film=None, training=False)`.
  """

  feature_dim = None
  film_channels = ()

  def build(self, input_shape):
    """Creates every weight by running the network once on a small zero batch."""
    size = [d if d is not None else 32 for d in tuple(input_shape)[1:3]]
    self.call(keras.ops.zeros([1] + size + [3]))
    self.built = True

  def compute_output_shape(self, input_shape):
    return (input_shape[0], self.feature_dim)

  def zero_film(self):
    """FiLM parameters that leave the backbone unchanged."""
    return [(tf.zeros([c]), tf.zeros([c])) for c in self.film_channels]

  def film_at(self, film, index):
    """The (gamma, beta) pair of FiLM layer `index`, or None without FiLM."""
    if film is None:
      return None
    if len(film) != len(self.film_channels):
      raise ValueError(f'{self.name} has {len(self.film_channels)} FiLM layers; got '
                       f'{len(film)} (gamma, beta) pairs')
    return film[index]
