"""A user's own tf.data pipeline of Meta-Dataset episodes, importable from a gin file.

Built from tf.data and TF ops only (no lite_tf episode source): the split's classes are read
once from a records folder, and element k is a fixed-way, fixed-shot episode drawn with
stateless random ops seeded by (seed, k), so the pipeline is deterministic. Elements have the
structure and dtypes of Meta-Dataset's `make_one_source_episode_pipeline`:
((support_images, support_labels, support_class_ids, query_images, query_labels,
query_class_ids), source_id), images float32 in [-1, 1], labels and class ids int32.
"""

import gin
import tensorflow as tf

from lite_tf.data.meta_dataset import dataset_spec
from lite_tf.data.meta_dataset import records


@gin.configurable
def md_style_pipeline(split, records_dir=gin.REQUIRED, image_size=28, way=5, shots=2,
                      queries=3, seed=0):
  spec = dataset_spec.load(records_dir)
  class_ids = list(spec.class_ids(split))
  images = tf.stack([records.read_class(spec, k, image_size)[0] for k in class_ids])
  per_class = images.shape[1]
  ids = tf.constant(class_ids, tf.int32)
  offset = {'train': 0, 'valid': 1, 'test': 2}[split]

  def episode(k):
    key = tf.stack([tf.constant(seed + 1000 * offset, tf.int64), k])
    chosen = tf.argsort(tf.random.stateless_uniform([len(class_ids)], key))[:way]
    order = tf.argsort(tf.random.stateless_uniform([way, per_class], key + 1), axis=1)
    picked = tf.gather(images, chosen)  # [way, per_class, S, S, 3]

    def take(rows):
      return tf.reshape(tf.gather(picked, rows, batch_dims=1), [-1, image_size, image_size, 3])

    def labels(n):
      return tf.repeat(tf.range(way, dtype=tf.int32), n)

    def class_of(n):
      return tf.repeat(tf.gather(ids, chosen), n)

    return ((take(order[:, :shots]), labels(shots), class_of(shots),
             take(order[:, shots:shots + queries]), labels(queries), class_of(queries)),
            tf.constant(0, tf.int32))

  return tf.data.Dataset.range(2**40).map(episode)
