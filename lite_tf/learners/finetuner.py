"""FineTuner: the transfer-learning baseline of the LITE paper (Table 1).

At test time a linear head on frozen backbone features is trained on the support set (Adam,
50 steps at lr 1e-3 by default); the backbone is not meta-trained (load pretrained weights
into it with `backbone_weights`). With `film=True` the backbone's FiLM parameters (one
(gamma, beta) pair per FiLM layer, starting at the identity) are trained with the head, which
back-propagates through the backbone on the support set at every step. `task_gradients`
returns zero gradients, so a training run leaves the backbone as loaded and only evaluates.
"""

import gin
import keras
import tensorflow as tf

from lite_tf import backbones
from lite_tf import checks
from lite_tf import episode as episode_lib
from lite_tf.backbones import weights as weights_lib
from lite_tf.learners import base
from lite_tf.lite import chunking


class FineTuner(keras.Model):

  def __init__(self, backbone='conv4', image_size=84, num_steps=50, learning_rate=1e-3,
               chunk_size=64, film=False, backbone_weights=None, **kwargs):
    checks.require_int('finetuner.image_size (IMAGE_SIZE in the gin files)', image_size, 1)
    super().__init__(**kwargs)
    if base.clip_pooling() is not None:
      raise ValueError('clip_pooling.context_clip_length: FineTuner adapts on frames and pools '
                       'no clips; unbind it (ProtoNets, CNAPs and Simple CNAPs pool clips)')
    self.image_size = image_size
    self.num_steps = num_steps
    self.learning_rate = learning_rate
    self.chunk_size = chunk_size
    self.film = film
    self.backbone = backbones.create(backbone)
    if self.backbone.task_norm.statistics != 'moving':
      raise ValueError(f"batch_norm.statistics={self.backbone.task_norm.statistics!r} is for "
                       'the LITE learners (protonets, cnaps, simple_cnaps); FineTuner adapts '
                       "its own weights per task: use batch_norm.statistics='moving'")
    self.backbone.build((None, image_size, image_size, 3))
    if backbone_weights:
      weights_lib.load(self.backbone, backbone_weights)
    self.built = True

  def call(self, images, training=False):
    return self.backbone(images, training=False)

  def features(self, images):
    """Frozen features [n, d], computed in chunks without gradient."""
    return chunking.chunked_apply(
        lambda x: self.backbone(episode_lib.to_model_input(x), training=False), images,
        self.chunk_size)

  def fit_head(self, features, labels, way, support_images=None):
    """Linear head (weights [d, way], bias [way]) trained with Adam on cross-entropy; plain
    tensors throughout, so it runs eagerly and inside tf.function alike.

    With support_images (FiLM fine-tuning), features are recomputed from them at every step
    under the FiLM parameters being trained, and `features` may be None. Returns (weights,
    bias, film or None).
    """
    dim = self.backbone.feature_dim
    params = [tf.zeros(tf.stack([dim, way])), tf.zeros(tf.reshape(way, [1]))]
    if support_images is not None:
      params += [t for pair in self.backbone.zero_film() for t in pair]
    beta1, beta2, eps = 0.9, 0.999, 1e-7
    first = [tf.zeros_like(p) for p in params]
    second = [tf.zeros_like(p) for p in params]
    for step in range(1, self.num_steps + 1):
      with tf.GradientTape() as tape:
        tape.watch(params)
        if support_images is not None:
          features = self.backbone(support_images, film=self._film(params), training=False)
        loss = base.mean_cross_entropy(tf.matmul(features, params[0]) + params[1], labels)
      grads = tape.gradient(loss, params)
      first = [beta1 * m + (1 - beta1) * g for m, g in zip(first, grads)]
      second = [beta2 * v + (1 - beta2) * tf.square(g) for v, g in zip(second, grads)]
      params = [p - self.learning_rate * (m / (1 - beta1 ** step))
                / (tf.sqrt(v / (1 - beta2 ** step)) + eps)
                for p, m, v in zip(params, first, second)]
    return params[0], params[1], self._film(params)

  @staticmethod
  def _film(params):
    if len(params) == 2:
      return None
    return list(zip(params[2::2], params[3::2]))

  def predict_episode(self, episode):
    way = tf.cast(episode.way, tf.int32)
    if self.film:  # features come from the images under the FiLM being trained
      support_features = None
      support_images = episode_lib.to_model_input(episode.support_images)
    else:
      support_features = tf.stop_gradient(self.features(episode.support_images))
      support_images = None
    weights, bias, film = self.fit_head(support_features, episode.support_labels, way,
                                        support_images)
    query_features = chunking.chunked_apply(
        lambda x: self.backbone(episode_lib.to_model_input(x), film=film, training=False),
        episode.query_images, self.chunk_size)
    return tf.matmul(query_features, weights) + bias

  def task_gradients(self, episode, seed=None):
    """No meta-training: zero gradients; loss and predictions of the fine-tuned head."""
    del seed
    logits = self.predict_episode(episode)
    loss = base.mean_cross_entropy(logits, episode.query_labels)
    grads = [tf.zeros_like(v) for v in self.trainable_variables]
    return loss, grads, tf.argmax(logits, axis=-1, output_type=tf.int32)

  def test_time_cost(self):
    return {'forward_backward_steps': self.num_steps, 'forward_passes': 1}


@gin.configurable('finetuner')
def make_finetuner(backbone='conv4', image_size=84, num_steps=50, learning_rate=1e-3,
                   film=False, backbone_weights=None):
  """gin constructor: `run_training.learner = @finetuner()`."""
  return FineTuner(backbone=backbone, image_size=image_size, num_steps=num_steps,
                   learning_rate=learning_rate, film=film, backbone_weights=backbone_weights)
