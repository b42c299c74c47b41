"""Evaluation over test episodes: mean accuracy with a 95% confidence interval."""

import time

import numpy as np
import tensorflow as tf

from lite_tf import episode as episode_lib


def confidence_interval_95(accuracies):
  """(mean, half-width) with half-width = 1.96 * std / sqrt(K) over K episode accuracies."""
  accuracies = np.asarray(accuracies, np.float64)
  if accuracies.size == 0:
    raise ValueError('no episodes to average')
  return float(accuracies.mean()), float(1.96 * accuracies.std() / np.sqrt(accuracies.size))


def evaluate_episodes(predict_episode, episodes, num_episodes):
  """Adapts to each episode and scores its query set.

  Args:
    predict_episode: Episode -> query logits, e.g. `EpisodicModel.predict_episode` (one
      chunked forward pass for LITE learners, K SGD steps for MAML, head training for
      FineTuner).
    episodes: iterable of episode dicts.
    num_episodes: how many episodes to evaluate.
  Returns:
    (mean accuracy, 95% half-width, [num_episodes] per-episode accuracies,
     [num_episodes] seconds to adapt and predict each task, the first including tracing).
  """
  @tf.function(reduce_retracing=True)
  def predict(episode_dict):
    logits = predict_episode(episode_lib.Episode.from_dict(episode_dict))
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
