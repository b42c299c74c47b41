"""Pretrained backbone weights from a local file, never downloaded.

Three formats load into a built backbone:
  * a Keras 3 weights file (`*.weights.h5`, written by `model.save_weights`) of the same
    architecture;
  * an HDF5 weights file in the layer-named Keras layout (`*.h5`), such as keras.applications'
    ImageNet weights for EfficientNet-B0 (`efficientnetb0_notop.h5`) or what `save` below and
    `bin/pretrain.py` write: matched layer by layer by name;
  * a TensorFlow checkpoint (prefix of `*.index` / `*.data-*`), such as one written by `save`
    below: matched variable by variable on `layer_name/variable_name`.

Whatever the format, every weight of the backbone must be found with the right shape, or a
WeightsError lists each mismatched layer and nothing is assigned.
"""

import os
import tempfile

import h5py
import numpy as np
import tensorflow as tf


class WeightsError(ValueError):
  """A weights file that does not fit the backbone."""


def _layer_weights(backbone):
  """{layer name: [variables]} of the layers that hold weights, in Keras' weight order."""
  out = {}
  for layer in backbone._flatten_layers(include_self=False, recursive=True):  # pylint: disable=protected-access
    if layer.weights and not layer._flatten_layers(include_self=False):  # pylint: disable=protected-access
      out[layer.name] = list(layer.weights)
  return out


def _variable_key(variable):
  """'layer_name/variable_name' of a Keras variable."""
  return '/'.join(variable.path.split('/')[-2:])


def _raise_mismatches(path, kind, problems):
  shown = '\n  '.join(problems[:40])
  more = f'\n  ... and {len(problems) - 40} more' if len(problems) > 40 else ''
  raise WeightsError(f'{path}: {kind} does not fit the backbone; mismatched layers:\n  '
                     f'{shown}{more}')


def _h5_tree(path):
  shapes = {}
  with h5py.File(path, 'r') as f:
    f.visititems(lambda name, obj: shapes.__setitem__(name, obj.shape)
                 if isinstance(obj, h5py.Dataset) else None)
  return shapes


def _h5_layers(shapes):
  """{layer group: [shapes of its variables]} from {'group/vars/i': shape}."""
  layers = {}
  for name in sorted(shapes):
    layers.setdefault(name.rsplit('/vars/', 1)[0], []).append(shapes[name])
  return layers


def _load_keras_h5(backbone, path):
  """Keras 3 weights file: its tree must equal the one this backbone writes."""
  with tempfile.TemporaryDirectory() as tmp:
    own = os.path.join(tmp, 'own.weights.h5')
    backbone.save_weights(own)
    expected = _h5_layers(_h5_tree(own))
  found = _h5_layers(_h5_tree(path))
  differ = [f'{name}: file shapes {found[name]}, backbone shapes {expected[name]}'
            for name in expected if name in found and found[name] != expected[name]]
  missing = [f'{name}: not in the file' for name in expected if name not in found]
  extra = [f'{name}: in the file, not in the backbone' for name in found if name not in expected]
  if differ or missing or extra:
    _raise_mismatches(path, f'Keras weights file for {backbone.name!r}', differ + missing + extra)
  backbone.load_weights(path)


def _load_legacy_h5(backbone, path):
  """Legacy Keras HDF5 (layer groups with `weight_names`), matched by layer name."""
  with h5py.File(path, 'r') as f:
    root = f['model_weights'] if 'model_weights' in f else f
    stored = {}
    for name in root.attrs['layer_names']:
      name = name.decode() if isinstance(name, bytes) else name
      group = root[name]
      stored[name] = [np.asarray(group[w.decode() if isinstance(w, bytes) else w])
                      for w in group.attrs.get('weight_names', [])]
  assignments, problems = [], []
  for name, variables in _layer_weights(backbone).items():
    arrays = stored.get(name)
    if not arrays:
      problems.append(f'{name}: not in the file')
      continue
    shapes = [tuple(v.shape) for v in variables]
    if [a.shape for a in arrays] != shapes:
      problems.append(f'{name}: file shapes {[a.shape for a in arrays]}, backbone {shapes}')
      continue
    assignments += zip(variables, arrays)
  if problems:
    _raise_mismatches(path, f'HDF5 weights file for {backbone.name!r}', problems)
  for variable, array in assignments:
    variable.assign(array)


def _normalize_checkpoint_key(key):
  key = key.replace('/.ATTRIBUTES/VARIABLE_VALUE', '').replace('.S', '/').replace('|', '/')
  return '/'.join(key.split('/')[-2:])


def _load_checkpoint(backbone, path):
  reader = tf.train.load_checkpoint(path)
  stored = {}
  for key, shape in reader.get_variable_to_shape_map().items():
    stored.setdefault(_normalize_checkpoint_key(key), (key, tuple(shape)))
  assignments, problems = [], []
  for variable in backbone.weights:
    name = _variable_key(variable)
    if name not in stored:
      problems.append(f'{name}: not in the checkpoint')
    elif stored[name][1] != tuple(variable.shape):
      problems.append(f'{name}: checkpoint shape {stored[name][1]}, backbone shape '
                      f'{tuple(variable.shape)}')
    else:
      assignments.append((variable, stored[name][0]))
  if problems:
    _raise_mismatches(path, f'TF checkpoint for {backbone.name!r}', problems)
  for variable, key in assignments:
    variable.assign(reader.get_tensor(key))


def load(backbone, path):
  """Loads weights from `path` (see the module docstring) into a built backbone."""
  if not backbone.built:
    raise ValueError(f'build {backbone.name!r} before loading weights into it')
  if path.endswith('.h5'):
    if not os.path.exists(path):
      raise FileNotFoundError(f'weights file {path!r} does not exist')
    try:
      with h5py.File(path, 'r') as f:
        legacy = 'layer_names' in f.attrs or 'model_weights' in f
    except OSError as e:
      raise WeightsError(f'{path}: not a readable HDF5 weights file ({e})') from e
    return (_load_legacy_h5 if legacy else _load_keras_h5)(backbone, path)
  if tf.io.gfile.isdir(path):
    latest = tf.train.latest_checkpoint(path)
    if latest is None:
      raise FileNotFoundError(f'no TF checkpoint in directory {path!r}')
    path = latest
  if not tf.io.gfile.exists(path + '.index'):
    raise FileNotFoundError(f'weights {path!r}: expected a .h5 file or a TF checkpoint prefix '
                            f'({path}.index not found)')
  return _load_checkpoint(backbone, path)


def _save_layer_named_h5(backbone, path):
  with h5py.File(path, 'w') as f:
    layer_weights = _layer_weights(backbone)
    f.attrs['layer_names'] = [name.encode() for name in layer_weights]
    for name, variables in layer_weights.items():
      group = f.create_group(name)
      weight_names = [_variable_key(v) for v in variables]
      group.attrs['weight_names'] = [w.encode() for w in weight_names]
      for weight_name, variable in zip(weight_names, variables):
        group.create_dataset(weight_name, data=variable.numpy())


def save(backbone, path):
  """Saves backbone weights atomically: `*.weights.h5` (Keras 3 layout), other `*.h5`
  (layer-named layout) or, for any other path, a TF checkpoint prefix. Returns the path."""
  from lite_tf import atomic  # pylint: disable=g-import-not-at-top
  if path.endswith('.weights.h5'):
    with atomic.atomic_path(path, suffix='.weights.h5') as tmp:
      backbone.save_weights(tmp)
    return path
  if path.endswith('.h5'):
    with atomic.atomic_path(path, suffix='.h5') as tmp:
      _save_layer_named_h5(backbone, tmp)
    return path
  variables = {_variable_key(v).replace('/', '|'): v.value for v in backbone.weights}
  return tf.train.Checkpoint(**{'weights': variables}).write(path)
