"""Episodes from Meta-Dataset records: sampled descriptions -> decoded support and query sets.

Each class is a stream of shuffled passes over its TFRecord file; an episode takes
num_support + num_query distinct records from each of its classes and decodes them in
parallel. Labels are positions in the episode's class list (0 .. ways-1); the dataset-level
class ids travel along as support_class_ids / query_class_ids.

A pass is a uniform random permutation of the class's records, read by position (the file's
record offsets are indexed once, in a CRC-checked pass): records in any order, even
Traffic Signs' tracks of 30 consecutive frames of one sign, give uniformly drawn episodes,
and a stream holds only the offsets. `shuffle_buffer=k` instead streams through a bounded
shuffle buffer as Meta-Dataset's reader does (which relies on its converter having shuffled
the records; 0: file order).
"""

import os

from absl import logging
import gin
import numpy as np
import tensorflow as tf
from tensorflow.python.lib.io import tf_record as tf_record_lib  # pylint: disable=g-direct-tensorflow-import
from tensorflow.python.util import deprecation  # pylint: disable=g-direct-tensorflow-import

from lite_tf import episode as episode_lib
from lite_tf.data import adapters
from lite_tf.data.meta_dataset import dataset_spec as spec_lib
from lite_tf.data.meta_dataset import records
from lite_tf.data.meta_dataset import sampling


def _read_records(path):
  """Serialized records of a TFRecord file, CRC-checked, without building a tf.data graph
  (opening a tf.data iterator per class and pass costs far more than reading small files)."""
  with deprecation.silence():  # its deprecation notice would be the first line users see
    iterator = tf.compat.v1.io.tf_record_iterator(path)
  yield from iterator


def _buffered_shuffle(items, buffer_size, rng):
  """Streaming shuffle with a bounded buffer, like tf.data.Dataset.shuffle."""
  if buffer_size <= 1:
    yield from items
    return
  buffer = []
  for item in items:
    if len(buffer) < buffer_size:
      buffer.append(item)
      continue
    i = rng.randint(len(buffer))
    yield buffer[i]
    buffer[i] = item
  rng.shuffle(buffer)
  yield from buffer


class _ClassStream:
  """Shuffled passes over one class's records, checked against the spec's image count."""

  def __init__(self, spec, class_id, shuffle_buffer, seed):
    self.path = records.class_file(spec, class_id)
    self.class_id = class_id
    self.name = spec.class_names.get(class_id, '?')
    self.expected = spec.num_images(class_id)
    self.shuffle_buffer = shuffle_buffer
    self.seed = seed
    self.passes = 0
    self._iterator = None
    self._left = 0
    self._offsets = None
    self._random = None

  def _corrupt(self, error):
    return records.RecordsError(f'{self.path}: corrupt or truncated records of class '
                                f'{self.class_id} ({self.name!r}): {error.message}')

  def _index(self):
    """On first use: the offsets of the file's records, in one CRC-checked pass (nothing
    decoded), and their count against the spec's."""
    if self._offsets is not None:
      return self._offsets
    offsets, offset = [], 0
    try:
      random_reader = tf_record_lib.tf_record_random_reader(self.path)
      while True:
        try:
          _, end = random_reader.read(offset)
        except IndexError:
          break
        offsets.append(offset)
        offset = end
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError,
            tf.errors.OutOfRangeError) as e:
      raise self._corrupt(e) from e
    if len(offsets) != self.expected:
      raise records.RecordsError(
          f'{self.path}: class {self.class_id} ({self.name!r}) has {len(offsets)} records but '
          f'the dataset spec says {self.expected}')
    self._offsets, self._random = offsets, random_reader
    return offsets

  def _read(self, index):
    try:
      return self._random.read(self._offsets[index])[0]
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError,
            tf.errors.OutOfRangeError) as e:
      raise self._corrupt(e) from e

  def at(self, positions):
    """The records at these positions of the file, as take() returns them."""
    offsets = self._index()
    bad = [p for p in positions if not 0 <= p < len(offsets)]
    if bad:
      raise records.RecordsError(f'{self.path}: class {self.class_id} ({self.name!r}) has '
                                 f'{len(offsets)} records; no position {bad[0]}')
    return [(self.path, self.class_id, self.name, p, self._read(p)) for p in positions]

  def _new_pass(self):
    self._index()
    self.passes += 1
    rng = np.random.RandomState((self.seed + 7919 * self.passes) % 2**32)
    if self.shuffle_buffer is None:  # a uniform permutation, read by position
      order = rng.permutation(self.expected)
      self._iterator = ((int(i), self._read(int(i))) for i in order)
    else:
      self._iterator = _buffered_shuffle(enumerate(_read_records(self.path)),
                                         self.shuffle_buffer, rng)
    self._left = self.expected

  def take(self, n):
    """n distinct records, as (path, class id, class name, index in the file, serialized
    record) (a fresh pass starts if this one has fewer left)."""
    if n > self.expected:
      raise records.RecordsError(
          f'{self.path}: class {self.class_id} ({self.name!r}) has {self.expected} images but '
          f'an episode asks for {n}')
    if self._iterator is None or self._left < n:
      self._new_pass()
    out = []
    try:
      for _ in range(n):
        index, record = next(self._iterator)
        out.append((self.path, self.class_id, self.name, index, record))
    except StopIteration:
      raise records.RecordsError(
          f'{self.path}: class {self.class_id} ({self.name!r}) ended after '
          f'{self.expected - self._left + len(out)} records; the dataset spec says '
          f'{self.expected}') from None
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
      raise self._corrupt(e) from e
    self._left -= n
    return out


# Records decoded per call when a task is not augmented (RecordsEpisodeSource._decode).
DECODE_BLOCK = 128


@gin.configurable
class RecordsEpisodeSource:
  """Meta-Dataset-style episodes from one split of a records folder.

  Args:
    records_dir: folder with dataset_spec.json and one TFRecord file per class.
    split: 'train', 'valid' or 'test'.
    image_size: side S of the square images.
    config: a sampling.EpisodeDescriptionConfig (Meta-Dataset's defaults if None).
    seed: seeds the description sampler and the per-class shuffles.
    shuffle_buffer: None (default): each pass over a class is a uniform permutation of its
      records, read by position; k: Meta-Dataset's bounded streaming shuffle buffer of k
      encoded records (0: file order).
    image_dtype: 'float32' (in [-1, 1]) or 'uint8' (pixels, 4x less memory).
    jitter_amount: support-set augmentation as in Meta-Dataset: pad by this many pixels
      (edge values) and crop back at a random offset (0: off).
    gaussian_noise_std: support-set augmentation: additive Gaussian noise (0: off).
  """

  def __init__(self, records_dir, split, image_size=84, config=None, seed=0,
               shuffle_buffer=None, image_dtype='float32', jitter_amount=0,
               gaussian_noise_std=0.0):
    if image_dtype not in ('float32', 'uint8'):
      raise ValueError(f"image_dtype must be 'float32' or 'uint8'; got {image_dtype!r}")
    self.spec = spec_lib.load(records_dir)
    self.records_dir = records_dir
    self.split = split
    self.image_size = image_size
    self.image_dtype = image_dtype
    self.config = config
    self.sampler = sampling.EpisodeDescriptionSampler(self.spec, split, config, seed=seed)
    self.seed = seed
    self.shuffle_buffer = shuffle_buffer
    self.jitter_amount = jitter_amount
    self.gaussian_noise_std = gaussian_noise_std
    self._streams = {}
    for class_id in self.spec.class_ids(split):
      records.class_file(self.spec, class_id)  # fail early, naming a missing class file

  def _stream(self, class_id, streams):
    if class_id not in streams:
      streams[class_id] = _ClassStream(self.spec, class_id, self.shuffle_buffer,
                                       self.seed * 1000003 + class_id)
    return streams[class_id]

  def _decode(self, taken, augment_seed=None):
    """Decodes taken records (see _ClassStream.take) into one array of image_dtype. Without
    augmentation they are decoded DECODE_BLOCK at a time into it, so that a large task's
    float32 intermediates are never all held at once (1000 images at 224x224 are 600 MB of
    float32, and the decode's own copies as much again, beside the 150 MB of uint8 kept)."""
    augment = augment_seed is not None and (self.jitter_amount or self.gaussian_noise_std)
    if augment or len(taken) <= DECODE_BLOCK:
      return self._decode_block(taken, augment_seed if augment else None)
    s = self.image_size
    out = np.empty((len(taken), s, s, 3), np.uint8 if self.image_dtype == 'uint8' else np.float32)
    for start in range(0, len(taken), DECODE_BLOCK):
      out[start:start + DECODE_BLOCK] = self._decode_block(taken[start:start + DECODE_BLOCK])
    return out

  def _decode_block(self, taken, augment_seed=None):
    """Decodes taken records, augmented if augment_seed is given; a record whose image does
    not decode is named: file, class and index."""
    try:
      images = _decode_batch(tf.constant([t[-1] for t in taken], tf.string), self.image_size)
    except tf.errors.InvalidArgumentError:
      for path, class_id, name, index, record in taken:
        try:
          records.decode_example(tf.constant(record), self.image_size)
        except tf.errors.InvalidArgumentError as e:
          raise records.RecordsError(
              f'{path}: record {index} of class {class_id} ({name!r}) does not decode: '
              f'{e.message.splitlines()[0]}') from None
      raise
    if augment_seed is not None:
      images = augment_images(images, self.jitter_amount, self.gaussian_noise_std,
                              tf.random.Generator.from_seed(augment_seed))
    if self.image_dtype == 'uint8':
      images = tf.cast(tf.round((images + 1.0) * 127.5), tf.uint8)
    return images.numpy()

  def _take(self, description, streams):
    return [self._stream(class_id, streams).take(num_support + num_query)
            for class_id, num_support, num_query in description]

  def episode_from_description(self, description, index=0, streams=None):
    """Episode dict (see lite_tf.episode) for a tuple of (class_id, num_support, num_query);
    `index` seeds the support augmentation. Records come from `streams` (class id ->
    per-class record stream; the source's own by default)."""
    taken_by_class = self._take(description, self._streams if streams is None else streams)
    return self.episode_from_records(description, taken_by_class, index)

  def records_at(self, class_id, positions):
    """Records of a class at these file positions (saved episodes)."""
    return self._stream(class_id, self._streams).at(positions)

  def descriptions_and_records(self):
    """(description, records taken per class) of the episodes in order, from a fresh sampler
    and fresh class streams, nothing decoded: what episodes() would decode."""
    sampler = sampling.EpisodeDescriptionSampler(self.spec, self.split, self.config,
                                                 seed=self.seed)
    streams = {}
    while True:
      description = sampler.sample()
      yield description, self._take(description, streams)

  def episode_from_records(self, description, taken_by_class, index=0):
    """The episode dict of a description and the records taken for each of its classes."""
    support, query, support_ids, query_ids, support_labels, query_labels = [], [], [], [], [], []
    for label, ((class_id, num_support, num_query), taken) in enumerate(
        zip(description, taken_by_class)):
      support += taken[:num_support]
      query += taken[num_support:]
      support_ids += [class_id] * num_support
      query_ids += [class_id] * num_query
      support_labels += [label] * num_support
      query_labels += [label] * num_query
    return {
        'support_images': self._decode(support, augment_seed=self.seed * 1000003 + index),
        'support_labels': np.asarray(support_labels, np.int32),
        'query_images': self._decode(query),
        'query_labels': np.asarray(query_labels, np.int32),
        'way': np.int32(len(description)),
        'support_class_ids': np.asarray(support_ids, np.int32),
        'query_class_ids': np.asarray(query_ids, np.int32),
    }

  def episodes(self, start=0, keep=None):
    """Endless iterator of the episode dicts with index >= start (and keep(index), if given).

    Every call replays the same sequence from a fresh sampler and fresh class streams, so it
    is a function of the seed alone: validation sees the same episodes every epoch, replicas
    see one stream, and a resumed run the episodes an uninterrupted one would. Episodes that
    are not yielded are sampled and their records taken from the class streams, undecoded.
    """
    for index, (description, taken) in enumerate(self.descriptions_and_records()):
      if index >= start and (keep is None or keep(index)):
        yield self.episode_from_records(description, taken, index)

  def output_signature(self):
    dtype = tf.uint8 if self.image_dtype == 'uint8' else tf.float32
    s = self.image_size
    return {
        'support_images': tf.TensorSpec([None, s, s, 3], dtype),
        'support_labels': tf.TensorSpec([None], tf.int32),
        'query_images': tf.TensorSpec([None, s, s, 3], dtype),
        'query_labels': tf.TensorSpec([None], tf.int32),
        'way': tf.TensorSpec([], tf.int32),
        'support_class_ids': tf.TensorSpec([None], tf.int32),
        'query_class_ids': tf.TensorSpec([None], tf.int32),
    }

  def as_dataset(self, num_episodes=None, prefetch=2, start=0, shard=None):
    """tf.data.Dataset of episode dicts (variable shapes) from episode `start`, prefetching
    `prefetch` episodes; shard=(num_shards, index) keeps episodes start + index + k *
    num_shards and decodes only those."""
    return episode_lib.episodes_dataset(self.episodes, self.output_signature(), start=start,
                                        shard=shard, num_episodes=num_episodes,
                                        prefetch=prefetch)


def augment_images(images, jitter_amount, gaussian_noise_std, rng):
  """Meta-Dataset's support augmentation on [n, S, S, 3] images in [-1, 1]."""
  if jitter_amount:
    size = images.shape[1]
    padded = tf.pad(images, [[0, 0], [jitter_amount] * 2, [jitter_amount] * 2, [0, 0]],
                    mode='SYMMETRIC')
    offsets = rng.uniform([tf.shape(images)[0], 2], 0, 2 * jitter_amount + 1, dtype=tf.int32)
    images = tf.map_fn(
        lambda a: tf.slice(a[0], [a[1][0], a[1][1], 0], [size, size, 3]), (padded, offsets),
        fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
  if gaussian_noise_std:
    images = images + gaussian_noise_std * rng.normal(tf.shape(images))
  return images


@tf.function(reduce_retracing=True)
def _decode_batch(serialized, image_size):
  """[n] serialized examples -> [n, S, S, 3] float32 in [-1, 1], decoded in parallel."""
  return tf.map_fn(lambda r: records.decode_example(r, image_size)[0], serialized,
                   fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
                   parallel_iterations=16)


def _split_seed(seed, split):
  """Valid and test splits get their own seeds (seed + 1, seed + 2)."""
  return seed + spec_lib.SPLITS.index(spec_lib.split_name(split))


@gin.configurable
def records_episodes(split, records_dir=gin.REQUIRED, image_size=84, config=None, seed=0,
                     **kwargs):
  """gin episode source (`run_training.episode_source = @records_episodes`): one split of a
  records folder; valid and test splits get their own seeds."""
  return RecordsEpisodeSource(os.fspath(records_dir), split, image_size=image_size,
                              config=config, seed=_split_seed(seed, split), **kwargs)


@gin.configurable
def multi_source_records_episodes(split, records_dirs=gin.REQUIRED, image_size=84, config=None,
                                  seed=0, **kwargs):
  """gin episode source for Meta-Dataset's multi-source training
  (`run_training.episode_source = @multi_source_records_episodes`): each episode from one of
  `records_dirs` (one records folder per dataset), uniformly; every dataset's `split`."""
  if isinstance(records_dirs, (str, os.PathLike)) or not records_dirs:
    raise ValueError('multi_source_records_episodes.records_dirs must be a non-empty list of '
                     f'records folders; got {records_dirs!r}')
  split_seed = _split_seed(seed, split)
  sources, empty = [], []
  for i, d in enumerate(records_dirs):
    if not len(spec_lib.load(os.fspath(d)).class_ids(split)):  # pylint: disable=g-explicit-length-test
      empty.append(os.fspath(d))  # e.g. ilsvrc_2012_v2: every class in TRAIN
      continue
    sources.append(RecordsEpisodeSource(os.fspath(d), split, image_size=image_size,
                                        config=config, seed=split_seed * 1000 + i, **kwargs))
  if not sources:
    raise ValueError(f'multi_source_records_episodes.records_dirs: none of {records_dirs} has '
                     f'{spec_lib.split_name(split)} classes')
  if empty:
    logging.info('%s episodes: left out %s (no %s classes)', split, ', '.join(empty),
                 spec_lib.split_name(split))
  return adapters.MultiSourceEpisodes(sources, seed=split_seed)
