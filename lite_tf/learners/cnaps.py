"""CNAPs (Requeima et al., 2019) trained with LITE, and the feature adaptation it shares with
Simple CNAPs.

Feature adaptation: a set encoder embeds the support set into z (mean over images), FiLM
generators map z to per-layer (gamma, beta), and a frozen pretrained backbone (BatchNorm in
inference mode) extracts FiLM-adapted features. Only the set encoder, the generators and the
classifier's own networks train. For LITE (lite_tf.learners.base), the set-encoder embeddings are the
first stage (context) and the adapted features the per-example contributions.

CNAPs' classifier: a linear head whose weights and bias are generated from each class's mean
adapted feature (Requeima et al., Eq. 3-4).
"""

import gin
from keras import layers
import tensorflow as tf

from lite_tf import backbones
from lite_tf import checks
from lite_tf import precision
from lite_tf.backbones import weights as weights_lib
from lite_tf.learners import base
from lite_tf.learners import film_generator
from lite_tf.learners import protonets
from lite_tf.learners import set_encoder


class FilmAdaptedLearner(base.Learner):
  """Set encoder + FiLM generators + frozen backbone; subclasses add the classifier
  (`classify(task, features)` and `adapt`).

  Args:
    backbone: registered backbone name (lite_tf.backbones), frozen.
    image_size: image side.
    backbone_weights: local weights file or TF checkpoint for the backbone
      (lite_tf.backbones.weights); None keeps the random initialisation (tests, demos).
    set_encoder_norm: 'task' (BatchNorm with the whole context set's statistics, fixed for
      the task: LITE exact in value and unbiased), 'batch' (the reference: each call's
      statistics, which couple the images of a call) or 'none' (no normalisation); see
      set_encoder.py.
    set_encoder_pooling: 'floor' (the reference's max pool: 84 -> ... -> 2x2) or 'same'
      (84 -> ... -> 3x3, lite_tf's before issue #28).
    film_architecture: 'reference' (two Dense-LayerNorm-ReLU-Dense networks per layer) or
      'shared_hidden' (see film_generator.py).
    set_encoder_size: None: the set encoder sees the images at the backbone's resolution (the
      reference); an integer: larger images are resized to this side for it.
    regularization_weight: weight of the FiLM regularizer penalty (paper: 0.001).
  """

  has_context = True

  def __init__(self, backbone='efficientnet_b0', image_size=224, backbone_weights=None,
               set_encoder_size=None, regularization_weight=1e-3, set_encoder_norm='task',
               film_architecture='reference', set_encoder_pooling='floor', **kwargs):
    checks.require_int('cnaps / simple_cnaps.image_size (IMAGE_SIZE in the gin files)',
                       image_size, 1)
    super().__init__(**kwargs)
    self.image_size = image_size
    self.backbone_name = backbone
    self.backbone = backbones.create(backbone)
    self.attach_task_norm_alpha()
    self.backbone.build((None, image_size, image_size, 3))
    if backbone_weights:
      weights_lib.load(self.backbone, backbone_weights)
    # run_training warns when a frozen backbone starts from random weights.
    self.backbone_pretrained = bool(backbone_weights)
    self.backbone.trainable = False
    self.set_encoder = set_encoder.SetEncoder(
        image_size=min(set_encoder_size, image_size) if set_encoder_size else None,
        norm=set_encoder_norm, pooling=set_encoder_pooling)
    self.set_encoder.build((None, image_size, image_size, 3))
    self.film_generator = film_generator.FilmGenerator(
        self.backbone.film_channels, regularization_weight=regularization_weight,
        architecture=film_architecture)
    self.film_generator.build((self.set_encoder.embedding_dim,))

  def context_contributions(self, images):
    return precision.to_float32(self.set_encoder(images))

  def _context_norm_state(self):
    return self.set_encoder.norm_state

  def context_is_per_image(self):
    return self.set_encoder.norm != 'batch'

  def context_rows(self, prepare, images, chunk_size, chunked_apply):
    """Learner.context_rows; with set_encoder_norm='task' and more than one chunk, the set
    encoder's staged passes (SetEncoder.staged_task_statistics), which give the same values
    for less work."""
    static_n = images.shape[0]
    if self.set_encoder.norm != 'task' or (static_n is not None and static_n <= chunk_size):
      return super().context_rows(prepare, images, chunk_size, chunked_apply)
    statistics, embeddings = self.set_encoder.staged_task_statistics(
        prepare, images, chunk_size, chunked_apply, set_encoder.stash_limit())
    return precision.to_float32(embeddings), statistics

  def task_context(self, context_contributions):
    """FiLM parameters of the task: generators applied to the mean set embedding."""
    return self.film_generator(set_encoder.task_embedding(context_contributions))

  def support_contributions(self, images, context=None, training=False):
    del training  # the backbone is frozen: BatchNorm always in inference mode
    return precision.to_float32(self.backbone(images, film=context, training=False))

  def query_features(self, task, images, training=False):
    del training
    return precision.to_float32(self.backbone(images, film=task['film'], training=False))

  def logits_from_features(self, task, features):
    return self.classify(task, features)

  def classify(self, task, features):
    raise NotImplementedError

  def regularization_loss(self):
    return self.film_generator.regularization_loss()


class DenseResidualBlock(layers.Layer):
  """CNAPs' generator block as the reference builds it (ORBIT-Dataset `mlps.py`):
  Linear(out) -> ELU -> Linear(out) -> ELU -> Linear(out), plus the input when the input and
  output widths are equal."""

  def __init__(self, units, **kwargs):
    super().__init__(**kwargs)
    self.units = units
    self.linears = [layers.Dense(units, name=f'linear{i}', dtype=self.dtype_policy)
                    for i in range(3)]

  def build(self, input_shape):
    shape = input_shape
    for linear in self.linears:
      linear.build(shape)
      shape = linear.compute_output_shape(shape)
    self.residual = input_shape[-1] == self.units

  def call(self, x):
    h = tf.nn.elu(self.linears[0](x))
    h = tf.nn.elu(self.linears[1](h))
    h = self.linears[2](h)
    return x + h if self.residual else h


class Cnaps(FilmAdaptedLearner):
  """CNAPs: linear classifier weights w_k = f_w(mu_k), biases b_k = f_b(mu_k) from the class
  means mu_k of the adapted support features; logits = f(x) . w_k + b_k."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    dim = self.backbone.feature_dim
    # The classifier is generated and applied in float32 under any precision policy.
    self.weight_generator = DenseResidualBlock(dim, name='classifier_weights', dtype='float32')
    self.bias_generator = DenseResidualBlock(1, name='classifier_bias', dtype='float32')
    self.weight_generator.build((None, dim))
    self.bias_generator.build((None, dim))

  def adapt(self, contributions, labels, way, context=None):
    means = protonets.class_means(contributions, labels, way)
    return {'film': context, 'weights': self.weight_generator(means),
            'bias': self.bias_generator(means)[:, 0]}

  def classify(self, task, features):
    return tf.matmul(features, task['weights'], transpose_b=True) + task['bias']


@gin.configurable('cnaps')
def make_cnaps(backbone='efficientnet_b0', image_size=224, backbone_weights=None,
               set_encoder_size=None, regularization_weight=1e-3, set_encoder_norm='task',
               film_architecture='reference', set_encoder_pooling='floor'):
  """gin constructor: `run_training.learner = @cnaps()`."""
  return Cnaps(backbone=backbone, image_size=image_size, backbone_weights=backbone_weights,
               set_encoder_size=set_encoder_size, regularization_weight=regularization_weight,
               set_encoder_norm=set_encoder_norm, film_architecture=film_architecture,
               set_encoder_pooling=set_encoder_pooling)
