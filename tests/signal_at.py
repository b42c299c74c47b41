"""A Keras callback that sends its own process a signal after a given task (gin:
`import signal_at` and `run_training.callbacks = [@SignalAt()]`), so a test can interrupt
training at an exact point."""

import os
import signal

import gin
import keras


@gin.configurable
class SignalAt(keras.callbacks.Callback):

  def __init__(self, task=3, signum=int(signal.SIGINT)):
    super().__init__()
    self.task = task
    self.signum = signum

  def on_train_batch_end(self, batch, logs=None):
    if int(self.model.tasks_seen.numpy()) == self.task:
      os.kill(os.getpid(), self.signum)
