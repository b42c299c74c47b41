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


VIDEO_EXTENSIONS = ('.mp4', '.mov', '.avi', '.mkv', '.webm', '.m4v')


def _subdirs(folder):
  return sorted(d for d in os.listdir(folder)
                if os.path.isdir(os.path.join(folder, d)) and not d.startswith('.'))


def frame_paths(video_folder):
  """A video given as a folder of frames -> its frame files in order (ORBIT's
  `...-00001.jpg` names and plain numbered names both sort by frame index)."""
  files = [f for f in os.listdir(video_folder) if _is_image(f)]
  if not files:
    raise ValueError(f'{video_folder}: a video folder with no frames ({", ".join(IMAGE_EXTENSIONS)})')
  return [os.path.join(video_folder, f) for f in sorted(files)]


def _class_files(folder, frames_every, max_frames_per_video):
  """The support files of one class folder: its images, or frames of its videos.

  A class folder holds images, or video folders of frames (directly or, as ORBIT lays them
  out, under clean/): from each video every `frames_every`-th frame from the first, at most
  `max_frames_per_video` (ORBIT's 'uniform' context sampling: 30 and 200).
  """
  images = sorted(f for f in os.listdir(folder) if _is_image(f))
  videos = [f for f in os.listdir(folder) if f.lower().endswith(VIDEO_EXTENSIONS)]
  if videos:
    raise ValueError(f'{os.path.join(folder, sorted(videos)[0])}: video files need a decoder, '
                     'which lite_tf does not bundle; extract the frames into a folder per '
                     'video first (e.g. ffmpeg -i video.mp4 video/%05d.jpg)')
  if images:
    return [os.path.join(folder, f) for f in images]
  root = os.path.join(folder, 'clean') if os.path.isdir(os.path.join(folder, 'clean')) else folder
  files = []
  for video in _subdirs(root):
    files += frame_paths(os.path.join(root, video))[::frames_every][:max_frames_per_video]
  if not files:
    raise ValueError(f'--support_dir: class folder {folder!r} has no images '
                     f'({", ".join(IMAGE_EXTENSIONS)}) and no video folders of frames')
  return files


def read_support_folder(folder, image_size, frames_every=30, max_frames_per_video=200):
  """folder/<class name>/ of images, or of video folders of frames (a user's object videos)
  -> (images [n, S, S, 3] uint8, labels [n], class names)."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f'--support_dir={folder!r} is not a directory')
  if frames_every < 1 or max_frames_per_video < 1:
    raise ValueError(f'--frames_every={frames_every} and --max_frames_per_video='
                     f'{max_frames_per_video} must be at least 1')
  class_names = _subdirs(folder)
  images, labels = [], []
  for label, name in enumerate(class_names):
    for path in _class_files(os.path.join(folder, name), frames_every, max_frames_per_video):
      images.append(read_image(path, image_size))
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


def stream_video(classifier, video_folder, class_names, batch_size=16):
  """Classifies a query video frame by frame, causally: yields, per frame in order, a dict
  with the frame's prediction (from that frame alone) and the running video prediction (the
  majority vote over the frames so far; ties go to the lowest class index, as ORBIT's video
  accuracy). Frames are read and served `batch_size` at a time; no frame's result depends on
  a later frame."""
  paths = frame_paths(video_folder)
  votes = np.zeros(len(class_names), np.int64)
  for start in range(0, len(paths), batch_size):
    batch = paths[start:start + batch_size]
    images = np.stack([read_image(p, classifier.image_size) for p in batch])
    out = classifier.serve(images)
    for offset, (path, probs, index) in enumerate(zip(batch, out['probabilities'].numpy(),
                                                      out['class_index'].numpy())):
      votes[index] += 1
      running = int(np.argmax(votes))
      yield {'frame': start + offset + 1, 'file': path, 'class': class_names[index],
             'probability': float(probs[index]), 'video_class': class_names[running],
             'video_votes': int(votes[running])}


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
    self.learner_name = type(learner).__name__

  def adapted_state(self):
    """The task state adapt_task gave (read from the classifier's variables)."""
    return tf.nest.pack_sequence_as(self._task_structure,
                                    [v.read_value() for v in self._task_variables])

  def logits(self, images, state=None):
    """Float images [n, S, S, 3] with values in [0, 255] -> logits [n, way], with the task
    state `state` (default: adapted_state(); lite_tf.export_tflite passes constants)."""
    state = self.adapted_state() if state is None else state
    return estimator.adapted_query_logits(self._learner, state, images / 127.5 - 1.0)

  def servable_state(self):
    """adapted_state() in the form TFLite's builtin ops compute (estimator.servable_state)."""
    return estimator.servable_state(self._learner, self.adapted_state())

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
  def serve(self, images):
    """uint8 images [n, h, w, 3] (any size; resized) -> probabilities, class index and name."""
    logits = self.logits(tf.image.resize(tf.cast(images, tf.float32),
                                         [self.image_size, self.image_size], antialias=True))
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
  if learner.context_clip_length:
    raise ValueError(f'clip_pooling.context_clip_length={learner.context_clip_length}: '
                     'personalize.py adapts to single support frames, not clips; add '
                     '--gin_bindings=clip_pooling.context_clip_length=None')
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
