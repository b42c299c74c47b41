"""Reading Meta-Dataset records: one TFRecord file per class of `tf.train.Example`s with an
encoded image (`image`, JPEG or PNG bytes) and its class id (`label`, int64)."""

import os

import gin
import tensorflow as tf

FEATURES = {
    'image': tf.io.FixedLenFeature([], tf.string),
    'label': tf.io.FixedLenFeature([], tf.int64),
}


class RecordsError(ValueError):
  """A missing, truncated or corrupt class file."""


RESIZE_METHODS = ('align_corners', 'half_pixel')


def resize_bilinear(image, image_size, method='align_corners'):
  """Bilinear resize of one [h, w, c] image to [image_size, image_size, c] float32.

  'align_corners' is Meta-Dataset's (`tf.compat.v1.image.resize_images(..., align_corners=True)`
  in its decoder): corner pixels map onto corner pixels, sample i of the output reads input
  coordinate i * (in - 1) / (out - 1). 'half_pixel' is TF2's `tf.image.resize`: pixel centres
  at half-integers, coordinate (i + 0.5) * in / out - 0.5. The two agree when the stored size
  equals the requested one and differ otherwise.
  """
  if method == 'align_corners':
    return tf.raw_ops.ResizeBilinear(
        images=tf.cast(image, tf.float32)[tf.newaxis], size=[image_size, image_size],
        align_corners=True, half_pixel_centers=False)[0]
  if method == 'half_pixel':
    return tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size],
                           method='bilinear', antialias=False)
  raise ValueError(f'decode_example.resize_method must be one of {list(RESIZE_METHODS)}; got '
                   f'{method!r}')


@gin.configurable
def decode_example(serialized, image_size, resize_method='align_corners'):
  """Parses one record -> (image [image_size, image_size, 3] float32 in [-1, 1], label int64).

  As in Meta-Dataset's ImageDecoder: decoded to 3 channels (grey images repeated), resized
  bilinearly with aligned corners (`resize_method`, see resize_bilinear), rescaled as
  2 * (x / 255 - 0.5).
  """
  example = tf.io.parse_single_example(serialized, FEATURES)
  image = tf.io.decode_image(example['image'], channels=3, expand_animations=False)
  image = resize_bilinear(image, image_size, resize_method)
  image = tf.ensure_shape(image, [image_size, image_size, 3])
  return 2.0 * (image / 255.0 - 0.5), example['label']


def class_file(spec, class_id):
  path = spec.class_file(class_id)
  if not os.path.exists(path):
    raise RecordsError(f'{path}: missing records file of class {class_id} '
                       f'({spec.class_names.get(class_id, "?")!r}) in dataset {spec.name!r}')
  return path


def class_dataset(spec, class_id, image_size, shuffle_buffer=0, seed=None,
                  num_parallel_calls=tf.data.AUTOTUNE):
  """tf.data.Dataset of (image, label) pairs of one class, optionally shuffled."""
  dataset = tf.data.TFRecordDataset(class_file(spec, class_id))
  if shuffle_buffer:
    dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  return dataset.map(lambda r: decode_example(r, image_size),
                     num_parallel_calls=num_parallel_calls, deterministic=True)


def read_class(spec, class_id, image_size):
  """All images of a class, [num, image_size, image_size, 3] float32, and their labels.

  Raises RecordsError naming the file and class for a truncated or corrupt file, or one whose
  record count differs from the spec's images_per_class.
  """
  path = class_file(spec, class_id)
  images, labels = [], []
  try:
    for image, label in class_dataset(spec, class_id, image_size):
      images.append(image)
      labels.append(label)
  except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
    raise RecordsError(f'{path}: corrupt or truncated records of class {class_id} '
                       f'({spec.class_names.get(class_id, "?")!r}): {e.message}') from e
  expected = spec.num_images(class_id)
  if len(images) != expected:
    raise RecordsError(f'{path}: class {class_id} has {len(images)} records but the dataset '
                       f'spec says {expected}')
  return tf.stack(images), tf.stack(labels)
