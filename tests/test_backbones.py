import numpy as np
import pytest

from lite_tf import backbones


def test_resnet18_size_and_features():
  model = backbones.create('resnet18')
  assert 11.1e6 < model.count_params() < 11.3e6
  out = model(np.zeros((2, 64, 64, 3), np.float32), training=False)
  assert tuple(out.shape) == (2, 512)


def test_conv4_features_for_any_size():
  model = backbones.create('conv4')
  for size in (28, 84):
    assert tuple(model(np.zeros((3, size, size, 3), np.float32)).shape) == (3, 64)


def test_features_are_per_example_in_inference_mode():
  """BatchNorm in inference mode: an example's features do not depend on its batch."""
  model = backbones.create('resnet18')
  x = np.random.RandomState(0).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
  together = model(x, training=False).numpy()
  alone = np.concatenate([model(x[i:i + 1], training=False).numpy() for i in range(4)])
  np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)


def test_unknown_backbone_lists_known_ones():
  with pytest.raises(ValueError, match=r"unknown backbone 'resnet50'.*conv4.*resnet18"):
    backbones.create('resnet50')
