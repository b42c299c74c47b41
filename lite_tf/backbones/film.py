"""FiLM (Perez et al., 2018) for backbones: per-channel x * (1 + gamma) + beta after a
normalization layer. Zero gamma and beta leave the layer unchanged, so a FiLM backbone with
zero (or no) FiLM parameters is the plain pretrained network.

A backbone's FiLM parameters are a list with one (gamma [C], beta [C]) pair per adapted layer,
in the order of `backbone.film_channels`; one pair serves every image of a task.
"""

import os

import keras
import tensorflow as tf

from lite_tf.backbones import task_norm

# LITE_TF_CHECK_EMPTY_BATCHES=1: every backbone and set encoder fails on an empty batch. Why:
# with oneDNN (TensorFlow's default x86 build) a Conv2D on a [0, h, w, c] batch returns a tensor
# of the input's shape on some CPUs (AVX-512), so the next layer fails there and nowhere else.
# lite_tf never runs a network on zero rows; tests/conftest.py turns the guard on so that a
# regression fails on every machine. Off by default (it adds one assertion per call).
_CHECK_EMPTY_BATCHES = os.environ.get('LITE_TF_CHECK_EMPTY_BATCHES', '') not in ('', '0')


class EmptyBatchError(ValueError):
  """A network was called on a batch with zero rows."""


def check_nonempty(images, name):
  """images unchanged; with the guard on, an error if it has zero rows (at trace time when
  the batch size is static, else an assertion the result depends on)."""
  if not _CHECK_EMPTY_BATCHES or not isinstance(images, (tf.Tensor, tf.Variable)):
    return images
  rows = images.shape[0]
  if rows == 0:
    raise EmptyBatchError(f'{name} called on an empty batch (shape {images.shape})')
  if rows is None:
    check = tf.debugging.assert_greater(tf.shape(images)[0], 0,
                                        message=f'{name} called on an empty batch')
    with tf.control_dependencies([check]):
      return tf.identity(images)
  return images


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

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    # Shared by the BatchNorm layers (subclasses build them with self.batch_norm(name)).
    self.task_norm = task_norm.NormState(task_norm.configured_statistics())

  def batch_norm(self, name, epsilon=1e-3):
    """A BatchNorm layer that per-task statistics can drive (lite_tf.backbones.task_norm)."""
    return task_norm.BatchNormalization(self.task_norm, epsilon=epsilon, name=name)

  def __call__(self, images, *args, **kwargs):
    self.task_norm.begin_call()
    out = super().__call__(check_nonempty(images, self.name), *args, **kwargs)
    self.task_norm.end_call(self.name)
    return out

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
