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

import tensorflow as tf


class CheckpointError(ValueError):
  """A checkpoint that does not belong to this model."""


def _signature(variables):
  return [[v.path, list(v.shape), str(v.dtype)] for v in variables]


class TrainingCheckpoint:
  """Saves and restores `model.variables` and its optimizer's variables.

  Args:
    model: a compiled lite_tf.lite.model.EpisodicModel whose optimizer is built.
    directory: checkpoint folder (train_dir/checkpoints).
    max_to_keep: checkpoints kept by the manager.
  """

  def __init__(self, model, directory, max_to_keep=3):
    self.model = model
    variables = list(model.variables) + list(model.optimizer.variables)
    seen, self.variables = set(), []
    for v in variables:  # a variable reachable twice is saved once
      if id(v) not in seen:
        seen.add(id(v))
        self.variables.append(v)
    self.signature = json.dumps(_signature(self.variables))
    self._signature_variable = tf.Variable(self.signature, trainable=False)
    values = {f'v{i:05d}': v.value for i, v in enumerate(self.variables)}
    self.checkpoint = tf.train.Checkpoint(signature=self._signature_variable, variables=values)
    self.directory = directory
    self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep)

  def save(self, step):
    """Writes checkpoint `step`; the manager's index moves to it only once it is complete."""
    return self.manager.save(checkpoint_number=int(step))

  def _check_signature(self, path):
    reader = tf.train.load_checkpoint(path)
    key = 'signature/.ATTRIBUTES/VARIABLE_VALUE'
    if key not in reader.get_variable_to_shape_map():
      raise CheckpointError(f'{path} is not a lite_tf training checkpoint (no signature)')
    stored = json.loads(reader.get_tensor(key).decode())
    if stored == json.loads(self.signature):
      return
    ours = {p: (s, d) for p, s, d in json.loads(self.signature)}
    theirs = {p: (s, d) for p, s, d in stored}
    problems = [f'{p}: checkpoint {theirs[p]}, model {ours[p]}'
                for p in ours if p in theirs and ours[p] != theirs[p]]
    problems += [f'{p}: not in the checkpoint' for p in ours if p not in theirs]
    problems += [f'{p}: in the checkpoint, not in the model' for p in theirs if p not in ours]
    shown = '\n  '.join(problems[:20])
    more = f'\n  ... and {len(problems) - 20} more' if len(problems) > 20 else ''
    raise CheckpointError(
        f'{path} was written by a different model (another learner, backbone or optimizer '
        f'setting?); nothing was restored. Differences:\n  {shown}{more}')

  def restore_latest(self):
    """Restores the newest checkpoint, if any; returns its path or None."""
    path = self.manager.latest_checkpoint
    if path is None:
      return None
    self._check_signature(path)
    self.checkpoint.restore(path).assert_existing_objects_matched()
    return path
