"""Episodes from other pipelines: Meta-Dataset's 6-tuples and multi-source mixing."""

import gin
import numpy as np
import tensorflow as tf


def from_meta_dataset_tuple(support_images, support_labels, support_class_ids, query_images,
                            query_labels, query_class_ids):
  """One Meta-Dataset episode (the 6-tuple its episode pipelines yield) -> episode dict."""
  support_labels = tf.cast(support_labels, tf.int32)
  return {
      'support_images': tf.cast(support_images, tf.float32),
      'support_labels': support_labels,
      'query_images': tf.cast(query_images, tf.float32),
      'query_labels': tf.cast(query_labels, tf.int32),
      'way': tf.reduce_max(support_labels) + 1,
      'support_class_ids': tf.cast(support_class_ids, tf.int64),
      'query_class_ids': tf.cast(query_class_ids, tf.int64),
  }


def adapt_meta_dataset_pipeline(dataset):
  """Maps a tf.data pipeline of Meta-Dataset episodes to lite_tf episode dicts.

  Accepts elements `(episode_6_tuple, source_id)` as yielded by Meta-Dataset's
  `make_one_source_episode_pipeline` / `make_multisource_episode_pipeline`, or bare 6-tuples.
  """
  spec = dataset.element_spec
  if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], tuple):
    return dataset.map(lambda episode, source_id: from_meta_dataset_tuple(*episode))
  if isinstance(spec, tuple) and len(spec) == 6:
    return dataset.map(from_meta_dataset_tuple)
  raise ValueError('expected a dataset of Meta-Dataset episodes: 6-tuples (support_images, '
                   'support_labels, support_class_ids, query_images, query_labels, '
                   f'query_class_ids), optionally paired with a source id; got {spec}')


@gin.configurable
class MultiSourceEpisodes:
  """Each episode from one source drawn uniformly at random (Meta-Dataset's multi-source
  training), reproducibly for a seed."""

  def __init__(self, sources, seed=0):
    if not sources:
      raise ValueError('MultiSourceEpisodes needs at least one source')
    self.sources = list(sources)
    sizes = {getattr(s, 'image_size', None) for s in self.sources}
    if len(sizes) > 1:
      raise ValueError(f'MultiSourceEpisodes: sources differ in image_size {sorted(sizes)}')
    self.rng = np.random.RandomState(seed)

  def episodes(self):
    iterators = [iter(s.episodes()) for s in self.sources]
    while True:
      yield next(iterators[self.rng.randint(len(iterators))])

  def as_dataset(self, num_episodes=None, prefetch=2):
    signature = self.sources[0].output_signature()
    dataset = tf.data.Dataset.from_generator(self.episodes, output_signature=signature)
    if num_episodes is not None:
      dataset = dataset.take(num_episodes)
    return dataset.prefetch(prefetch)
