"""ORBIT tasks as lite_tf episodes (frame level), the episode source of the ORBIT gin setups.

The support set of an episode is every frame of the task's context clips (clip after clip),
labelled with its object; LITE's subset H is then a subset of frames. The query set is every
frame of the target clips (training protocol), or every evaluated frame of every target video
(test protocols; frame accuracy over the episode is then frame accuracy pooled over the task's
frames; the per-video metrics of lite_tf.training.orbit_metrics need the per-video grouping of
the task, `OrbitEpisodes.task`). Frames are decoded only when their task is drawn, in parallel,
and stay uint8 (the networks see [-1, 1]).
"""

import functools

from absl import logging
import gin
import numpy as np
import tensorflow as tf

from lite_tf import episode as episode_lib
from lite_tf.data.orbit import dataset as orbit
from lite_tf.data.orbit import tasks as orbit_tasks

SPLIT_NAMES = {'train': 'train', 'valid': 'validation', 'validation': 'validation',
               'test': 'test'}


@functools.lru_cache(maxsize=8)
def _decoder(image_size, parallel):
  @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
  def decode(paths):
    return orbit.decode_frames(paths, image_size, parallel)
  return decode


class OrbitEpisodes:
  """Episodes of one ORBIT split; episode i is task i of the TaskSampler (resumable)."""

  def __init__(self, sampler, image_size, decode_parallel=16):
    self.sampler = sampler
    self.image_size = image_size
    self._decode = _decoder(image_size, decode_parallel)
    ids = {}
    for collector, objects in sampler.users:
      for name in objects:
        ids[f'{collector}/{name}'] = len(ids)
    self._class_ids = ids

  def task(self, index):
    """Task `index`; its annotation boxes (annotations_to_load) in frames of image_size."""
    return orbit_tasks.with_boxes_at(self.sampler.task(index), self.image_size)

  def decode(self, paths):
    """Frames [n, S, S, 3] uint8 of frame paths (n >= 1)."""
    paths = list(paths)
    if not paths:
      raise ValueError('an ORBIT task with no frames (check the frame filters)')
    return self._decode(tf.constant(paths)).numpy()

  def episode(self, index):
    """Episode `index` as a dict of numpy arrays (lite_tf.episode), images uint8."""
    task = self.sampler.task(index)
    length = task.context_clips.shape[1]
    support_labels = np.repeat(task.context_labels, length).astype(np.int32)
    if task.target_videos is not None:
      query_paths = [p for v in task.target_videos for p in v.frames]
      query_labels = np.concatenate([np.full(len(v.frames), v.label, np.int32)
                                     for v in task.target_videos])
    else:
      query_paths = list(task.target_clips.reshape(-1))
      query_labels = np.repeat(task.target_labels, task.target_clips.shape[1]).astype(np.int32)
    owner = task.user
    ids = np.asarray([self._class_ids[o if owner == 'object_centric' else f'{owner}/{o}']
                      for o in task.objects], np.int32)
    return {
        'support_images': self.decode(task.context_clips.reshape(-1)),
        'support_labels': support_labels,
        'query_images': self.decode(query_paths),
        'query_labels': query_labels,
        'way': np.int32(task.way),
        'support_class_ids': ids[support_labels],
        'query_class_ids': ids[query_labels],
    }

  def episodes(self, start=0, keep=None):
    index = start
    while True:
      if keep is None or keep(index):
        yield self.episode(index)
      index += 1

  def output_signature(self):
    s = self.image_size
    return {
        'support_images': tf.TensorSpec([None, s, s, 3], tf.uint8),
        'support_labels': tf.TensorSpec([None], tf.int32),
        'query_images': tf.TensorSpec([None, s, s, 3], tf.uint8),
        'query_labels': tf.TensorSpec([None], tf.int32),
        'way': tf.TensorSpec([], tf.int32),
        'support_class_ids': tf.TensorSpec([None], tf.int32),
        'query_class_ids': tf.TensorSpec([None], tf.int32),
    }

  def as_dataset(self, start=0, num_episodes=None, shard=None):
    return episode_lib.episodes_dataset(self.episodes, self.output_signature(), start=start,
                                        shard=shard, num_episodes=num_episodes)


@gin.configurable
def orbit_episodes(split, root=gin.REQUIRED, image_size=84, train_protocol='train',
                   test_protocol='original', target_video_type='clutter', seed=0,
                   overrides=None, video_types=('clean', 'clutter'), layout='benchmark',
                   split_users=None, train_overrides=None):
  """The ORBIT episode source of a split ('train', 'valid'/'validation', 'test').

  Args:
    root: the ORBIT folder (lite_tf.data.orbit.dataset).
    train_protocol / test_protocol: orbit_tasks protocols for the train split / the others.
    target_video_type: 'clutter' (CLU-VE) or 'clean' (CLE-VE).
    overrides: dict of TaskConfig fields applied to every split's protocol.
    train_overrides: dict of TaskConfig fields applied to the train split's only, after
      `overrides` (e.g. the 2021 code's 84x84 training caps: {'object_cap': 10,
      'shot_caps_by_way': True}).
    video_types, layout, split_users: as lite_tf.data.orbit.dataset.OrbitDataset (the unfiltered
      release: layout='unfiltered', and 'clutter-pan' in video_types to read those videos).
  """
  if root is None:
    raise ValueError('orbit_episodes.root is not set: bind it (or ORBIT_ROOT in the ORBIT gin '
                     'files) to the ORBIT folder <root>/{train,validation,test}/...')
  if split not in SPLIT_NAMES:
    raise ValueError(f'unknown ORBIT split {split!r}; expected one of {sorted(SPLIT_NAMES)}')
  orbit_split = SPLIT_NAMES[split]
  dataset = orbit.OrbitDataset(root, splits=(orbit_split,), video_types=video_types,
                               layout=layout, split_users=split_users)
  protocol = train_protocol if orbit_split == 'train' else test_protocol
  changes = dict(overrides or {})
  if orbit_split == 'train':
    changes.update(train_overrides or {})
  config = orbit_tasks.protocol_config(protocol, target_video_type=target_video_type,
                                       **changes)
  from lite_tf.learners import base as learner_base  # pylint: disable=g-import-not-at-top
  pooled = learner_base.clip_pooling()
  if pooled and pooled != config.clip_length:
    raise ValueError(f'clip_pooling.context_clip_length={pooled} but the {protocol!r} '
                     f'protocol\'s clips are of {config.clip_length} frames: bind them equal '
                     '(the 2021 code pooled its 8-frame clips: PROTOCOL = \'original\')')
  split_seed = {'train': seed, 'validation': seed + 1, 'test': seed + 2}[orbit_split]
  sampler = orbit_tasks.TaskSampler(dataset, orbit_split, config, seed=split_seed)
  logging.info('ORBIT %s (%s protocol, %s targets): %s', orbit_split, protocol,
               target_video_type, dataset.summary()[orbit_split])
  skipped = {k: v for k, v in dataset.summary()['skipped'].items() if v}
  dropped = {k: v for k, v in sampler.dropped.items() if v}
  if skipped or dropped:
    logging.warning('ORBIT %s: skipped %s while reading (first: %s); left out of tasks %s',
                    orbit_split, skipped or 'nothing',
                    {k: v[:3] for k, v in dataset.skipped_paths.items()}, dropped or 'nothing')
  return OrbitEpisodes(sampler, image_size)
