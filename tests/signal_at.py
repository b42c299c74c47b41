"""A Keras callback that sends its own process a signal after a given task (gin:
`import signal_at` and `run_training.callbacks = [@SignalAt()]`), so a test can interrupt
training at an exact point."""

import json
import os
import signal

import gin
import keras


@gin.configurable
class SignalAt(keras.callbacks.Callback):

  """Sends `signum` once `task` tasks are trained: after that task (phase 'train') or after
  the first validation episode that follows it (phase 'validation'). With `once_file`, only
  if that file does not exist yet (it is created): a resumed run that passes the same point
  again is not stopped again."""

  def __init__(self, task=3, signum=int(signal.SIGINT), phase='train', once_file=None,
               only_worker=None):
    super().__init__()
    self.task = task
    self.signum = signum
    self.phase = phase
    self.once_file = once_file
    self.only_worker = only_worker  # the index in TF_CONFIG of the one worker to signal

  def _fire(self, phase):
    if self.only_worker is not None:
      index = json.loads(os.environ.get('TF_CONFIG', '{}')).get('task', {}).get('index')
      if index != self.only_worker:
        return
    done = getattr(self.model, 'tasks_seen', None)  # a pre-training counts optimizer steps
    done = self.model.optimizer.iterations if done is None else done
    if phase != self.phase or int(done.numpy()) != self.task:
      return
    if self.once_file:
      if os.path.exists(self.once_file):
        return
      open(self.once_file, 'w').close()
    os.kill(os.getpid(), self.signum)

  def on_train_batch_end(self, batch, logs=None):
    self._fire('train')

  def on_test_batch_end(self, batch, logs=None):
    if batch == 0:
      self._fire('validation')
