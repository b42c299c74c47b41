"""The one episode type every part of lite_tf passes around.

An episode (a few-shot task) is a support set that the learner adapts to and a query set it is
scored on. Images are float32 in [-1, 1], or uint8 pixels in [0, 255]: a uint8 episode takes a
quarter of the memory (0.15 GB instead of 0.6 GB for 1000 images of 224x224) and is converted to
[-1, 1] chunk by chunk, just before the backbone (`to_model_input`). Labels are episode-local,
in [0, way).
In a `tf.data` pipeline an episode travels as a dict with the keys of `Episode.to_dict()`.
"""

import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf

EPISODE_KEYS = ('support_images', 'support_labels', 'query_images', 'query_labels', 'way')
OPTIONAL_KEYS = ('support_class_ids', 'query_class_ids')


class EpisodeError(ValueError):
  """An episode whose tensors do not have the shapes, dtypes or labels lite_tf expects."""


@dataclasses.dataclass
class Episode:
  """One few-shot task.

  Attributes:
    support_images: [num_support, size, size, 3] float32 in [-1, 1] (or uint8 in [0, 255]).
    support_labels: [num_support] int32 in [0, way).
    query_images: [num_query, size, size, 3] float32 in [-1, 1] (or uint8 in [0, 255]).
    query_labels: [num_query] int32 in [0, way).
    way: number of classes in the episode (scalar int).
    support_class_ids: optional [num_support] int32 dataset-level class ids (Meta-Dataset's dtype).
    query_class_ids: optional [num_query] int32 dataset-level class ids.
  """
  support_images: tf.Tensor
  support_labels: tf.Tensor
  query_images: tf.Tensor
  query_labels: tf.Tensor
  way: tf.Tensor
  support_class_ids: Optional[tf.Tensor] = None
  query_class_ids: Optional[tf.Tensor] = None

  @property
  def support_set_size(self):
    return tf.shape(self.support_images)[0]

  def to_dict(self):
    d = {k: getattr(self, k) for k in EPISODE_KEYS}
    for k in OPTIONAL_KEYS:
      if getattr(self, k) is not None:
        d[k] = getattr(self, k)
    return d

  @classmethod
  def from_dict(cls, d):
    missing = [k for k in EPISODE_KEYS if k not in d]
    if missing:
      raise EpisodeError(f'episode dict lacks keys {missing}; expected keys {list(EPISODE_KEYS)}')
    return cls(**{k: d[k] for k in EPISODE_KEYS + OPTIONAL_KEYS if k in d})

  @classmethod
  def from_numpy(cls, support_images, support_labels, query_images, query_labels, way=None,
                 support_class_ids=None, query_class_ids=None):
    """Builds an episode from arrays; uint8 images stay uint8, others become float32.

    `way` defaults to max label + 1.
    """
    support_labels = np.asarray(support_labels, np.int32)
    if way is None:
      way = int(support_labels.max()) + 1 if support_labels.size else 0
    optional = {}
    if support_class_ids is not None:
      optional['support_class_ids'] = tf.constant(support_class_ids, tf.int32)
    if query_class_ids is not None:
      optional['query_class_ids'] = tf.constant(query_class_ids, tf.int32)
    return cls(
        support_images=_image_tensor(support_images),
        support_labels=tf.constant(support_labels, tf.int32),
        query_images=_image_tensor(query_images),
        query_labels=tf.constant(query_labels, tf.int32),
        way=tf.constant(way, tf.int32), **optional)


def _image_tensor(images):
  images = np.asarray(images)
  return tf.constant(images, tf.uint8 if images.dtype == np.uint8 else tf.float32)


def to_model_input(images):
  """Images as the backbone takes them: float32 in [-1, 1] (uint8 pixels are rescaled)."""
  if images.dtype == tf.uint8:
    return tf.cast(images, tf.float32) / 127.5 - 1.0
  return tf.cast(images, tf.float32)


def validate_episode(episode, image_size=None):
  """Checks an eager episode and raises EpisodeError naming what is wrong.

  Checks ranks, channel counts, the image size (if given), label ranges and that every query
  label occurs in the support set. Only works on concrete (eager) tensors; inside a traced
  function use `episode_assertions` instead.
  """
  for name in ('support_images', 'query_images'):
    images = getattr(episode, name)
    shape = tuple(images.shape)
    if len(shape) != 4 or shape[-1] != 3:
      raise EpisodeError(
          f'{name} must have shape [num, size, size, 3]; got shape {list(shape)}')
    if shape[1] != shape[2]:
      raise EpisodeError(f'{name} must be square images; got {shape[1]}x{shape[2]}')
    if image_size is not None and shape[1] != image_size:
      raise EpisodeError(
          f'{name} are {shape[1]}x{shape[2]} but the model expects {image_size}x{image_size}')
    if images.dtype not in (tf.float32, tf.uint8):
      raise EpisodeError(f'{name} must be float32 in [-1, 1] or uint8 in [0, 255]; got dtype '
                         f'{images.dtype.name}')
  if episode.support_images.shape[1:] != episode.query_images.shape[1:]:
    raise EpisodeError(
        f'support images {list(episode.support_images.shape[1:])} and query images '
        f'{list(episode.query_images.shape[1:])} differ in size')
  for name, images_name in (('support_labels', 'support_images'), ('query_labels', 'query_images')):
    labels = getattr(episode, name)
    if len(labels.shape) != 1 or labels.shape[0] != getattr(episode, images_name).shape[0]:
      raise EpisodeError(
          f'{name} must have shape [{getattr(episode, images_name).shape[0]}] to match '
          f'{images_name}; got {list(labels.shape)}')
  way = int(episode.way)
  support = np.asarray(episode.support_labels)
  query = np.asarray(episode.query_labels)
  if support.size == 0:
    raise EpisodeError('the support set is empty')
  if support.min() < 0 or support.max() >= way:
    raise EpisodeError(f'support labels must lie in [0, way={way}); got range '
                       f'[{support.min()}, {support.max()}]')
  absent = sorted(set(query.tolist()) - set(support.tolist()))
  if absent:
    raise EpisodeError(f'query labels {absent} do not occur in the support set '
                       f'(support labels: {sorted(set(support.tolist()))})')


def episode_assertions(episode):
  """Graph-mode checks: every query label occurs in the support set; labels lie in [0, way)."""
  way = tf.cast(episode.way, tf.int32)
  support_labels = tf.cast(episode.support_labels, tf.int32)
  query_labels = tf.cast(episode.query_labels, tf.int32)
  present = tf.math.bincount(support_labels, minlength=way, maxlength=way) > 0
  return [
      tf.debugging.assert_less(support_labels, way,
                               message='support labels must be smaller than way'),
      tf.debugging.assert_non_negative(support_labels, message='support labels must be >= 0'),
      tf.debugging.assert_equal(
          tf.reduce_all(tf.gather(present, tf.clip_by_value(query_labels, 0, way - 1))
                        & (query_labels < way) & (query_labels >= 0)), True,
          message='a query label does not occur in the support set'),
  ]


def shard_filter(start, num_shards, index):
  """keep(i) of an episode source's shard `index` of `num_shards`: the episodes start + index,
  start + index + num_shards, ... (tf.data's shard of the stream from `start`)."""
  if not 0 <= index < num_shards:
    raise ValueError(f'shard index {index} is not in [0, {num_shards})')
  return lambda i: i >= start and (i - start) % num_shards == index


_SOURCE_ERRORS = []


def _recording_errors(iterator):
  """Passes `iterator` through; an exception it raises is kept for `source_error` before
  tf.data wraps it (with its traceback) into an OpError."""
  try:
    yield from iterator
  except Exception as e:  # pylint: disable=broad-except
    _SOURCE_ERRORS.append(e)
    raise


def source_error():
  """The first exception raised inside an episode source's tf.data generator in this
  process, or None: the binaries report it as the error's first line, in place of the graph
  dump tf.data wraps it in."""
  return _SOURCE_ERRORS[0] if _SOURCE_ERRORS else None


def episodes_dataset(episodes, output_signature, start=0, shard=None, num_episodes=None,
                     prefetch=2):
  """The tf.data.Dataset of an episode source's `as_dataset`.

  Args:
    episodes: the source's `episodes(start, keep)`: an iterator of episode dicts with index
      >= start and keep(index).
    output_signature: dict of tf.TensorSpec of an episode dict.
    start: first episode index.
    shard: (num_shards, index): keep episodes start + index + k * num_shards only (the source
      skips the others without decoding them).
    num_episodes: take this many (None: endless).
    prefetch: episodes prefetched.
  """
  keep = None if shard is None else shard_filter(start, *shard)
  dataset = tf.data.Dataset.from_generator(lambda: _recording_errors(episodes(start, keep)),
                                           output_signature=output_signature)
  if num_episodes is not None:
    dataset = dataset.take(num_episodes)
  return dataset.prefetch(prefetch)


def building_episode(episode, max_classes=2):
  """A small task to build a learner's layers on (`learner(building_episode(e).to_dict())`):
  the first support image of each of the first `max_classes` classes of `episode` and one
  query image; a learner's weights do not depend on a task's size or way. Calling the learner
  on a whole large task instead runs its networks eagerly on all of it at once: bin/train.py
  did so on its first task, which at N = 1000 and 224x224 held more than 18 GB."""
  labels = np.asarray(episode.support_labels)
  classes = [c for c in range(min(int(episode.way), max_classes)) if np.any(labels == c)]
  if not classes:
    raise ValueError(f'the task has no support images of classes '
                     f'0..{min(int(episode.way), max_classes) - 1}')
  support = [int(np.flatnonzero(labels == c)[0]) for c in classes]
  query_labels = np.asarray(episode.query_labels)
  support_images = tf.gather(episode.support_images, support).numpy()
  query = np.flatnonzero(query_labels < len(classes))
  if query.size:
    query_images = tf.gather(episode.query_images, query[:1]).numpy()
    query_label = int(query_labels[query[0]])
  else:  # no query image of these classes (or none at all): the first support image
    query_images, query_label = support_images[:1], 0
  return Episode.from_numpy(support_images, np.arange(len(classes)), query_images,
                            [query_label], len(classes))
