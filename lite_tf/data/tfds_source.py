"""Episodes from a TFDS image-classification dataset already prepared in a local data_dir.

VTAB+MD style (Requeima et al., Bronskill et al.): the support set is the first 1000 training
examples (all classes: way = the dataset's number of classes), and query examples come from
the test split, `query_size` at a time, so a test task is evaluated in chunks. Nothing is
downloaded: `tfds.load(..., download=False)` fails with a clear error if the dataset is not
prepared in `data_dir`.
"""

import gin
import numpy as np
import tensorflow as tf


def _resize(image, image_size):
  image = tf.cast(image, tf.float32)
  if image.shape[-1] == 1:
    image = tf.image.grayscale_to_rgb(image)
  image = tf.image.resize(image, [image_size, image_size], method='bilinear')
  return image / 127.5 - 1.0


@gin.configurable
class TfdsEpisodeSource:
  """Args:
    name: TFDS dataset name, e.g. 'oxford_flowers102' or 'cifar10'.
    data_dir: folder with the prepared dataset (no download).
    support_split: TFDS split string for the support set.
    query_split: TFDS split string for the query examples.
    image_size: side S of the square images.
    query_size: query examples per episode (the test split is walked in order, in chunks).
    image_key, label_key: feature names.
  """

  def __init__(self, name, data_dir=None, support_split='train[:1000]', query_split='test',
               image_size=84, query_size=100, image_key='image', label_key='label'):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    self.name, self.image_size, self.query_size = name, image_size, query_size
    try:
      builder = tfds.builder(name, data_dir=data_dir)
      self.num_classes = builder.info.features[label_key].num_classes
      support = tfds.load(name, split=support_split, data_dir=data_dir, download=False)
      self._query = tfds.load(name, split=query_split, data_dir=data_dir, download=False)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f'TFDS dataset {name!r} (splits {support_split!r}, {query_split!r}) is '
                       f'not prepared in data_dir={data_dir!r}; nothing is downloaded: {e}') from e
    self.image_key, self.label_key = image_key, label_key
    images, labels = [], []
    for example in support.map(self._decode, num_parallel_calls=tf.data.AUTOTUNE):
      images.append(example[0])
      labels.append(example[1])
    self.support_images = tf.stack(images)
    self.support_labels = tf.cast(tf.stack(labels), tf.int32)
    missing = sorted(set(range(self.num_classes)) - set(self.support_labels.numpy().tolist()))
    self.way = self.num_classes
    self.missing_support_classes = missing

  def _decode(self, example):
    return _resize(example[self.image_key], self.image_size), example[self.label_key]

  def episodes(self):
    """Episodes sharing the support set, with consecutive chunks of the query split (once)."""
    batches = self._query.map(self._decode, num_parallel_calls=tf.data.AUTOTUNE).batch(
        self.query_size)
    present = np.isin(np.arange(self.num_classes), self.support_labels.numpy())
    for images, labels in batches:
      keep = present[labels.numpy()]  # query classes absent from the support set are dropped
      yield {
          'support_images': self.support_images,
          'support_labels': self.support_labels,
          'query_images': tf.boolean_mask(images, keep),
          'query_labels': tf.cast(tf.boolean_mask(labels, keep), tf.int32),
          'way': tf.constant(self.way, tf.int32),
      }
