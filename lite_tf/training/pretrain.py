"""Supervised pre-training of a backbone on the labelled batches of a train split.

CNAPs and Simple CNAPs keep their backbone frozen, so it must be pretrained first: a linear
head over the backbone's features, trained with cross-entropy (BatchNorm in training mode,
which is fine here: no LITE), then the backbone alone is saved for
`cnaps.backbone_weights` / `simple_cnaps.backbone_weights`.
"""

import os

from absl import logging
import gin
import keras
import numpy as np
import tensorflow as tf

from lite_tf import backbones
from lite_tf import checks
from lite_tf.backbones import weights as weights_lib
from lite_tf.data import glyphs


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
                    num_steps=1000, steps_per_log=100, learning_rate=1e-3, verbose=2):
  """Pre-trains `backbone` and saves its weights (lite_tf.backbones.weights.save) to `output`.

  Args:
    output: `*.h5` (layer-named), `*.weights.h5` (Keras 3) or a TF checkpoint prefix
      (`*.ckpt`, or a name without extension; written as <prefix>.index and
      <prefix>.data-*).
    batch_source: callable -> (dataset of (images, labels), num_classes), e.g.
      `@labelled_batches` over a records dataset's train split, or `@glyph_batches`.
  Returns:
    dict with the final 'loss' and 'accuracy' (on training batches) and 'output'.
  """
  check_output(output)
  checks.require_int('run_pretraining.num_steps', num_steps, 1)
  checks.require_int('run_pretraining.steps_per_log', steps_per_log, 1)
  checks.require_int('run_pretraining.image_size', image_size, 1)
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
  net = backbones.create(backbone)
  net.build((None, image_size, image_size, 3))
  model = _Classifier(net, num_classes, name='pretraining_classifier')
  model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=['accuracy'])
  history = model.fit(dataset, epochs=max(1, num_steps // steps_per_log), shuffle=False,
                      steps_per_epoch=steps_per_log, verbose=verbose)
  weights_lib.save(net, output)
  logging.info('pretrained %s over %d classes: saved %s', backbone, num_classes, output)
  return {'loss': history.history['loss'][-1], 'accuracy': history.history['accuracy'][-1],
          'output': output, 'num_classes': num_classes}
