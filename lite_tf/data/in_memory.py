"""Fixed way/shot episodes from classes held in memory (the built-in demo data, image folders).

Sampling is a pure function of (seed, episode index), so a pipeline can start at any episode and
reproduce exactly the episodes an uninterrupted run would have seen.
"""

import gin
import numpy as np
import tensorflow as tf

from lite_tf import episode as episode_lib


def to_unit_range(images):
  """uint8 [0, 255] -> float32 [-1, 1]."""
  return images.astype(np.float32) / 127.5 - 1.0


@gin.configurable
class EpisodeSampler:
  """Samples `way`-way episodes with `shot` support and `query_shot` query images per class.

  Args:
    images_by_class: {class id: [num, size, size, 3] uint8 images}.
    way, shot, query_shot: episode shape.
    seed: episode i is drawn from RandomState((seed, i)).
  """

  def __init__(self, images_by_class, way=5, shot=5, query_shot=10, seed=0):
    self.class_ids = sorted(images_by_class)
    self.images_by_class = images_by_class
    if way > len(self.class_ids):
      raise ValueError(f'EpisodeSampler.way={way} exceeds the {len(self.class_ids)} classes '
                       'available in this split')
    too_small = [c for c in self.class_ids if len(images_by_class[c]) < shot + query_shot]
    if too_small:
      raise ValueError(f'classes {too_small} have fewer than shot + query_shot = '
                       f'{shot + query_shot} images')
    self.way, self.shot, self.query_shot, self.seed = way, shot, query_shot, seed

  def episode(self, index):
    """Episode number `index` as a dict of numpy arrays (see lite_tf.episode)."""
    rng = np.random.RandomState(np.random.SeedSequence([self.seed, index]).generate_state(2))
    classes = rng.choice(self.class_ids, self.way, replace=False)
    support, query, support_ids, query_ids = [], [], [], []
    for c in classes:
      picks = rng.choice(len(self.images_by_class[c]), self.shot + self.query_shot,
                         replace=False)
      support.append(self.images_by_class[c][picks[:self.shot]])
      query.append(self.images_by_class[c][picks[self.shot:]])
      support_ids += [c] * self.shot
      query_ids += [c] * self.query_shot
    local = {c: i for i, c in enumerate(classes)}
    return {
        'support_images': to_unit_range(np.concatenate(support)),
        'support_labels': np.asarray([local[c] for c in support_ids], np.int32),
        'query_images': to_unit_range(np.concatenate(query)),
        'query_labels': np.asarray([local[c] for c in query_ids], np.int32),
        'way': np.int32(self.way),
        'support_class_ids': np.asarray(support_ids, np.int32),
        'query_class_ids': np.asarray(query_ids, np.int32),
    }

  def episodes(self, start=0, keep=None):
    """Python iterator over episodes start, start + 1, ... (those with keep(index), if given)."""
    index = start
    while True:
      if keep is None or keep(index):
        yield self.episode(index)
      index += 1

  def output_signature(self):
    """The episodes' TensorSpecs (every episode has the same shapes)."""
    return self._signature(self.way * self.shot, self.way * self.query_shot)

  def _signature(self, n_support, n_query):
    """TensorSpecs of episodes of n_support and n_query images (None: any number)."""
    size = self.images_by_class[self.class_ids[0]].shape[1]
    signature = {
        'support_images': tf.TensorSpec([n_support, size, size, 3], tf.float32),
        'support_labels': tf.TensorSpec([n_support], tf.int32),
        'query_images': tf.TensorSpec([n_query, size, size, 3], tf.float32),
        'query_labels': tf.TensorSpec([n_query], tf.int32),
        'way': tf.TensorSpec([], tf.int32),
        'support_class_ids': tf.TensorSpec([n_support], tf.int32),
        'query_class_ids': tf.TensorSpec([n_query], tf.int32),
    }
    return signature

  def as_dataset(self, start=0, num_episodes=None, shard=None):
    """tf.data.Dataset of episode dicts, beginning at episode `start`; shard=(num_shards,
    index) keeps episodes start + index + k * num_shards."""
    return episode_lib.episodes_dataset(self.episodes, self.output_signature(), start=start,
                                        shard=shard, num_episodes=num_episodes)


class VariableEpisodeSampler(EpisodeSampler):
  """Meta-Dataset-style variable episodes (way, shots and support size sampled per episode by
  lite_tf.data.meta_dataset.sampling, Meta-Dataset's algorithm) from classes held in memory.

  Args:
    images_by_class: {class id: [num, size, size, 3] uint8 images}.
    config: a sampling.EpisodeDescriptionConfig (its max_support_set_size,
      max_ways_upper_bound, max_num_query, ... apply).
    seed: episode i is drawn from a sampler seeded with (seed, i), so it is a pure function
      of (seed, i) like EpisodeSampler's.
  """

  def __init__(self, images_by_class, config=None, seed=0):  # pylint: disable=super-init-not-called
    from lite_tf.data.meta_dataset import dataset_spec as spec_lib  # pylint: disable=g-import-not-at-top
    from lite_tf.data.meta_dataset import sampling  # pylint: disable=g-import-not-at-top
    self.class_ids = sorted(images_by_class)
    self.images_by_class = images_by_class
    self.seed = seed
    self.config = config or sampling.EpisodeDescriptionConfig()
    # The sampler draws dataset-level ids of one split: the classes here, renumbered 0..C-1.
    self.spec = spec_lib.DatasetSpec(
        name='in_memory', classes_per_split={'TRAIN': len(self.class_ids), 'VALID': 0,
                                             'TEST': 0},
        images_per_class={i: len(images_by_class[c]) for i, c in enumerate(self.class_ids)},
        class_names={i: str(c) for i, c in enumerate(self.class_ids)}, path='')
    self._sampling = sampling
    self._sampler(0)  # checks the config against the classes now, not at the first episode

  def _sampler(self, index):
    seed = np.random.SeedSequence([self.seed, index]).generate_state(2)
    return self._sampling.EpisodeDescriptionSampler(self.spec, 'TRAIN', self.config, seed=seed)

  def episode(self, index):
    """Episode number `index` as a dict of numpy arrays (see lite_tf.episode)."""
    sampler = self._sampler(index)
    description = sampler.sample()
    rng = sampler.rng
    support, query, support_ids, query_ids, support_labels, query_labels = [], [], [], [], [], []
    for label, (k, shots, queries) in enumerate(description):
      c = self.class_ids[k]
      picks = rng.permutation(len(self.images_by_class[c]))[:shots + queries]
      support.append(self.images_by_class[c][picks[:shots]])
      query.append(self.images_by_class[c][picks[shots:]])
      support_ids += [c] * shots
      query_ids += [c] * queries
      support_labels += [label] * shots
      query_labels += [label] * queries
    return {
        'support_images': to_unit_range(np.concatenate(support)),
        'support_labels': np.asarray(support_labels, np.int32),
        'query_images': to_unit_range(np.concatenate(query)),
        'query_labels': np.asarray(query_labels, np.int32),
        'way': np.int32(len(description)),
        'support_class_ids': np.asarray(support_ids, np.int32),
        'query_class_ids': np.asarray(query_ids, np.int32),
    }

  def output_signature(self):
    """The episodes' TensorSpecs (sizes vary from episode to episode)."""
    return self._signature(None, None)


def episode_from_dict(d):
  return episode_lib.Episode.from_dict({k: tf.convert_to_tensor(v) for k, v in d.items()})
