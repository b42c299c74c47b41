"""The paper's models as the reference code builds them (cambridge-mlg/LITE and
microsoft/ORBIT-Dataset, 2021): parameter counts equal to the LITE paper's Table 1, and the
layer shapes of the set encoder, FiLM generators and CNAPs' classifier generators."""

import numpy as np
import pytest

from lite_tf.learners import cnaps
from lite_tf.learners import protonets
from lite_tf.learners import simple_cnaps

# LITE paper, Table 1 (millions of parameters).
TABLE_1 = {
    ('protonets', 'efficientnet_b0'): 4.01, ('protonets', 'resnet18'): 11.18,
    ('cnaps', 'efficientnet_b0'): 10.59, ('cnaps', 'resnet18'): 12.76,
    ('simple_cnaps', 'efficientnet_b0'): 5.67, ('simple_cnaps', 'resnet18'): 11.97,
}
BUILDERS = {'protonets': protonets.make_protonets, 'cnaps': cnaps.make_cnaps,
            'simple_cnaps': simple_cnaps.make_simple_cnaps}


def count_parameters(model):
  """Parameters as the reference counts them: every weight but BatchNorm moving statistics."""
  return sum(int(np.prod(v.shape)) for v in model.weights
             if not v.path.endswith(('moving_mean', 'moving_variance')))


@pytest.fixture(scope='module', params=['efficientnet_b0', 'resnet18'])
def built(request):
  """{learner name: learner} with the given backbone at 224x224."""
  models = {}
  for name, build in BUILDERS.items():
    model = build(backbone=request.param, image_size=224)
    if not model.built:
      model.build((None, 224, 224, 3))
    models[name] = model
  return request.param, models


@pytest.mark.parametrize('name', sorted(BUILDERS))
def test_parameter_counts_equal_table_1(built, name):
  backbone, models = built
  count = count_parameters(models[name]) / 1e6
  expected = TABLE_1[(name, backbone)]
  assert abs(count - expected) / expected < 0.005, (name, backbone, count, expected)
  assert round(count, 2) == expected


def _shapes(layer):
  return [tuple(v.shape) for v in layer.weights]


def test_set_encoder_and_film_generator_shapes_equal_the_references(built):
  backbone, models = built
  model = models['simple_cnaps']
  # Set encoder: 5 x [Conv3x3(64) with bias, BatchNorm(64) affine]: 150,144 parameters.
  encoder = model.set_encoder
  assert [_shapes(c) for c in encoder.convs] == (
      [[(3, 3, 3, 64), (64,)]] + [[(3, 3, 64, 64), (64,)]] * 4)
  assert [_shapes(n) for n in encoder.norms] == [[(64,), (64,)]] * 5
  assert count_parameters(encoder) == 150144
  assert encoder.image_size is None  # images at the backbone's resolution
  # FiLM: per adapted layer, separate gamma and beta networks Linear(64, 64) -> LayerNorm(64)
  # -> ReLU -> Linear(64, C), and per-channel scale vectors.
  generator = model.film_generator
  channels = model.backbone.film_channels
  assert len(channels) == {'efficientnet_b0': 18, 'resnet18': 16}[backbone]
  for c, gamma, beta, rg, rb in zip(channels, generator.gamma_nets, generator.beta_nets,
                                    generator.gamma_regularizers,
                                    generator.beta_regularizers):
    for net in (gamma, beta):
      assert _shapes(net) == [(64, 64), (64,), (64,), (64,), (64, c), (c,)]
    assert tuple(rg.shape) == tuple(rb.shape) == (c,)
  assert count_parameters(generator) == sum(8576 + 132 * c for c in channels)


def test_cnaps_classifier_generators_are_the_references_elu_blocks(built):
  _, models = built
  model = models['cnaps']
  d = model.backbone.feature_dim
  assert [_shapes(l) for l in model.weight_generator.linears] == [[(d, d), (d,)]] * 3
  assert model.weight_generator.residual
  assert [_shapes(l) for l in model.bias_generator.linears] == [
      [(d, 1), (1,)], [(1, 1), (1,)], [(1, 1), (1,)]]
  assert not model.bias_generator.residual
