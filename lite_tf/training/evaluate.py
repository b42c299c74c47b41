"""Evaluation over test episodes: mean accuracy with a 95% confidence interval."""

import time

import numpy as np
import tensorflow as tf

from lite_tf import episode as episode_lib
from lite_tf.learners import base as learner_base
from lite_tf.lite import estimator


def confidence_interval_95(accuracies):
  """(mean, half-width) with half-width = 1.96 * std / sqrt(K) over K episode accuracies."""
  accuracies = np.asarray(accuracies, np.float64)
  if accuracies.size == 0:
    raise ValueError('no episodes to average')
  return float(accuracies.mean()), float(1.96 * accuracies.std() / np.sqrt(accuracies.size))


def predict_fn(learner, chunk_size=64, query_batch_size=64):
  """episode -> query logits: one chunked forward pass for LITE learners, else the learner's
  own `predict_episode` (MAML: K SGD steps; FineTuner: head training)."""
  if isinstance(learner, learner_base.Learner):
    return lambda episode: estimator.adapt_and_predict(learner, episode, chunk_size,
                                                       query_batch_size)
  return learner.predict_episode


def evaluate_episodes(learner, episodes, num_episodes, chunk_size=64, query_batch_size=64):
  """Adapts to each episode and scores its query set.

  Args:
    learner: a lite_tf.learners.base.Learner, or a learner with predict_episode().
    episodes: iterable of episode dicts.
    num_episodes: how many episodes to evaluate.
  Returns:
    (mean accuracy, 95% half-width, [num_episodes] per-episode accuracies,
     [num_episodes] seconds to adapt and predict each task, the first including tracing).
  """
  solve = predict_fn(learner, chunk_size, query_batch_size)

  @tf.function(reduce_retracing=True)
  def predict(episode_dict):
    logits = solve(episode_lib.Episode.from_dict(episode_dict))
    return tf.argmax(logits, axis=-1, output_type=tf.int32)

  accuracies, seconds = [], []
  for i, episode_dict in enumerate(episodes):
    if i >= num_episodes:
      break
    inputs = {k: tf.convert_to_tensor(v) for k, v in episode_dict.items()}
    start = time.perf_counter()
    predictions = predict(inputs).numpy()
    seconds.append(time.perf_counter() - start)
    accuracies.append(np.mean(predictions == np.asarray(episode_dict['query_labels'])))
  mean, half_width = confidence_interval_95(accuracies)
  return mean, half_width, np.asarray(accuracies), np.asarray(seconds)


def test_time_cost(learner):
  """Adaptation cost per task as in the paper's Table 1 (steps of the support set)."""
  if hasattr(learner, 'test_time_cost'):
    return learner.test_time_cost()
  return {'forward_backward_steps': 0, 'forward_passes': 1}
