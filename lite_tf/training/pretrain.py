"""Supervised pre-training of a backbone on the labelled batches of a train split.

CNAPs and Simple CNAPs keep their backbone frozen, so it must be pretrained first: a linear
head over the backbone's features, trained with cross-entropy (BatchNorm in training mode,
which is fine here: no LITE), then the backbone alone is saved for
`cnaps.backbone_weights` / `simple_cnaps.backbone_weights`.

Resumable as training is: a checkpoint (model, optimizer, step) after every
`steps_per_log` steps and after the step in progress on SIGINT / SIGTERM, in
`<output>.checkpoints/` beside the operative config; the same command resumes where it
stopped (the batches already trained on are read again and skipped), and on a finished run
does nothing. A run under another configuration is refused, and an existing `output`
written by something else is never overwritten.
"""

import json
import os

from absl import logging
import gin
import keras
import numpy as np
import tensorflow as tf

from lite_tf import backbones
from lite_tf import atomic
from lite_tf import checks
from lite_tf import interrupt
from lite_tf.backbones import weights as weights_lib
from lite_tf.data import glyphs
from lite_tf.training import callbacks as training_callbacks
from lite_tf.training import checkpoints


OUTPUT_FORMATS = ('.weights.h5', '.h5', '.ckpt')


def check_output(output):
  """--output must name a file of a documented format, and not an existing folder."""
  if not output:
    raise ValueError('--output: give the path of the backbone weights file to write')
  if os.path.isdir(output):
    raise ValueError(f'--output={output!r} is an existing folder; give a file name ending in '
                     f'{", ".join(OUTPUT_FORMATS)} (or a checkpoint prefix) inside it')
  extension = os.path.splitext(os.path.basename(output))[1]
  if extension and not output.endswith(OUTPUT_FORMATS):
    raise ValueError(f'--output={output!r}: unknown format {extension!r}; expected a name '
                     f'ending in {", ".join(OUTPUT_FORMATS)}, or a TF checkpoint prefix '
                     'without extension')


def default_checkpoint_dir(output):
  return f'{output}.checkpoints'


def _output_exists(output):
  return os.path.exists(output) or os.path.exists(f'{output}.index')


# Bindings that cannot change the weights a run writes.
_SAFE_TO_CHANGE = ('run_pretraining.verbose',)


def _check_same_run(output, checkpoint_dir):
  """Refuses to resume or finish a pre-training under another configuration, and to write
  over an `output` that no run in `checkpoint_dir` wrote; returns the finished run's result,
  or None to (re)start. Nothing is written here."""
  from lite_tf import config as config_lib  # pylint: disable=g-import-not-at-top
  config_path = os.path.join(checkpoint_dir, 'operative_config.gin')
  if not os.path.exists(config_path):
    if _output_exists(output):
      raise ValueError(f'--output={output!r} exists and {checkpoint_dir} holds no pre-training '
                       'that wrote it; refusing to overwrite it: give another --output, or '
                       'remove it')
    return None
  with open(config_path, encoding='utf-8') as f:
    old = f.read()
  # As bin/train.py compares a run (lite_tf.config.run_changes): a binding the run lacks
  # counts as the default it ran with, one this run has not reached yet is left out.
  changes = [c for c in config_lib.run_changes(old, gin.operative_config_str())
             if c[0] not in _SAFE_TO_CHANGE]
  if changes:
    listed = '; '.join(f'{name} = {before!r} in the run, {now!r} now'
                       for name, before, now in changes[:6])
    raise ValueError(f'{checkpoint_dir} holds a pre-training with another configuration '
                     f'({listed}); nothing was written. Give another --output, or the run\'s '
                     f'bindings ({config_path})')
  result_path = os.path.join(checkpoint_dir, 'result.json')
  if os.path.exists(result_path) and _output_exists(output):
    with open(result_path, encoding='utf-8') as f:
      return dict(json.load(f), resumed='finished')
  return None


class _SaveEveryEpoch(keras.callbacks.Callback):
  """A checkpoint at the end of every epoch (`steps_per_log` steps)."""

  def __init__(self, checkpoint):
    super().__init__()
    self.checkpoint = checkpoint

  def on_epoch_end(self, epoch, logs=None):
    self.checkpoint.save(int(self.model.optimizer.iterations.numpy()))


@gin.configurable
def glyph_batches(image_size=28, batch_size=64, seed=0, cache_dir=None):
  """Labelled batches of the glyph demo data's train classes: (dataset, num_classes)."""
  checks.require_int('glyph_batches.image_size', image_size, 1)
  checks.require_int('glyph_batches.batch_size', batch_size, 1)
  dataset = glyphs.load(size=image_size, cache_dir=cache_dir)
  classes = dataset.split_classes('train')
  keep = np.isin(dataset.labels, classes)
  labels = np.searchsorted(np.asarray(classes), dataset.labels[keep]).astype(np.int32)
  images = dataset.images[keep]
  data = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(
      len(labels), seed=seed).repeat()
  data = data.map(lambda x, y: (tf.cast(x, tf.float32) / 127.5 - 1.0, y),
                  num_parallel_calls=tf.data.AUTOTUNE)
  return data.batch(batch_size).prefetch(tf.data.AUTOTUNE), len(classes)


class _Classifier(keras.Model):
  """backbone + linear head, trained together."""

  def __init__(self, backbone, num_classes, **kwargs):
    super().__init__(**kwargs)
    self.backbone = backbone
    self.head = keras.layers.Dense(num_classes, name='head')

  def call(self, images, training=False):
    return self.head(self.backbone(images, training=training))


@gin.configurable
def run_pretraining(output, backbone='conv4', image_size=84, batch_source=gin.REQUIRED,
                    num_steps=1000, steps_per_log=100, learning_rate=1e-3, verbose=2,
                    checkpoint_dir=None, callbacks=()):
  """Pre-trains `backbone` and saves its weights (lite_tf.backbones.weights.save) to `output`.

  Args:
    output: `*.h5` (layer-named), `*.weights.h5` (Keras 3) or a TF checkpoint prefix
      (`*.ckpt`, or a name without extension; written as <prefix>.index and
      <prefix>.data-*).
    batch_source: callable -> (dataset of (images, labels), num_classes), e.g.
      `@labelled_batches` over a records dataset's train split, or `@glyph_batches`.
    num_steps: steps in all, rounded down to whole epochs of `steps_per_log` steps.
    checkpoint_dir: where the run's checkpoints, operative config and result are kept
      (default `<output>.checkpoints`).
    callbacks: extra Keras callbacks for model.fit.
  Returns:
    dict with the final 'loss' and 'accuracy' (the last epoch's means over its training
    batches), 'output', 'num_classes' and 'resumed' (None, 'finished' or the step resumed from).
  """
  check_output(output)
  checks.require_int('run_pretraining.num_steps', num_steps, 1)
  checks.require_int('run_pretraining.steps_per_log', steps_per_log, 1)
  checks.require_int('run_pretraining.image_size', image_size, 1)
  checkpoint_dir = checkpoint_dir or default_checkpoint_dir(output)
  directory = os.path.dirname(os.path.abspath(output))
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as e:
    raise ValueError(f'--output={output!r}: cannot create directory {directory!r}: {e}') from e
  if not os.access(directory, os.W_OK):
    raise ValueError(f'--output={output!r}: directory {directory!r} is not writable')
  dataset, num_classes = batch_source()
  shape = dataset.element_spec[0].shape
  if shape.rank == 4 and shape[1] is not None and shape[1:3] != (image_size, image_size):
    raise ValueError(f'run_pretraining.batch_source gives {shape[1]}x{shape[2]} images but '
                     f'run_pretraining.image_size={image_size}: bind them equal (e.g. '
                     'glyph_batches.image_size = %IMAGE_SIZE)')
  finished = _check_same_run(output, checkpoint_dir)
  if finished is not None:
    logging.info('%s: pre-training already finished (%s); nothing to do', output,
                 checkpoint_dir)
    return finished
  net = backbones.create(backbone)
  net.build((None, image_size, image_size, 3))
  model = _Classifier(net, num_classes, name='pretraining_classifier')
  model(tf.zeros([1, image_size, image_size, 3]))
  model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=['accuracy'])
  model.optimizer.build(model.trainable_variables)
  # Keras builds compiled metrics when the train step first traces; built now, their state
  # exists when an interrupted epoch's accumulators are put back at the epoch's start.
  images = tf.zeros([1, image_size, image_size, 3])
  model.compute_metrics(images, tf.zeros([1], tf.int32), model(images))
  model.reset_metrics()
  checkpoint = checkpoints.TrainingCheckpoint(model, checkpoint_dir, max_to_keep=2)
  restored = checkpoint.restore_latest()
  step = int(model.optimizer.iterations.numpy())
  metric_state = (training_callbacks.load_metric_state(model, checkpoint_dir, step)
                  if step % steps_per_log else None)
  if step % steps_per_log and metric_state is None:
    raise ValueError(f'{checkpoint_dir}: the checkpoint is at step {step}, not a multiple of '
                     f'run_pretraining.steps_per_log={steps_per_log}; keep the value of the '
                     'run that wrote it')
  if restored:
    logging.info('resuming pre-training from %s at step %d', restored, step)
  atomic.write_text(os.path.join(checkpoint_dir, 'operative_config.gin'),
                    gin.operative_config_str())
  epochs = max(1, num_steps // steps_per_log)
  logs = {}
  interrupt.check(f'stopped before pre-training (at step {step}); run the same command to '
                  'start it')
  with interrupt.deferred():
    try:
      logs = _fit(model, [dataset], batch_source, step, steps_per_log, epochs, metric_state,
                  list(callbacks) + [_SaveEveryEpoch(checkpoint)], verbose)
    except training_callbacks.StopRequested:
      step = int(model.optimizer.iterations.numpy())
      training_callbacks.save_metric_state(model, checkpoint_dir, step)
      checkpoint.save(step)
      interrupt.check(f'interrupted at step {step}; checkpoint saved in {checkpoint_dir}: run '
                      'the same command to resume')
  weights_lib.save(net, output)
  logging.info('pretrained %s over %d classes: saved %s', backbone, num_classes, output)
  result = {'loss': logs.get('loss'), 'accuracy': logs.get('accuracy'), 'output': output,
            'num_classes': num_classes}
  atomic.write_json(os.path.join(checkpoint_dir, 'result.json'), result)
  return dict(result, resumed=step if restored else None)


def _fit(model, datasets, batch_source, step, steps_per_log, epochs, metric_state, callbacks,
         verbose):
  """model.fit from `step` to the last epoch, on the batches from the `step`-th on; a run
  resumed inside an epoch first finishes it, with its metric accumulators put back. Returns
  the last epoch's logs. Each fit call reads a dataset of its own, made anew by
  `batch_source` after `datasets` (unused ones) run out: a dataset's shuffle draws its
  reshuffling seeds from a generator shared by its iterators, so a second iterator of one
  dataset would not read the batches an uninterrupted run reads."""
  logs = {}
  for epoch, last, steps, first in training_callbacks.fit_segments(step, steps_per_log, epochs):
    dataset = datasets.pop() if datasets else batch_source()[0]
    history = model.fit(dataset.skip(first), epochs=last, initial_epoch=epoch,
                        steps_per_epoch=steps, shuffle=False, verbose=verbose,
                        callbacks=[training_callbacks.RestoreMetrics(metric_state)] + callbacks
                        + [training_callbacks.StopOnSignal()])
    logs = {k: v[-1] for k, v in history.history.items()}
    metric_state = None
  return logs
