"""Evaluation over test episodes: mean accuracy with a 95% confidence interval."""

import time

import numpy as np
import tensorflow as tf

from lite_tf import episode as episode_lib
from lite_tf import interrupt
from lite_tf import progress


def confidence_interval_95(accuracies):
  """(mean, half-width) with half-width = 1.96 * std / sqrt(K) over K episode accuracies."""
  accuracies = np.asarray(accuracies, np.float64)
  if accuracies.size == 0:
    raise ValueError('no episodes to average')
  return float(accuracies.mean()), float(1.96 * accuracies.std() / np.sqrt(accuracies.size))


def evaluate_episodes(predict_episode, episodes, num_episodes,
                      stop_message='evaluation stopped; run the same command to evaluate',
                      label='evaluating'):
  """Adapts to each episode and scores its query set.

  Args:
    predict_episode: Episode -> query logits, e.g. `EpisodicModel.predict_episode` (one
      chunked forward pass for LITE learners, K SGD steps for MAML, head training for
      FineTuner).
    episodes: iterable of episode dicts.
    num_episodes: how many episodes to evaluate.
    stop_message: what a SIGINT / SIGTERM between episodes reports (lite_tf.interrupt).
    label: what the progress line (lite_tf.progress) says is happening.
  Returns:
    (mean accuracy, 95% half-width, [num_episodes] per-episode accuracies,
     [num_episodes] seconds to adapt and predict each task, the first including tracing).
  """
  @tf.function(reduce_retracing=True)
  def predict(episode_dict):
    logits = predict_episode(episode_lib.Episode.from_dict(episode_dict))
    return tf.argmax(logits, axis=-1, output_type=tf.int32)

  accuracies, seconds = [], []
  with progress.Progress(num_episodes, label, 'episodes') as shown:
    for i, episode_dict in enumerate(episodes):
      if i >= num_episodes:
        break
      interrupt.check(f'{stop_message} (after {i} of {num_episodes} episodes)')
      inputs = {k: tf.convert_to_tensor(v) for k, v in episode_dict.items()}
      start = time.perf_counter()
      predictions = predict(inputs).numpy()
      seconds.append(time.perf_counter() - start)
      accuracies.append(np.mean(predictions == np.asarray(episode_dict['query_labels'])))
      shown.update(i + 1)
  if len(accuracies) < num_episodes:
    raise ValueError(f'the episode source ended after {len(accuracies)} episodes, fewer than the '
                     f'{num_episodes} asked for (--num_episodes, run_evaluation.num_episodes or '
                     'run_training.test_episodes): ask for at most that many')
  mean, half_width = confidence_interval_95(accuracies)
  return mean, half_width, np.asarray(accuracies), np.asarray(seconds)


def median_seconds(seconds):
  """Median seconds per task of evaluate_episodes, leaving out the first (it traces)."""
  return float(np.median(seconds[1:] if len(seconds) > 1 else seconds))


def test_time_cost(learner):
  """Adaptation cost per task as in the paper's Table 1 (steps of the support set)."""
  if hasattr(learner, 'test_time_cost'):
    return learner.test_time_cost()
  if learner.uses_task_statistics():
    # per-task batch_norm.statistics: one gradient-free pass for the statistics (the support set
    # in one chunk, as evaluation runs it), then the adapted forward pass.
    return {'forward_backward_steps': 0, 'forward_passes': 2}
  return {'forward_backward_steps': 0, 'forward_passes': 1}


def adaptation_macs(predict_episode, episode):
  """Multiply-accumulates to adapt to `episode`'s support set and classify one query image.

  Counted by TF's profiler on the frozen, fully static graph of `predict_episode` (MACs =
  float operations / 2). Loops must run their whole support set in one pass for the count to
  be complete (`macs_for_model` sets chunk sizes to the support set size). Returns None when
  the graph cannot be counted.
  """
  from tensorflow.python.framework import convert_to_constants  # pylint: disable=g-import-not-at-top
  inputs = episode.to_dict()
  inputs['query_images'] = inputs['query_images'][:1]
  inputs['query_labels'] = inputs['query_labels'][:1]
  for key in ('query_class_ids',):
    if key in inputs:
      inputs[key] = inputs[key][:1]
  spec = {k: tf.TensorSpec(v.shape, v.dtype) for k, v in inputs.items()}
  try:
    concrete = tf.function(lambda x: predict_episode(episode_lib.Episode.from_dict(x))
                           ).get_concrete_function(spec)
    _, graph_def = convert_to_constants.convert_variables_to_constants_v2_as_graph(concrete)
    graph = tf.Graph()
    with graph.as_default():
      tf.graph_util.import_graph_def(graph_def, name='')
      options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
      options['output'] = 'none'
      profile = tf.compat.v1.profiler.profile(graph=graph, run_meta=tf.compat.v1.RunMetadata(),
                                              cmd='op', options=options)
    return int(profile.total_float_ops // 2)
  except (ValueError, TypeError, tf.errors.OpError):
    return None


def macs_for_model(meta_model, episode):
  """adaptation_macs of a meta-model (LiteModel or SelfAdaptingModel) on `episode`, with every
  chunked loop set to process the support set in one chunk while counting."""
  from lite_tf.lite import estimator  # pylint: disable=g-import-not-at-top
  n = int(episode.support_images.shape[0])
  learner = meta_model.learner
  if hasattr(meta_model, 'num_backprop'):  # LITE learners: one gradient-free forward pass
    return adaptation_macs(
        lambda e: estimator.adapt_and_predict(learner, e, chunk_size=n, query_batch_size=1),
        episode)
  saved = getattr(learner, 'chunk_size', None)
  if saved is not None:
    learner.chunk_size = n
  try:
    return adaptation_macs(learner.predict_episode, episode)
  finally:
    if saved is not None:
      learner.chunk_size = saved


def count_parameters(learner):
  """(all parameters, trainable parameters) of a learner."""
  total = sum(int(np.prod(v.shape)) for v in learner.weights)
  trainable = sum(int(np.prod(v.shape)) for v in learner.trainable_weights)
  return total, trainable
