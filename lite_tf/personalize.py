"""The teachable-recognizer use case: a folder of labelled support images -> a classifier
adapted in one forward pass, its predictions, and its export as a SavedModel.

The exported model carries the backbone, the task's adapted state (prototypes, FiLM
parameters, Mahalanobis factors, ...) and the class names; it serves uint8 images of any size
through the `serving_default` signature and needs only TensorFlow:

  model = tf.saved_model.load(export_dir)
  out = model.signatures['serving_default'](images=tf.constant(uint8_batch))
  out['probabilities'], out['class_index'], out['class_name']
"""

import os

import numpy as np
import tensorflow as tf

from lite_tf.episode import Episode
from lite_tf.learners import base as learner_base
from lite_tf.lite import estimator

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')


def _is_image(name):
  return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith('.')


def read_image(path, image_size):
  """An image file -> [S, S, 3] uint8, or ValueError naming the file."""
  try:
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
  except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
    raise ValueError(f'{path}: not a readable image ({e.message})') from e
  resized = tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size],
                            antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy()


def read_support_folder(folder, image_size):
  """folder/<class name>/*.jpg -> (images [n, S, S, 3] uint8, labels [n], class names)."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f'--support_dir={folder!r} is not a directory')
  class_names = sorted(d for d in os.listdir(folder)
                       if os.path.isdir(os.path.join(folder, d)) and not d.startswith('.'))
  images, labels = [], []
  for label, name in enumerate(class_names):
    files = sorted(f for f in os.listdir(os.path.join(folder, name)) if _is_image(f))
    if not files:
      raise ValueError(f'--support_dir: class folder {os.path.join(folder, name)!r} has no '
                       f'images ({", ".join(IMAGE_EXTENSIONS)})')
    for f in files:
      images.append(read_image(os.path.join(folder, name, f), image_size))
      labels.append(label)
  if len(class_names) < 2:
    raise ValueError(f'--support_dir={folder!r}: expected at least two class subfolders of '
                     f'images; found {class_names}')
  return np.stack(images), np.asarray(labels, np.int32), class_names


def read_query_files(paths_or_folder, image_size):
  """A folder of images (or a list of files) -> (images [q, S, S, 3] uint8, file paths)."""
  if isinstance(paths_or_folder, str):
    if not os.path.isdir(paths_or_folder):
      raise FileNotFoundError(f'--query={paths_or_folder!r} is not a directory')
    paths = [os.path.join(paths_or_folder, f) for f in sorted(os.listdir(paths_or_folder))
             if _is_image(f)]
  else:
    paths = list(paths_or_folder)
  if not paths:
    raise ValueError(f'--query={paths_or_folder!r}: no images found')
  return np.stack([read_image(p, image_size) for p in paths]), paths


class AdaptedClassifier(tf.Module):
  """A learner adapted to one task, servable without lite_tf (see the module docstring)."""

  def __init__(self, learner, task, class_names, image_size):
    super().__init__(name='adapted_classifier')
    self._learner_variables = [v.value for v in learner.weights]  # tracked for saving
    self._task_variables = [tf.Variable(t, trainable=False) for t in tf.nest.flatten(task)]
    self._task_structure = task
    self._learner = learner
    self.class_names = tf.Variable(class_names, trainable=False, dtype=tf.string)
    self.image_size = image_size

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
  def serve(self, images):
    """uint8 images [n, h, w, 3] (any size; resized) -> probabilities, class index and name."""
    x = tf.image.resize(tf.cast(images, tf.float32), [self.image_size, self.image_size],
                        antialias=True) / 127.5 - 1.0
    task = tf.nest.pack_sequence_as(self._task_structure,
                                    [v.read_value() for v in self._task_variables])
    logits = estimator.adapted_query_logits(self._learner, task, x)
    index = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return {'probabilities': tf.nn.softmax(logits), 'class_index': index,
            'class_name': tf.gather(self.class_names, index)}


def _support_episode(support_images, support_labels):
  """An Episode of the support set (its first image stands in as the unused query)."""
  way = int(np.max(support_labels)) + 1
  return Episode.from_numpy(support_images, support_labels, support_images[:1],
                            support_labels[:1], way)


def build(learner, support_images, support_labels):
  """Creates the learner's weights (before loading trained ones) on one image per class."""
  if not isinstance(learner, learner_base.Learner):
    raise ValueError(f'{type(learner).__name__} does not adapt in a forward pass; '
                     'personalization needs a LITE learner (protonets, cnaps, simple_cnaps)')
  _, first = np.unique(support_labels, return_index=True)
  episode = _support_episode(support_images[first], support_labels[first])
  learner.call(episode.to_dict())  # Keras' __call__ would cast the integer labels to float
  learner.built = True


def adapt(learner, support_images, support_labels, chunk_size=64):
  """The adapted task state in one gradient-free forward pass of the support set (chunked)."""
  return estimator.adapt_task(learner, _support_episode(support_images, support_labels),
                              chunk_size)


def export(classifier, export_dir):
  """Saves the SavedModel atomically: into a temporary sibling folder, then renamed."""
  if os.path.exists(export_dir):
    raise ValueError(f'--export_dir={export_dir!r} already exists; choose a new directory')
  parent = os.path.dirname(os.path.abspath(export_dir))
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f'.tmp-{os.path.basename(export_dir)}-{os.getpid()}')
  try:
    tf.saved_model.save(classifier, tmp, signatures={'serving_default': classifier.serve})
    os.replace(tmp, export_dir)
  finally:
    if os.path.exists(tmp):
      import shutil  # pylint: disable=g-import-not-at-top
      shutil.rmtree(tmp)
  return export_dir
