"""ORBIT tasks as lite_tf episodes (lite_tf.data.orbit.episodes)."""

import gin
import numpy as np
import pytest

from lite_tf import episode as episode_lib
from lite_tf.data.orbit import dataset as orbit
from lite_tf.data.orbit import episodes as orbit_episodes
from lite_tf.data.orbit import synthetic as orbit_synthetic


@pytest.fixture(scope='module')
def root(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('orbit_episodes') / 'orbit')
  orbit_synthetic.generate(path, collectors={'train': 2, 'validation': 1, 'test': 1},
                           frame_size=40, frames_per_video=(9, 12), clutter_frames=(50, 56),
                           clean_videos=(3, 4), objects=(3, 3), seed=2)
  return path


def test_training_episodes_hold_the_task_frames(root):
  source = orbit_episodes.orbit_episodes('train', root=root, image_size=32)
  for index in range(3):
    task = source.task(index)
    episode = source.episode(index)
    episode_lib.validate_episode(episode_lib.Episode.from_dict(episode), image_size=32)
    assert episode['support_images'].dtype == np.uint8
    assert len(episode['support_images']) == task.context_clips.size
    np.testing.assert_array_equal(episode['support_labels'], np.repeat(task.context_labels, 8))
    assert len(episode['query_images']) == task.target_clips.size
    # The first support frame is the first frame of the first context clip, decoded.
    np.testing.assert_array_equal(
        episode['support_images'][0],
        orbit.decode_frames_numpy([task.context_clips[0, 0]], 32)[0])
    assert episode['way'] == task.way == len(set(episode['support_class_ids']))


def test_test_episodes_flatten_the_target_videos(root):
  source = orbit_episodes.orbit_episodes('test', root=root, image_size=24)
  task, episode = source.task(0), source.episode(0)
  assert len(episode['query_labels']) == sum(len(v.frames) for v in task.target_videos)
  assert episode['query_images'].shape[1:] == (24, 24, 3)


def test_dataset_resumes_at_an_episode(root):
  source = orbit_episodes.orbit_episodes('train', root=root, image_size=16)
  later = next(iter(source.as_dataset(start=4, num_episodes=1)))
  np.testing.assert_array_equal(later['support_images'].numpy(),
                                source.episode(4)['support_images'])


def test_a_workers_shard_decodes_only_its_episodes(root, monkeypatch):
  """--distribution with 2 replicas from task 4: worker 1 gets episodes 5, 7, ... and reads
  the frames of no other episode."""
  source = orbit_episodes.orbit_episodes('train', root=root, image_size=16)
  expected = [source.episode(i)['support_images'] for i in (5, 7)]
  decoded = []
  original = source.episode
  monkeypatch.setattr(source, 'episode', lambda i: decoded.append(i) or original(i))
  got = [e['support_images'].numpy()
         for e in source.as_dataset(start=4, shard=(2, 1), num_episodes=2)]
  assert decoded[:2] == [5, 7] and set(decoded) <= {5, 7, 9, 11}  # (prefetch may run ahead)
  for a, b in zip(got, expected):
    np.testing.assert_array_equal(a, b)


def test_gin_bindings_and_bad_split(root):
  gin.bind_parameter('orbit_episodes.overrides', {'clip_length': 4})
  source = orbit_episodes.orbit_episodes('valid', root=root, image_size=16)
  assert source.task(0).context_clips.shape[1] == 4
  with pytest.raises(ValueError, match="unknown ORBIT split 'dev'"):
    orbit_episodes.orbit_episodes('dev', root=root)


@pytest.mark.parametrize('name', ['protonets', 'cnaps', 'simple_cnaps', 'maml', 'finetuner'])
def test_every_learner_trains_and_predicts_on_orbit_tasks(root, name):
  """The same ORBIT tasks feed LITE learners (H frames back-propagated) and the
  self-adapting ones (first-order MAML, FineTuner), with no learner-specific code."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from lite_tf import config  # pylint: disable=g-import-not-at-top
  from lite_tf.data import in_memory  # pylint: disable=g-import-not-at-top
  from lite_tf.lite import model  # pylint: disable=g-import-not-at-top
  config.register_configurables()
  for key, value in {'backbone': 'conv4', 'image_size': 16}.items():
    gin.bind_parameter(f'{name}.{key}', value)
  if name == 'maml':
    gin.bind_parameter('maml.first_order', True)
    gin.bind_parameter('maml.max_way', 15)
  if name == 'finetuner':
    gin.bind_parameter('finetuner.num_steps', 3)
  gin.bind_parameter('lite.num_backprop', 8)
  gin.bind_parameter('lite.chunk_size', 16)
  keras.utils.set_random_seed(0)
  learner = gin.get_configurable(name)()
  source = orbit_episodes.orbit_episodes('train', root=root, image_size=16)
  episode = in_memory.episode_from_dict(source.episode(1))
  meta = model.make_meta_model(learner)
  meta.compile(optimizer=keras.optimizers.SGD(0.01))
  if hasattr(learner, 'context_contributions') or name == 'protonets':
    learner(episode.to_dict())
  loss, grads, predictions = meta.task_gradients(episode, learner.trainable_variables,
                                                 tf.constant([0, 1]))
  assert np.isfinite(float(loss)) and predictions.shape == episode.query_labels.shape
  if name != 'finetuner':  # FineTuner only adapts at test time: no meta-gradient
    assert grads and any(float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)
  logits = meta.predict_episode(episode)
  assert logits.shape[0] == episode.query_labels.shape[0]
