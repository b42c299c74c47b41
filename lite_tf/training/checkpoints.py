"""Training checkpoints: model, optimizer and progress, with tf.train.CheckpointManager.

Keras 3 objects are not tf.train trackables, so the checkpoint holds their variables by path,
plus a signature (each variable's path and shape) that is checked before anything is restored:
a checkpoint of another learner or backbone is refused with the differences listed, and the
model is left untouched.

Nothing else needs saving for an exact resume: the step is the model's `tasks_seen` variable,
LITE's subset draws are stateless functions of (seed, tasks_seen), and episode sources start
at any episode index (`as_dataset(start=...)`).
"""

import json
import os
import tempfile

import numpy as np
import tensorflow as tf


class CheckpointError(ValueError):
  """A checkpoint that does not belong to this model."""


def _listed_differences(ours, theirs, ours_name, theirs_name, limit):
  """Indented lines naming each entry whose value differs between two {name: value} maps or
  that is in one only (at most `limit`, then a count)."""
  problems = [f'{p}: {theirs_name} {theirs[p]}, {ours_name} {ours[p]}'
              for p in ours if p in theirs and ours[p] != theirs[p]]
  problems += [f'{p}: not in the {theirs_name}' for p in ours if p not in theirs]
  problems += [f'{p}: in the {theirs_name}, not in the {ours_name}'
               for p in theirs if p not in ours]
  shown = '\n  '.join(problems[:limit])
  more = f'\n  ... and {len(problems) - limit} more' if len(problems) > limit else ''
  return f'\n  {shown}{more}'


_SIGNATURE_KEY = 'signature_utf8/.ATTRIBUTES/VARIABLE_VALUE'
_OLD_SIGNATURE_KEY = 'signature/.ATTRIBUTES/VARIABLE_VALUE'


def _signature(variables):
  return [[v.path, list(v.shape), str(v.dtype)] for v in variables]


class TrainingCheckpoint:
  """Saves and restores `model.variables` and its optimizer's variables.

  Args:
    model: a compiled lite_tf.lite.model.EpisodicModel whose optimizer is built.
    directory: checkpoint folder (train_dir/checkpoints).
    max_to_keep: checkpoints kept by the manager.
    read_directory: where restore_latest looks (default: `directory`); a non-chief worker of
      a cluster writes to a scratch folder and reads the chief's checkpoints.
  """

  def __init__(self, model, directory, max_to_keep=3, read_directory=None):
    self.model = model
    variables = list(model.variables) + list(model.optimizer.variables)
    seen, self.variables = set(), []
    for v in variables:  # a variable reachable twice is saved once
      if id(v) not in seen:
        seen.add(id(v))
        self.variables.append(v)
    self.signature = json.dumps(_signature(self.variables))
    # The signature's UTF-8 bytes as int32: MultiWorkerMirroredStrategy broadcasts every
    # variable's initial value, and its collectives take no strings.
    self._signature_variable = tf.Variable(
        np.frombuffer(self.signature.encode(), np.uint8).astype(np.int32), trainable=False)
    self._values = {f'v{i:05d}': v.value for i, v in enumerate(self.variables)}
    self.checkpoint = tf.train.Checkpoint(signature_utf8=self._signature_variable,
                                          variables=self._values)
    self.directory = directory
    self.read_directory = read_directory or directory
    self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep)

  def save(self, step):
    """Writes checkpoint `step`; the manager's index moves to it only once it is complete."""
    return self.manager.save(checkpoint_number=int(step))

  def _check_signature(self, path):
    """Raises CheckpointError unless `path` holds this model's variables; returns whether it
    is of the older format (a string signature)."""
    reader = tf.train.load_checkpoint(path)
    keys = reader.get_variable_to_shape_map()
    if _SIGNATURE_KEY in keys:
      stored = json.loads(reader.get_tensor(_SIGNATURE_KEY).astype(np.uint8).tobytes().decode())
    elif _OLD_SIGNATURE_KEY in keys:  # checkpoints written before the int32 signature
      stored = json.loads(reader.get_tensor(_OLD_SIGNATURE_KEY).decode())
    else:
      raise CheckpointError(f'{path} is not a lite_tf training checkpoint (no signature)')
    if stored == json.loads(self.signature):
      return _OLD_SIGNATURE_KEY in keys
    ours = {p: (s, d) for p, s, d in json.loads(self.signature)}
    theirs = {p: (s, d) for p, s, d in stored}
    raise CheckpointError(
        f'{path} was written by a different model (another learner, backbone or optimizer '
        f'setting?); nothing was restored. Differences:'
        f'{_listed_differences(ours, theirs, "model", "checkpoint", 20)}')

  def restore_latest(self):
    """Restores the newest checkpoint, if any; returns its path or None."""
    path = (self.manager.latest_checkpoint if self.read_directory == self.directory
            else tf.train.latest_checkpoint(self.read_directory))
    if path is None:
      return None
    if self._check_signature(path):
      tf.train.Checkpoint(variables=self._values).restore(path).expect_partial()
    else:
      self.checkpoint.restore(path).assert_existing_objects_matched()
    return path


class WeightsError(ValueError):
  """A learner weights file that is unreadable or belongs to another learner."""


def _h5_tree(path):
  """{dataset path: shape} of every array in an HDF5 file."""
  import h5py  # pylint: disable=g-import-not-at-top
  tree = {}
  with h5py.File(path, 'r') as f:
    f.visititems(lambda name, obj: tree.__setitem__(name, tuple(obj.shape))
                 if isinstance(obj, h5py.Dataset) else None)
  return tree


def load_learner_weights(learner, path):
  """Loads `path` (a Keras .weights.h5 of the learner) into the built `learner` after checking
  that the file holds exactly the arrays the learner would save (names and shapes), so the
  weights of another learner or backbone are refused, naming the file and the differences,
  instead of being half-loaded."""
  if not os.path.isfile(path):
    raise WeightsError(f'{path}: no such weights file')
  try:
    theirs = _h5_tree(path)
  except (OSError, ValueError) as e:
    raise WeightsError(f'{path}: not a readable Keras .weights.h5 file (garbage or truncated? '
                       f'{e})') from e
  with tempfile.TemporaryDirectory() as tmp:
    own = os.path.join(tmp, 'own.weights.h5')
    learner.save_weights(own)
    ours = _h5_tree(own)
  if theirs != ours:
    raise WeightsError(
        f'{path} holds the weights of a different learner (another learner, backbone or '
        f'way?) than {type(learner).__name__} of this configuration; nothing was loaded. '
        f'Differences:{_listed_differences(ours, theirs, "learner", "file", 10)}')
  learner.load_weights(path)
