"""Feature extractors with FiLM: images [n, size, size, 3] in [-1, 1] -> features [n, d].

Every backbone is a lite_tf.backbones.film.FilmBackbone: `backbone(images, film=None)`, where
`film` is an optional list of per-layer (gamma, beta) pairs (`backbone.film_channels`).
Backbones are registered by name so that gin selects one with a string binding
(`protonets.backbone = 'resnet18'`). BatchNorm layers are meant to run in inference mode under
LITE: training-mode batch statistics couple the examples of a batch and break LITE's
per-example decomposition of the support set.
"""

from lite_tf.backbones.conv4 import conv4
from lite_tf.backbones.efficientnet import efficientnet_b0
from lite_tf.backbones.resnet18 import resnet18

_REGISTRY = {
    'conv4': conv4,
    'efficientnet_b0': efficientnet_b0,
    'resnet18': resnet18,
}


def names():
  return sorted(_REGISTRY)


def create(name, **kwargs):
  """Builds the backbone registered as `name`; unknown names list the known ones."""
  if name not in _REGISTRY:
    raise ValueError(f'unknown backbone {name!r}; known backbones: {names()}')
  return _REGISTRY[name](**kwargs)
