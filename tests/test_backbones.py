import numpy as np
import pytest

from lite_tf import backbones
from lite_tf.backbones import weights

SIZES = {'conv4': (0.1e6, 0.12e6, 64), 'resnet18': (11.1e6, 11.3e6, 512),
         'efficientnet_b0': (4.0e6, 4.1e6, 1280)}


def _images(n=2, size=64, seed=0):
  return np.random.RandomState(seed).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize('name', sorted(SIZES))
def test_size_and_features(name):
  low, high, dim = SIZES[name]
  model = backbones.create(name)
  model.build((None, 64, 64, 3))
  assert low < model.count_params() < high
  assert tuple(model(_images(), training=False).shape) == (2, dim)


def test_conv4_features_for_any_size():
  model = backbones.create('conv4')
  for size in (28, 84):
    assert tuple(model(np.zeros((3, size, size, 3), np.float32)).shape) == (3, 64)


@pytest.mark.parametrize('name', sorted(SIZES))
def test_zero_film_is_the_identity_and_film_changes_features(name):
  model = backbones.create(name)
  x = _images()
  plain = model(x, training=False).numpy()
  np.testing.assert_allclose(model(x, film=model.zero_film(), training=False).numpy(), plain,
                             rtol=1e-6, atol=1e-6)
  rng = np.random.RandomState(1)
  film = [(rng.normal(0, 0.5, c).astype(np.float32), rng.normal(0, 0.5, c).astype(np.float32))
          for c in model.film_channels]
  assert np.abs(model(x, film=film, training=False).numpy() - plain).max() > 1e-3
  with pytest.raises(ValueError, match='FiLM layers'):
    model(x, film=film[:-1])


def test_film_layer_counts():
  assert len(backbones.create('resnet18').film_channels) == 16  # 2 per basic block
  # stem + 16 MBConv blocks (expanded width) + head
  channels = backbones.create('efficientnet_b0').film_channels
  assert len(channels) == 18 and channels[0] == 32 and channels[-1] == 1280
  assert channels[1:3] == [32, 96]


@pytest.mark.parametrize('name', ['resnet18', 'efficientnet_b0'])
def test_features_are_per_example_in_inference_mode(name):
  """BatchNorm in inference mode: an example's features do not depend on its batch."""
  model = backbones.create(name)
  x = _images(4, 32)
  together = model(x, training=False).numpy()
  alone = np.concatenate([model(x[i:i + 1], training=False).numpy() for i in range(4)])
  np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)


def test_unknown_backbone_lists_known_ones():
  with pytest.raises(ValueError, match=r"unknown backbone 'resnet50'.*conv4.*resnet18"):
    backbones.create('resnet50')


def _randomized(name, seed):
  model = backbones.create(name)
  model.build((None, 32, 32, 3))
  rng = np.random.RandomState(seed)
  for v in model.weights:
    v.assign(rng.normal(0, 0.1, v.shape).astype(np.float32) + (1.0 if 'variance' in v.path else 0))
  return model


@pytest.mark.parametrize('filename', ['b.weights.h5', 'b.h5', 'ckpt/b'])
def test_weights_round_trip_in_every_format(tmp_path, filename):
  source = _randomized('efficientnet_b0', 0)
  target = backbones.create('efficientnet_b0')
  target.build((None, 32, 32, 3))
  path = weights.save(source, str(tmp_path / filename))
  weights.load(target, path)
  x = _images(2, 32)
  np.testing.assert_array_equal(source(x).numpy(), target(x).numpy())


def test_keras_applications_efficientnet_weights_load_by_layer_name(tmp_path):
  """keras.applications' EfficientNetB0 weights file layout (legacy HDF5, layer names)."""
  import h5py  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  reference = keras.applications.EfficientNetB0(include_top=False, weights=None)
  rng = np.random.RandomState(0)
  path = str(tmp_path / 'efficientnetb0_notop.h5')
  with h5py.File(path, 'w') as f:  # the layout of keras.applications' download
    names = [l.name for l in reference.layers]
    f.attrs['layer_names'] = [n.encode() for n in names]
    for layer in reference.layers:
      group = f.create_group(layer.name)
      weight_names = [f'{layer.name}/{w.name}:0' for w in layer.weights]
      group.attrs['weight_names'] = [w.encode() for w in weight_names]
      for w_name, w in zip(weight_names, layer.weights):
        group.create_dataset(w_name, data=rng.normal(0, 0.1, w.shape).astype(np.float32))
  model = backbones.create('efficientnet_b0')
  model.build((None, 32, 32, 3))
  weights.load(model, path)
  with h5py.File(path, 'r') as f:
    group = f['block6c_dwconv']
    np.testing.assert_array_equal(model.get_layer('block6c_dwconv').weights[0].numpy(),
                                  group[group.attrs['weight_names'][0]][()])


@pytest.mark.parametrize('filename', ['b.weights.h5', 'b.h5', 'ckpt/b'])
def test_weights_of_another_architecture_list_the_mismatched_layers(tmp_path, filename):
  path = weights.save(_randomized('efficientnet_b0', 0), str(tmp_path / filename))
  model = backbones.create('resnet18')
  model.build((None, 32, 32, 3))
  before = [v.numpy().copy() for v in model.weights]
  with pytest.raises(weights.WeightsError, match=r'(?s)does not fit.*mismatched layers:.*(stem_conv|layers/conv2d)\S*: (file|checkpoint) shape'):
    weights.load(model, path)
  for b, v in zip(before, model.weights):  # nothing assigned
    np.testing.assert_array_equal(b, v.numpy())


def test_missing_weights_file_is_named(tmp_path):
  model = backbones.create('conv4')
  model.build((None, 32, 32, 3))
  with pytest.raises(FileNotFoundError, match='nope'):
    weights.load(model, str(tmp_path / 'nope.h5'))
  with pytest.raises(FileNotFoundError, match='nope'):
    weights.load(model, str(tmp_path / 'nope'))


def test_efficientnet_kernels_are_initialised_as_keras_applications():
  """Every convolution kernel of our EfficientNet-B0 has keras.applications' initialiser
  (VarianceScaling, scale 2, fan out), layer by layer name; and at random initialisation the
  features of a batch differ between images by more than float32 round-off (with Keras'
  default Glorot initialiser they were ~1e-16: no gradient for a backbone trained from
  scratch)."""
  import keras  # pylint: disable=g-import-not-at-top
  reference = keras.applications.EfficientNetB0(include_top=False, weights=None)
  model = backbones.create('efficientnet_b0')
  model.build((None, 32, 32, 3))
  ours = {l.name: l for l in model._flatten_layers()}  # pylint: disable=protected-access
  checked = 0
  for layer in reference.layers:
    init = getattr(layer, 'depthwise_initializer', None) or getattr(layer, 'kernel_initializer',
                                                                    None)
    if init is None or layer.name not in ours:
      continue
    mine = ours[layer.name]
    mine_init = getattr(mine, 'depthwise_initializer', None) or mine.kernel_initializer
    assert type(mine_init) is type(init), layer.name
    assert mine_init.get_config() == init.get_config(), layer.name
    checked += 1
  assert checked == 81  # stem, top, and 16 blocks' expand (15), depthwise, SE (2) and project
  features = model(_images(4, 64)).numpy()
  assert features.std(axis=0).mean() > 1e-7, features.std(axis=0).mean()
