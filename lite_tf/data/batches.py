"""Labelled batches over a split's classes, for supervised pre-training of a backbone."""

import gin
import tensorflow as tf

from lite_tf.data.meta_dataset import dataset_spec as spec_lib
from lite_tf.data.meta_dataset import records


@gin.configurable
def labelled_batches(records_dir, split='train', image_size=84, batch_size=64,
                     shuffle_buffer=10000, seed=0, repeat=True, cycle_length=16):
  """tf.data of (images [b, S, S, 3] float32 in [-1, 1], labels [b] in [0, classes in split)).

  Class files are interleaved (`cycle_length` open at once, read in parallel) and examples
  shuffled with a bounded buffer of encoded records before decoding.

  Returns:
    (dataset, num_classes).
  """
  spec = spec_lib.load(records_dir)
  class_ids = spec.class_ids(split)
  files = [records.class_file(spec, c) for c in class_ids]
  files_ds = tf.data.Dataset.from_tensor_slices(files)
  if shuffle_buffer:
    files_ds = files_ds.shuffle(len(files), seed=seed)
  dataset = files_ds.interleave(tf.data.TFRecordDataset, cycle_length=cycle_length,
                                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if shuffle_buffer:
    dataset = dataset.shuffle(shuffle_buffer, seed=seed)
  if repeat:
    dataset = dataset.repeat()
  offset = class_ids.start

  def decode(serialized):
    image, label = records.decode_example(serialized, image_size)
    return image, tf.cast(label - offset, tf.int32)

  dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE), len(class_ids)
