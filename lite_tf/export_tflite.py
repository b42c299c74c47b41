"""The adapted classifier (lite_tf.personalize.AdaptedClassifier) as a TFLite flatbuffer, for
a teachable recognizer that runs on a phone (ORBIT's setting).

The flatbuffer holds the backbone's weights and the task's adapted state (FiLM parameters,
prototypes, a generated head, Mahalanobis factors: Learner.servable_task) as constants. Its
one signature, `serving_default`, takes uint8 images [n, S, S, 3] at the learner's image size
(the app resizes its camera frames; the SavedModel resizes any size itself) and returns
`logits` and `probabilities` [n, way], `class_index` [n] and `class_name` [n] (strings):

  interpreter = tf.lite.Interpreter(model_path='my_objects.tflite')
  out = interpreter.get_signature_runner()(images=uint8_frames)

Quantisation ('int8'): post-training full-integer quantisation, weights and activations
int8, calibrated on up to REPRESENTATIVE_FRAMES of the support frames; uint8 images in, float
logits out, and float kernels where TFLite has no int8 one (the input's cast, the class-name
lookup).
"""

import os
import warnings

import numpy as np
import tensorflow as tf

from lite_tf import atomic

QUANTIZATIONS = ('none', 'int8')
REPRESENTATIVE_FRAMES = 100


def check_path(path):
  """ValueError naming --export_tflite unless `path` is a new .tflite file in an existing,
  writable folder (checked before any work; an existing file is never replaced, as
  --export_dir never replaces a folder)."""
  if not path.endswith('.tflite'):
    raise ValueError(f'--export_tflite={path!r} must end in .tflite')
  if os.path.exists(path):
    raise ValueError(f'--export_tflite={path!r} already exists; choose a new file')
  parent = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(parent):
    raise ValueError(f'--export_tflite={path!r}: no such folder {parent!r}')
  if not os.access(parent, os.W_OK | os.X_OK):
    raise ValueError(f'--export_tflite={path!r}: folder {parent!r} is not writable')


def _serving_function(classifier):
  """A tf.function over uint8 [None, S, S, 3] whose task state is constant tensors."""
  state = tf.nest.map_structure(tf.constant, classifier.servable_state())
  size = classifier.image_size

  @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
  def serve(images):
    logits = classifier.logits(tf.cast(images, tf.float32), state)
    index = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return {'logits': logits, 'probabilities': tf.nn.softmax(logits), 'class_index': index,
            'class_name': tf.gather(classifier.class_names, index)}
  return serve


def convert(classifier, quantize='none', representative_images=None):
  """The classifier as TFLite flatbuffer bytes.

  Args:
    classifier: a personalize.AdaptedClassifier.
    quantize: 'none' (float32) or 'int8' (see the module docstring).
    representative_images: uint8 [n, S, S, 3] support frames for int8 calibration.
  """
  if quantize not in QUANTIZATIONS:
    raise ValueError(f'--tflite_quantize={quantize!r} must be one of {", ".join(QUANTIZATIONS)}')
  serve = _serving_function(classifier)
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [serve.get_concrete_function()], classifier)
  if quantize == 'int8':
    if representative_images is None or not len(representative_images):
      raise ValueError('--tflite_quantize=int8 needs support frames to calibrate on')
    frames = _representative_frames(representative_images)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([frame[None]] for frame in frames)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                           tf.lite.OpsSet.TFLITE_BUILTINS]
  try:
    return converter.convert()
  except Exception as e:  # pylint: disable=broad-except
    # tf.lite's ConverterError is not public API; anything else is a bug and propagates.
    if type(e).__name__ != 'ConverterError':
      raise
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    ops = [line for line in lines if line.startswith(('TF Select ops:', 'Flex ops:'))]
    raise ValueError(f'--export_tflite: the adapted {classifier.learner_name} does not '
                     f'convert to TFLite builtin ops ({(ops or lines[-1:] or ["?"])[0]})') from e


def _representative_frames(images, seed=0):
  """At most REPRESENTATIVE_FRAMES of the support frames: a fixed random subset, in support
  order (so every class is likely drawn, where reading the first frames would take the
  first classes' only)."""
  images = np.asarray(images)
  if len(images) <= REPRESENTATIVE_FRAMES:
    return images
  order = np.random.RandomState(seed).permutation(len(images))[:REPRESENTATIVE_FRAMES]
  return images[np.sort(order)]


def export(classifier, path, quantize='none', representative_images=None):
  """Writes the flatbuffer to `path` atomically (check_path first); returns its size in
  bytes."""
  check_path(path)
  flatbuffer = convert(classifier, quantize, representative_images)
  atomic.check_free_space(os.path.dirname(os.path.abspath(path)), len(flatbuffer), path)
  with atomic.atomic_path(path, suffix='.tflite') as tmp, open(tmp, 'wb') as f:
    f.write(flatbuffer)
  return len(flatbuffer)


def interpreter(path_or_bytes, num_threads=1):
  """The `serving_default` signature runner of a flatbuffer (file path or bytes):
  runner(images=uint8 [n, S, S, 3]) -> dict of numpy outputs."""
  kwargs = ({'model_content': path_or_bytes} if isinstance(path_or_bytes, bytes)
            else {'model_path': path_or_bytes})
  with warnings.catch_warnings():
    # TF 2.21 warns that tf.lite.Interpreter moves to the ai_edge_litert package; it still
    # runs, and the flatbuffer is the same for both.
    warnings.filterwarnings('ignore', message='.*tf.lite.Interpreter is deprecated')
    return tf.lite.Interpreter(num_threads=num_threads, **kwargs).get_signature_runner()
