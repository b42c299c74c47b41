"""A gin-importable episode source whose query set holds a class missing from the support set.

Used by test_train_binary.py through a gin file's `import` statement, the way users plug in
their own sources.
"""

import gin
import numpy as np


class _EpisodeOnly:
  """Has episode(i) only: not an episode source."""

  def episode(self, index):
    return _MissingClassSampler().episode(index)


class _MissingClassSampler:

  def episodes(self, start=0):
    index = start
    while True:
      yield self.episode(index)
      index += 1

  def as_dataset(self, start=0, num_episodes=None, shard=None):
    raise NotImplementedError  # never reached: the first episode is refused

  def episode(self, index):
    rng = np.random.RandomState(index)
    return {
        'support_images': rng.uniform(-1, 1, (4, 28, 28, 3)).astype(np.float32),
        'support_labels': np.array([0, 1, 0, 1], np.int32),
        'query_images': rng.uniform(-1, 1, (3, 28, 28, 3)).astype(np.float32),
        'query_labels': np.array([0, 1, 2], np.int32),
        'way': np.int32(3),
    }


@gin.configurable
def missing_class_episodes(split):
  del split
  return _MissingClassSampler()


@gin.configurable
def episode_only_episodes(split):
  del split
  return _EpisodeOnly()
