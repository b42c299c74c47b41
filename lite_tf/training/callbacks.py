"""Keras callbacks of bin/train.py: checkpoints, best-model selection, extra summaries."""

import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from lite_tf import atomic
from lite_tf import proc_status


def peak_memory_bytes():
  """Peak memory so far: the accelerator allocator's peak, else the process's peak RSS."""
  gpus = tf.config.list_logical_devices('GPU')
  if gpus:
    return tf.config.experimental.get_memory_info(gpus[0].name)['peak']
  return (proc_status.status_kib('VmHWM') or 0) * 1024


class EpochCheckpoint(keras.callbacks.Callback):
  """At the end of every epoch (`steps_per_log` tasks): one line of train_dir/history.jsonl
  (step and logs), then a training checkpoint. In that order: a run killed in between redoes
  the epoch and rewrites its line (read_history keeps the last), instead of losing it.
  Put it after callbacks whose epoch-end work must not be lost (BestCheckpoint)."""

  def __init__(self, checkpoint, history_path):
    super().__init__()
    self.checkpoint = checkpoint
    self.history_path = history_path

  def on_epoch_end(self, epoch, logs=None):
    step = int(self.model.tasks_seen.numpy())
    record = {'step': step, 'epoch': epoch + 1}
    record.update({k: float(v) for k, v in (logs or {}).items()})
    with open(self.history_path, 'a') as f:
      f.write(json.dumps(record) + '\n')
      f.flush()
      os.fsync(f.fileno())
    atomic.check_free_space(
        os.path.dirname(self.history_path),
        weights_bytes(self.checkpoint.variables), f'checkpoint {step}')
    self.checkpoint.save(step)


class StopRequested(Exception):
  """Raised by StopOnSignal from model.fit after the task in progress (run_training saves a
  checkpoint of it), or after the validation episode in progress (`during_validation`: the
  epoch's training metrics are gone by then, so the run resumes from its last checkpoint).
  `by_peer`: this worker received no signal; another worker of the cluster did."""

  def __init__(self, during_validation=False, by_peer=False):
    super().__init__()
    self.during_validation = during_validation
    self.by_peer = by_peer


class StopOnSignal(keras.callbacks.Callback):
  """Ends model.fit at once, after the task or validation episode in progress, once SIGINT
  or SIGTERM came (lite_tf.interrupt): it raises, so neither validation nor the epoch-end
  callbacks run on a partial epoch. Put it last.

  With a MultiWorkerMirroredStrategy (`strategy`) the workers agree after every step whether
  any of them was signalled (one collective of one integer), so all stop after the same task
  and can save one checkpoint together, whichever host got the Ctrl-C or the SIGTERM.
  """

  def __init__(self, strategy=None):
    super().__init__()
    self._anywhere = None
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
      # One function, traced once: the number of workers that were signalled.
      self._anywhere = tf.function(lambda here: strategy.reduce(
          tf.distribute.ReduceOp.SUM, strategy.run(lambda: here), axis=None))

  def _stop(self, during_validation):
    from lite_tf import interrupt  # pylint: disable=g-import-not-at-top
    here = interrupt.requested() is not None
    anywhere = here
    if self._anywhere is not None:
      anywhere = bool(self._anywhere(tf.constant(int(here), tf.int32)).numpy())
    if anywhere:
      raise StopRequested(during_validation=during_validation, by_peer=not here)

  def on_train_batch_end(self, batch, logs=None):
    self._stop(during_validation=False)

  def on_test_batch_end(self, batch, logs=None):
    self._stop(during_validation=True)


class RestoreMetrics(keras.callbacks.Callback):
  """Puts the metric accumulators of an interrupted epoch back after fit resets them at the
  epoch's start, so the resumed epoch's means are those of an uninterrupted run."""

  def __init__(self, values):
    super().__init__()
    self.values = values

  def on_epoch_begin(self, epoch, logs=None):
    if self.values is not None:
      if len(self.values) != len(self.model.metrics_variables):
        raise ValueError(f'{len(self.values)} saved metric values for the '
                         f'{len(self.model.metrics_variables)} metric variables of the model '
                         '(its compiled metrics not built yet?)')
      for variable, value in zip(self.model.metrics_variables, self.values):
        variable.assign(value)
      self.values = None


def fit_segments(step, steps_per_log, epochs):
  """The model.fit calls that train from task `step` to the end of epoch `epochs`:
  [(initial_epoch, last_epoch, steps_per_epoch, first_step)]. A run resumed inside an epoch
  (an interrupted one) first finishes that epoch alone, then the remaining whole epochs run in
  one call."""
  segments, epoch = [], step // steps_per_log
  while epoch < epochs:
    remaining = (epoch + 1) * steps_per_log - step
    last = epochs if remaining == steps_per_log else epoch + 1
    segments.append((epoch, last, remaining, step))
    epoch, step = last, last * steps_per_log
  return segments


def metric_state_path(checkpoint_dir, step):
  """Where an interrupted epoch's metric accumulators are kept, beside its checkpoint."""
  return os.path.join(checkpoint_dir, f'metrics-{int(step)}.json')


def save_metric_state(model, checkpoint_dir, step):
  atomic.write_json(metric_state_path(checkpoint_dir, step),
                    {'step': int(step),
                     'values': [v.numpy().tolist() for v in model.metrics_variables]})


def load_metric_state(model, checkpoint_dir, step):
  """The metric accumulators saved at `step`, or None (a run restarted at an epoch's start)."""
  path = metric_state_path(checkpoint_dir, step)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    values = json.load(f)['values']
  variables = model.metrics_variables
  if len(values) != len(variables):
    raise ValueError(f'{path}: {len(values)} metric values for {len(variables)} metrics '
                     '(written by another configuration?)')
  return [np.asarray(v, dtype=var.dtype) for v, var in zip(values, variables)]


def weights_bytes(variables):
  """A bound on the bytes a file of these variables takes (values plus 1 MiB of headers)."""
  return sum(int(v.numpy().nbytes) for v in variables) + 2**20


def read_history(path):
  """history.jsonl as a list of records, one per step (a line repeated after a resume that
  redid an epoch keeps its last copy; a line torn by a kill mid-write is skipped)."""
  if not os.path.exists(path):
    return []
  by_step = {}
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue
      by_step[record['step']] = record
  return [by_step[s] for s in sorted(by_step)]


class BestCheckpoint(keras.callbacks.Callback):
  """Keeps the learner weights with the best validation accuracy so far in train_dir/best/
  (learner.weights.h5 and best.json, both written atomically; survives resumes)."""

  def __init__(self, learner, directory, monitor='val_accuracy'):
    super().__init__()
    self.learner = learner
    self.directory = directory
    self.monitor = monitor
    self.info_path = os.path.join(directory, 'best.json')
    self.best = None
    if os.path.exists(self.info_path):
      with open(self.info_path) as f:
        self.best = json.load(f)[monitor]

  def on_epoch_end(self, epoch, logs=None):
    value = (logs or {}).get(self.monitor)
    if value is None or (self.best is not None and value <= self.best):
      return
    os.makedirs(self.directory, exist_ok=True)
    atomic.check_free_space(self.directory, weights_bytes(self.learner.weights),
                            'the best learner weights')
    with atomic.atomic_path(os.path.join(self.directory, 'learner.weights.h5'),
                            suffix='.weights.h5') as tmp:
      self.learner.save_weights(tmp)
    self.best = float(value)
    atomic.write_json(self.info_path, {self.monitor: self.best,
                                       'step': int(self.model.tasks_seen.numpy())})


class ExtraSummaries(keras.callbacks.Callback):
  """TensorBoard scalars beside Keras' own: tasks per second and peak memory per epoch."""

  def __init__(self, log_dir, tasks_per_step=1):
    super().__init__()
    self.tasks_per_step = tasks_per_step
    self.writer = tf.summary.create_file_writer(os.path.join(log_dir, 'train'))
    self._start = None

  def on_epoch_begin(self, epoch, logs=None):
    self._start = time.perf_counter()

  def on_epoch_end(self, epoch, logs=None):
    seconds = time.perf_counter() - self._start
    step = int(self.model.tasks_seen.numpy())
    steps = self.params.get('steps') or 1
    with self.writer.as_default(step=step):
      tf.summary.scalar('tasks_per_second', steps * self.tasks_per_step / seconds)
      tf.summary.scalar('peak_memory_gb', peak_memory_bytes() / 1024 ** 3)
    self.writer.flush()
