"""The 18 VTAB-v2 tasks of VTAB+MD (Dumoulin et al. 2021), as the LITE paper evaluates them.

Each task is a TFDS dataset already prepared in a local `data_dir` (nothing is downloaded),
a support set of 1000 training examples (VTAB's `train800val200`: the first 800 of its train
split and the first 200 of its validation split, both as VTAB carves them out of the TFDS
splits) and a query set that is the task's whole test split, walked once in chunks. The label
of an example is the task's label function of the raw TFDS features (for example CLEVR count:
number of objects - 3, over 8 classes). Split arithmetic, TFDS names, versions and label
functions follow google-research/task_adaptation (`task_adaptation/data/*.py`).

    from lite_tf.data import vtab
    source = vtab.VtabTaskSource('clevr_count', data_dir='/data/tfds', image_size=224)
    for chunk in source.episodes(): ...   # the same support set, consecutive query chunks
"""

import dataclasses
from typing import Callable, Optional

from absl import logging
import gin
import numpy as np
import tensorflow as tf

GROUPS = ('natural', 'specialized', 'structured')
SUPPORT_SIZE = 1000


class VtabDataError(ValueError):
  """A VTAB task's data are missing, not prepared or hold a label outside the task's classes."""


class VtabDataMissing(VtabDataError):
  """The task's TFDS dataset is not prepared in the data_dir."""


def _label(example):
  return example['label']


def _clevr_count(example):
  # CLEVR scenes hold 3..10 objects -> classes 0..7.
  return tf.cast(tf.size(example['objects']['size']), tf.int64) - 3


def _bin_index(value, thresholds):
  """Largest i with thresholds[i] < value (VTAB's `reduce_max(where(thrs - x < 0))`); -1 when
  none is (a value below the first threshold, which VTAB's bins rule out)."""
  below = tf.cast(tf.constant(thresholds, tf.float32) < tf.cast(value, tf.float32), tf.int64)
  return tf.reduce_sum(below) - 1  # thresholds increase, so the count of those below - 1


def _clevr_distance(example):
  # Depth of the closest object, binned at 8, 8.5, 9, 9.5, 10 -> 6 classes.
  depth = tf.reduce_min(example['objects']['pixel_coords'][:, 2])
  return _bin_index(depth, [0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0])


def _dsprites_binned(feature, original_classes, classes=16):
  factor = float(original_classes) / classes

  def label(example):
    return tf.cast(tf.math.floordiv(tf.cast(example[feature], tf.float32), factor), tf.int64)
  return label


def _feature(name):
  def label(example):
    return example[name]
  return label


def _kitti_distance(example):
  # Distance (z, metres) of the closest vehicle (Car, Van, Truck: types 0, 1, 2), 1000 when
  # there is none; bins at 8 m, 20 m, 999 m -> near, middle, far, no vehicle (4 classes).
  objects = example['objects']
  vehicles = tf.boolean_mask(objects['location'][:, 2], objects['type'] < 3)
  depth = tf.reduce_min(tf.concat([vehicles, tf.constant([1000.0])], axis=0))
  return _bin_index(depth, [-100.0, 8.0, 20.0, 999.0])


@dataclasses.dataclass(frozen=True)
class VtabTask:
  """One VTAB-v2 task.

  name: lite_tf's task name. group: 'natural', 'specialized' or 'structured'.
  tfds_name: TFDS name with config. version: the version VTAB pins (a TFDS pattern).
  num_classes: classes of the task (its way). label_fn: raw example -> int64 label.
  label_doc: the label function in words (docs table). image_key: the image feature.
  valid_from_train: VTAB's (train %, validation %) carved out of the TFDS train split, or
    None when the TFDS dataset has its own validation split (`valid_split`).
  test_split: VTAB's test split ('test', CLEVR's 'validation', or the rest of train).
  train_examples: the TFDS train split's size (used for the split arithmetic only when the
    builder's metadata lack it, e.g. under tfds.testing.mock_data).
  """
  name: str
  group: str
  tfds_name: str
  version: str
  num_classes: int
  label_doc: str
  label_fn: Callable = _label
  image_key: str = 'image'
  valid_from_train: Optional[tuple] = None
  valid_split: str = 'validation'
  test_split: str = 'test'
  train_examples: Optional[int] = None

  @property
  def tfds_spec(self):
    return f'{self.tfds_name}:{self.version}'

  def splits(self, train_count=None):
    """(support split, query split) as TFDS split strings, VTAB's train800val200 and test."""
    if self.valid_from_train is None:
      return f'train[:800]+{self.valid_split}[:200]', self.test_split
    n = train_count or self.train_examples
    train_pct, valid_pct = self.valid_from_train
    train = train_pct * n // 100
    support = f'train[:800]+train[{train}:{train + 200}]'
    if self.test_split == 'rest_of_train':
      return support, f'train[{train + valid_pct * n // 100}:]'
    return support, self.test_split


TASKS = (
    VtabTask('caltech101', 'natural', 'caltech101', '3.*.*', 102, 'TFDS label',
             valid_from_train=(90, 10), train_examples=3060),
    VtabTask('cifar100', 'natural', 'cifar100', '3.*.*', 100, 'TFDS label (fine)',
             valid_from_train=(90, 10), train_examples=50000),
    VtabTask('oxford_flowers102', 'natural', 'oxford_flowers102', '2.*.*', 102, 'TFDS label'),
    VtabTask('oxford_iiit_pet', 'natural', 'oxford_iiit_pet', '3.*.*', 37, 'TFDS label',
             valid_from_train=(80, 20), train_examples=3680),
    VtabTask('sun397', 'natural', 'sun397/tfds', '4.*.*', 397, 'TFDS label'),
    VtabTask('svhn', 'natural', 'svhn_cropped', '3.*.*', 10, 'TFDS label',
             valid_from_train=(90, 10), train_examples=73257),
    VtabTask('eurosat', 'specialized', 'eurosat/rgb', '2.*.*', 10, 'TFDS label',
             valid_from_train=(60, 20), test_split='rest_of_train', train_examples=27000),
    VtabTask('resisc45', 'specialized', 'resisc45', '3.*.*', 45, 'TFDS label',
             valid_from_train=(60, 20), test_split='rest_of_train', train_examples=31500),
    VtabTask('patch_camelyon', 'specialized', 'patch_camelyon', '2.*.*', 2, 'TFDS label'),
    VtabTask('diabetic_retinopathy', 'specialized', 'diabetic_retinopathy_detection/btgraham-300',
             '3.*.*', 5, 'TFDS label (grade 0-4)'),
    VtabTask('clevr_count', 'structured', 'clevr', '3.*.*', 8, 'number of objects - 3',
             label_fn=_clevr_count, valid_from_train=(90, 10), test_split='validation',
             train_examples=70000),
    VtabTask('clevr_distance', 'structured', 'clevr', '3.*.*', 6,
             'depth of the closest object, bins at 8, 8.5, 9, 9.5, 10',
             label_fn=_clevr_distance, valid_from_train=(90, 10), test_split='validation',
             train_examples=70000),
    VtabTask('dsprites_location', 'structured', 'dsprites', '2.*.*', 16,
             'floor(label_x_position / 2) (32 positions -> 16)',
             label_fn=_dsprites_binned('label_x_position', 32), valid_from_train=(80, 10),
             test_split='rest_of_train', train_examples=737280),
    VtabTask('dsprites_orientation', 'structured', 'dsprites', '2.*.*', 16,
             'floor(label_orientation / 2.5) (40 orientations -> 16)',
             label_fn=_dsprites_binned('label_orientation', 40), valid_from_train=(80, 10),
             test_split='rest_of_train', train_examples=737280),
    VtabTask('smallnorb_azimuth', 'structured', 'smallnorb', '2.*.*', 18, 'label_azimuth',
             label_fn=_feature('label_azimuth'), valid_split='test', test_split='test[50%:]'),
    VtabTask('smallnorb_elevation', 'structured', 'smallnorb', '2.*.*', 9, 'label_elevation',
             label_fn=_feature('label_elevation'), valid_split='test', test_split='test[50%:]'),
    VtabTask('dmlab', 'structured', 'dmlab', '2.0.1', 6, 'TFDS label (distance class)'),
    VtabTask('kitti_distance', 'structured', 'kitti', '3.1.0', 4,
             'depth of the closest vehicle, bins at 8 m, 20 m, 999 m (4th: no vehicle)',
             label_fn=_kitti_distance),
)
TASKS_BY_NAME = {t.name: t for t in TASKS}


def get_task(name):
  if name not in TASKS_BY_NAME:
    raise ValueError(f'unknown VTAB task {name!r}; the VTAB-v2 tasks are '
                     f'{", ".join(TASKS_BY_NAME)}')
  return TASKS_BY_NAME[name]


def prepare_command(task, data_dir, version=None):
  """The TFDS command that prepares the task's dataset (at the version this TFDS resolves)."""
  return (f'tfds build {task.tfds_name}:{version or task.version} '
          f'--data_dir={data_dir or "~/tensorflow_datasets"}')


def _builder(task, data_dir):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    return tfds.builder(task.tfds_spec, data_dir=data_dir)
  except AssertionError as e:  # this TFDS release no longer builds VTAB's version
    logging.warning('%s: TFDS %s cannot load version %s (%s); using its default version',
                    task.name, tfds.__version__, task.version, str(e).splitlines()[-1])
    return tfds.builder(task.tfds_name, data_dir=data_dir)


def _image_to_uint8(image, image_size, scale):
  """A decoded TFDS image -> [S, S, 3] uint8 (grey images tiled to RGB; dSprites' {0, 1}
  pixels scaled to {0, 255} as VTAB does), resized with anti-aliasing."""
  image = tf.cast(image, tf.float32) * scale
  image = tf.cond(tf.shape(image)[-1] == 1, lambda: tf.tile(image, [1, 1, 3]),
                  lambda: image[..., :3])
  image.set_shape([None, None, 3])
  image = tf.image.resize(image, [image_size, image_size], method='bilinear', antialias=True)
  return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


@gin.configurable
class VtabTaskSource:
  """One VTAB-v2 task as test episodes: the 1000-example support set and its test split in
  consecutive query chunks (each test example exactly once).

  Args:
    task: a VTAB-v2 task name (lite_tf.data.vtab.TASKS_BY_NAME).
    data_dir: TFDS data_dir holding the prepared dataset.
    image_size: side S of the square images (uint8 in memory, [-1, 1] at the network).
    query_size: query examples per chunk.
    support: 'train800val200' (VTAB's definition, the default) or 'first1000' (the LITE
      reference code's `train[:1000]`).
    max_query: evaluate only the first max_query test examples (None: all).
  """

  def __init__(self, task, data_dir=None, image_size=224, query_size=100,
               support='train800val200', max_query=None):
    self.task = get_task(task) if isinstance(task, str) else task
    if support not in ('train800val200', 'first1000'):
      raise ValueError(f"VtabTaskSource.support must be 'train800val200' or 'first1000'; got "
                       f'{support!r}')
    if query_size < 1:
      raise ValueError(f'VtabTaskSource.query_size must be at least 1; got {query_size}')
    self.image_size, self.query_size, self.max_query = image_size, query_size, max_query
    self.data_dir = data_dir
    builder = _builder(self.task, data_dir)
    self.tfds_version = str(builder.version)
    split_info = builder.info.splits.get('train') if builder.info.splits else None
    train_count = split_info.num_examples if split_info is not None else None
    support_split, query_split = self.task.splits(train_count)
    if support == 'first1000':
      support_split = f'train[:{SUPPORT_SIZE}]'
    self.support_split, self.query_split = support_split, query_split
    try:
      support_ds = builder.as_dataset(split=support_split, shuffle_files=False)
      self._query_ds = builder.as_dataset(split=query_split, shuffle_files=False)
    except Exception as e:  # pylint: disable=broad-except
      raise VtabDataMissing(
          f'VTAB task {self.task.name!r}: TFDS dataset {self.task.tfds_name} (version '
          f'{self.task.version}) is not prepared in data_dir={data_dir!r} (nothing is '
          f'downloaded); prepare it with '
          f'`{prepare_command(self.task, data_dir, self.tfds_version)}`. '
          f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""})') from e
    images, labels = [], []
    for image, label in self._decoded(support_ds.take(SUPPORT_SIZE)):
      images.append(image)
      labels.append(label)
    labels = np.concatenate(labels) if labels else np.zeros([0], np.int64)
    if labels.size != SUPPORT_SIZE:
      raise VtabDataError(f'VTAB task {self.task.name!r}: support split {support_split!r} of '
                          f'{self.task.tfds_name} in data_dir={data_dir!r} holds {labels.size} '
                          f'examples; expected {SUPPORT_SIZE}')
    self._check_labels(labels, 'support', 0)
    self.support_images = tf.concat(images, axis=0)
    # The episode's classes are those present in the support set (a class with no support
    # example has no prototype); test examples of absent classes count as errors.
    self.present_classes = np.unique(labels)
    self.way = int(self.present_classes.size)
    self._to_episode = np.full([self.task.num_classes], -1, np.int64)
    self._to_episode[self.present_classes] = np.arange(self.way)
    self.support_labels = tf.constant(self._to_episode[labels], tf.int32)

  def _decoded(self, dataset, batch=64):
    scale = 255.0 if self.task.tfds_name.startswith('dsprites') else 1.0
    task = self.task

    def decode(example):
      return (_image_to_uint8(example[task.image_key], self.image_size, scale),
              task.label_fn(example))
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(batch)
    for images, labels in dataset.prefetch(2):
      yield images, labels.numpy()

  def _check_labels(self, labels, where, offset):
    bad = np.flatnonzero((labels < 0) | (labels >= self.task.num_classes))
    if bad.size:
      raise VtabDataError(
          f'VTAB task {self.task.name!r}: {where} example {offset + bad[0]} of '
          f'{self.task.tfds_name} in data_dir={self.data_dir!r} has label {labels[bad[0]]} '
          f'from {self.task.label_doc!r}; expected 0..{self.task.num_classes - 1}')

  def query_batches(self):
    """(uint8 images [q, S, S, 3], task labels [q]) in test-split order, each once."""
    dataset = self._query_ds
    if self.max_query is not None:
      dataset = dataset.take(self.max_query)
    offset = 0
    for images, labels in self._decoded(dataset, self.query_size):
      self._check_labels(labels, 'query', offset)
      offset += labels.size
      yield images, labels

  def episodes(self):
    """Episode dicts sharing the support set, one per query chunk; query examples of classes
    absent from the support set are left out of the chunk (query_dropped counts them)."""
    for images, labels in self.query_batches():
      mapped = self._to_episode[labels]
      keep = mapped >= 0
      yield {
          'support_images': self.support_images,
          'support_labels': self.support_labels,
          'query_images': tf.boolean_mask(images, keep),
          'query_labels': tf.constant(mapped[keep], tf.int32),
          'way': tf.constant(self.way, tf.int32),
          'query_dropped': int((~keep).sum()),
      }

