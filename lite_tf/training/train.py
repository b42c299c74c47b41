"""Meta-training with LITE under `model.fit`, then evaluation on held-out classes."""

import os
import sys
import tempfile

from absl import logging
import gin
import keras
import numpy as np
import tensorflow as tf

from lite_tf import atomic
from lite_tf import episode as episode_lib
from lite_tf.data import glyphs
from lite_tf.data import in_memory
from lite_tf.learners import base as learner_base
from lite_tf.lite import model as lite_model
from lite_tf.training import evaluate


@gin.configurable
def glyph_episodes(split, image_size=28, way=5, shot=5, query_shot=10, seed=0, cache_dir=None):
  """Episodes of the built-in glyph demo data (lite_tf.data.glyphs) for one split."""
  dataset = glyphs.load(size=image_size, cache_dir=cache_dir)
  split_seed = {'train': seed, 'valid': seed + 1, 'test': seed + 2}[split]
  return in_memory.EpisodeSampler(dataset.images_by_class(split), way=way, shot=shot,
                                  query_shot=query_shot, seed=split_seed)


def check_train_dir(train_dir):
  """Creates train_dir and fails early, naming the flag, if it cannot be written."""
  try:
    os.makedirs(train_dir, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix='.write-test-', dir=train_dir)
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise ValueError(f'--train_dir={train_dir!r} is not a writable directory: {e}') from e


@gin.configurable
def run_training(train_dir, learner=gin.REQUIRED, episode_source=glyph_episodes,
                 num_steps=1000, steps_per_log=100, valid_episodes=50, test_episodes=600,
                 verbose='auto'):
  """Meta-trains `learner` with LITE on `episode_source('train')`, then evaluates.

  Args:
    train_dir: where operative_config.gin and the final weights go.
    learner: a lite_tf.learners.base.Learner (gin: `run_training.learner = @protonets()`).
    episode_source: callable split -> sampler with `.episodes()`, `.as_dataset()`.
    num_steps: meta-training tasks (each one a call of LiteModel.train_step).
    steps_per_log: tasks per Keras "epoch": progress and validation are reported this often.
    valid_episodes: valid-split episodes evaluated after each log interval (0: none).
    test_episodes: held-out test-split episodes for the final accuracy.
  Returns:
    dict with 'test_accuracy', 'test_ci95', 'history'.
  """
  check_train_dir(train_dir)
  image_size = getattr(learner, 'image_size', None)
  train_source = episode_source('train')
  first = in_memory.episode_from_dict(
      train_source.episode(0) if hasattr(train_source, 'episode')
      else next(iter(train_source.episodes())))
  episode_lib.validate_episode(first, image_size=image_size)
  if isinstance(learner, learner_base.Learner):
    learner(first.to_dict())  # builds every layer, so weights exist before training and saving

  model = lite_model.make_meta_model(learner)
  model.compile(optimizer=lite_model.make_optimizer(), jit_compile=False)
  atomic.write_text(os.path.join(train_dir, 'operative_config.gin'), gin.operative_config_str())

  validation = {}
  if valid_episodes:
    validation = dict(validation_data=episode_source('valid').as_dataset(
        num_episodes=valid_episodes).repeat(), validation_steps=valid_episodes)
  if verbose == 'auto':
    verbose = 1 if sys.stdout.isatty() else 2  # a live bar on a terminal, a line per log in files
  epochs = max(1, num_steps // steps_per_log)
  history = model.fit(train_source.as_dataset(), epochs=epochs, steps_per_epoch=steps_per_log,
                      verbose=verbose, shuffle=False, **validation)
  with atomic.atomic_path(os.path.join(train_dir, 'learner.weights.h5'),
                          suffix='.weights.h5') as tmp:
    learner.save_weights(tmp)

  mean, half_width, _, seconds = evaluate.evaluate_episodes(
      model.predict_episode, episode_source('test').episodes(), test_episodes)
  logging.info('test accuracy %.4f +/- %.4f over %d episodes', mean, half_width, test_episodes)
  cost = evaluate.test_time_cost(learner)
  cost['seconds_per_task'] = float(np.median(seconds[1:] if len(seconds) > 1 else seconds))
  logging.info('test-time cost per task: %s', cost)
  return {'test_accuracy': mean, 'test_ci95': half_width, 'history': history.history,
          'num_test_episodes': test_episodes, 'test_time_cost': cost}
