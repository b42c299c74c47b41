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
import re
import tempfile

from absl import logging

import numpy as np
import tensorflow as tf

from lite_tf import atomic


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


def checkpoint_files(directory):
  """[(step, prefix)] of the complete checkpoints in `directory` (an index file and all its
  data shards), oldest first: what a run can resume from even without the manager's
  `checkpoint` index file."""
  if not os.path.isdir(directory):
    return []
  out = []
  for name in os.listdir(directory):
    match = re.fullmatch(r'ckpt-(\d+)\.index', name)
    if not match:
      continue
    prefix = os.path.join(directory, name[:-len('.index')])
    shards = [f for f in os.listdir(directory) if f.startswith(f'{name[:-6]}.data-')]
    total = re.fullmatch(r'.*\.data-\d+-of-(\d+)', shards[0]) if shards else None
    if total and len(shards) == int(total.group(1)):
      out.append((int(match.group(1)), prefix))
  return sorted(out)


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
    """Restores the newest checkpoint, if any; returns its path or None. Without the
    manager's index file (`checkpoint`, deleted or lost) the newest complete checkpoint
    present is restored and the index written anew; an unreadable checkpoint is an error
    naming it."""
    path = (self.manager.latest_checkpoint if self.read_directory == self.directory
            else tf.train.latest_checkpoint(self.read_directory))
    if path is None:
      present = checkpoint_files(self.read_directory)
      if not present:
        return None
      path = present[-1][1]
      logging.warning('%s: no checkpoint index file; resuming from the newest checkpoint '
                      'present, %s', self.read_directory, os.path.basename(path))
      if self.read_directory == self.directory:
        # The manager's index, as tf.train.CheckpointManager writes it (text proto).
        lines = [f'model_checkpoint_path: "{os.path.basename(path)}"']
        lines += [f'all_model_checkpoint_paths: "{os.path.basename(p)}"' for _, p in present]
        atomic.write_text(os.path.join(self.directory, 'checkpoint'), '\n'.join(lines) + '\n')
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.directory,
                                                  self.manager._max_to_keep)  # pylint: disable=protected-access
    try:
      if self._check_signature(path):
        tf.train.Checkpoint(variables=self._values).restore(path).expect_partial()
      else:
        self.checkpoint.restore(path).assert_existing_objects_matched()
    except CheckpointError:
      raise
    except (tf.errors.OpError, IndexError, ValueError, AssertionError) as e:
      message = e.message if isinstance(e, tf.errors.OpError) else f'{e}'
      raise CheckpointError(
          f'{path}: unreadable checkpoint (truncated or damaged? {message.splitlines()[0]}); '
          'nothing was restored: move it (its .index and .data files) away to resume from '
          'the one before') from None
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
