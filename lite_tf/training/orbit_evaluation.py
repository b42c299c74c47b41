"""bin/evaluate.py for ORBIT runs: the LITE paper's Table 1 columns for one model.

Per test task (the protocol's tasks, lite_tf.data.orbit.tasks) the learner personalises to the
context frames in one pass (LITE learners; MAML and FineTuner take their steps) and predicts
every evaluated frame of every target video. By default each frame is predicted from itself
alone. `history_pooling=True` predicts it as the 2021 reference code did: the features of the
frame and its clip_length - 1 predecessors (the first frame repeated before the start) are
mean-pooled and classified (ProtoNets, CNAPs and Simple CNAPs; causal under both protocols).
The predictions are scored with lite_tf.training.orbit_metrics, in the reading of the
protocol's code (`user_aggregation`), in both modes: clean (CLE-VE: held-out clean videos) and
clutter (CLU-VE). Written atomically to the output folder: orbit_results.json (every average
of every metric, per mode), orbit_table.csv / .md (the Table 1 row), orbit_table.png (bars
with 95% CIs), and predictions_<mode>.json in the challenge's layout.
"""

import csv
import io
import os
import time

from absl import logging
import gin
import numpy as np
import tensorflow as tf

from lite_tf import atomic
from lite_tf import episode as episode_lib
from lite_tf import progress
from lite_tf.data import in_memory
from lite_tf.data.orbit import episodes as orbit_episodes
from lite_tf.learners import base as learner_base
from lite_tf.lite import chunking
from lite_tf.lite import estimator
from lite_tf.lite import model as lite_model
from lite_tf.training import checkpoints
from lite_tf.training import evaluate
from lite_tf.training import orbit_metrics

MODES = ('clean', 'clutter')
# Each protocol scored as the ORBIT code of its time scores it (orbit_metrics).
PROTOCOL_AGGREGATION = {'original': 'videos', 'challenge': 'frames'}
TABLE_COLUMNS = ('model', 'clean_frame_acc', 'clean_frame_acc_ci95', 'clean_video_acc',
                 'clean_video_acc_ci95', 'clutter_frame_acc', 'clutter_frame_acc_ci95',
                 'clutter_video_acc', 'clutter_video_acc_ci95', 'macs_to_personalise',
                 'steps', 'seconds_per_task', 'parameters')


def is_orbit_run():
  """Whether the parsed config trains on ORBIT episodes (run_training.episode_source)."""
  try:
    source = gin.query_parameter('run_training.episode_source')
  except ValueError:
    return False
  return getattr(source, 'selector', '').endswith('orbit_episodes')


def _history_predictor(meta_model, source):
  """predict(task, episode inputs) -> per evaluated frame, the class of its features
  mean-pooled over its history (TargetVideo.history), as the 2021 reference code."""
  learner = meta_model.learner
  if not isinstance(learner, learner_base.Learner):
    raise ValueError('run_orbit_evaluation.history_pooling needs a LITE learner (ProtoNets, '
                     f'CNAPs, Simple CNAPs); got {type(learner).__name__}')

  @tf.function(reduce_retracing=True)
  def adapt(episode_dict):
    return estimator.adapt_task(learner, episode_lib.Episode.from_dict(episode_dict),
                                meta_model.chunk_size)

  @tf.function(reduce_retracing=True)
  def features(adapted, images):
    return chunking.chunked_apply(
        lambda x: estimator.adapted_query_features(learner, adapted,
                                                   episode_lib.to_model_input(x)),
        images, meta_model.query_batch_size)

  @tf.function(reduce_retracing=True)
  def classify(adapted, pooled):
    logits = estimator.adapted_logits_from_features(learner, adapted, pooled)
    return tf.argmax(logits, axis=-1, output_type=tf.int32)

  def predict(task, inputs):
    adapted = adapt(inputs)
    out = []
    for video in task.target_videos:
      unique, inverse = np.unique(video.history, return_inverse=True)
      frame_features = features(adapted, tf.constant(source.decode(unique)))
      pooled = tf.reduce_mean(tf.gather(frame_features, inverse.reshape(video.history.shape)),
                              axis=1)
      out.append(classify(adapted, pooled).numpy())
    return np.concatenate(out)

  return predict


def evaluate_mode(meta_model, source, num_tasks, history_pooling=False):
  """TaskResults of `num_tasks` test tasks and the per-task seconds."""
  @tf.function(reduce_retracing=True)
  def predict_frames(episode_dict):
    logits = meta_model.predict_episode(episode_lib.Episode.from_dict(episode_dict))
    return tf.argmax(logits, axis=-1, output_type=tf.int32)

  if history_pooling:
    predict = _history_predictor(meta_model, source)
  else:
    predict = lambda task, inputs: predict_frames(inputs).numpy()
  results, seconds = [], []
  with progress.Progress(num_tasks, 'ORBIT test tasks', 'tasks') as shown:
    for index in range(num_tasks):
      task = source.task(index)
      inputs = {k: tf.convert_to_tensor(v) for k, v in source.episode(index).items()}
      start = time.perf_counter()
      predictions = predict(task, inputs)
      seconds.append(time.perf_counter() - start)
      videos, offset = [], 0
      for video in task.target_videos:
        n = len(video.frames)
        videos.append(orbit_metrics.VideoResult(video.name, int(video.label),
                                                video.frame_numbers,
                                                predictions[offset:offset + n].tolist()))
        offset += n
      results.append(orbit_metrics.TaskResult(task.user, index, task.objects, videos))
      shown.update(index + 1)
  return results, seconds


@gin.configurable
def run_orbit_evaluation(learner, weights_path, model_name='model', protocol='original',
                         modes=MODES, num_tasks=None, user_aggregation=None,
                         history_pooling=False):
  """Evaluates on the test users in each mode; returns (row, {mode: summary}, {mode: results}).

  Args:
    protocol: 'original' (the LITE paper's Table 1) or 'challenge'.
    num_tasks: tasks per mode (default: one pass, the protocol's tasks per user x users).
    user_aggregation: orbit_metrics' reading of the user, object and task averages:
      'videos' (the 2021 code's, which the paper's protocol used) or 'frames' (the code
      since Nov 2022, the challenge's); default: the protocol's ('original': 'videos',
      'challenge': 'frames').
    history_pooling: predict each target frame from its features mean-pooled with its
      clip_length - 1 predecessors' (the 2021 code), instead of from the frame alone.
  """
  if user_aggregation is None:
    user_aggregation = PROTOCOL_AGGREGATION.get(protocol, 'videos')
  if user_aggregation not in orbit_metrics.USER_AGGREGATIONS:
    raise ValueError(f'run_orbit_evaluation.user_aggregation must be one of '
                     f'{list(orbit_metrics.USER_AGGREGATIONS)}; got {user_aggregation!r}')
  for mode in modes:
    if mode not in MODES:
      raise ValueError(f'run_orbit_evaluation.modes: unknown mode {mode!r}; expected '
                       f'{list(MODES)}')
  meta_model, summaries, all_results, macs, seconds = None, {}, {}, None, []
  for mode in modes:
    source = orbit_episodes.orbit_episodes('test', test_protocol=protocol,
                                           target_video_type=mode)
    first = in_memory.episode_from_dict(source.episode(0))
    if meta_model is None:
      if isinstance(learner, learner_base.Learner):
        with learner.unpooled():
          learner(episode_lib.building_episode(first).to_dict())
      checkpoints.load_learner_weights(learner, weights_path)
      meta_model = lite_model.make_meta_model(learner)
      macs = evaluate.macs_for_model(meta_model, first)
    count = num_tasks or source.sampler.num_tasks()
    results, mode_seconds = evaluate_mode(meta_model, source, count, history_pooling)
    for r in results:
      r.macs_to_personalise = macs
    seconds += mode_seconds
    summaries[mode] = orbit_metrics.summarize(results, user_aggregation)
    all_results[mode] = results
    logging.info('ORBIT %s: frame accuracy %.4f (per video)', mode,
                 summaries[mode]['frame_accuracy']['video']['mean'])
  cost = evaluate.test_time_cost(learner)
  total, _ = evaluate.count_parameters(learner)
  row = {'model': model_name, 'macs_to_personalise': macs,
         'steps': f"{cost['forward_passes']}F / {cost['forward_backward_steps']}FB",
         'seconds_per_task': evaluate.median_seconds(np.asarray(seconds)),
         'parameters': total}
  for mode in MODES:
    for metric, column in (('frame_accuracy', 'frame_acc'), ('video_accuracy', 'video_acc')):
      stat = summaries.get(mode, {}).get(metric, {}).get('video')
      row[f'{mode}_{column}'] = None if stat is None else stat['mean']
      row[f'{mode}_{column}_ci95'] = None if stat is None else stat['ci95']
  return row, summaries, all_results


def _pct(value, ci):
  return '-' if value is None else f'{100 * value:.2f} +/- {100 * ci:.2f}'


def markdown_table(row):
  macs = row['macs_to_personalise']
  return ('| model | clean frame acc | clean video acc | clutter frame acc | clutter video acc '
          '| MACs to personalise | steps | seconds / task | parameters |\n'
          '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n'
          f"| {row['model']} | {_pct(row['clean_frame_acc'], row['clean_frame_acc_ci95'])} | "
          f"{_pct(row['clean_video_acc'], row['clean_video_acc_ci95'])} | "
          f"{_pct(row['clutter_frame_acc'], row['clutter_frame_acc_ci95'])} | "
          f"{_pct(row['clutter_video_acc'], row['clutter_video_acc_ci95'])} | "
          f"{'-' if macs is None else f'{macs / 1e9:.2f} G'} | {row['steps']} | "
          f"{row['seconds_per_task']:.3f} | {row['parameters'] / 1e6:.2f} M |\n")


def _chart(row, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  names = ['clean frame', 'clean video', 'clutter frame', 'clutter video']
  keys = ['clean_frame_acc', 'clean_video_acc', 'clutter_frame_acc', 'clutter_video_acc']
  values = [100 * (row[k] or 0.0) for k in keys]
  errors = [100 * (row[f'{k}_ci95'] or 0.0) for k in keys]
  fig, ax = plt.subplots(figsize=(6, 3.5))
  ax.bar(names, values, yerr=errors, capsize=4, color=['#4c72b0', '#4c72b0', '#dd8452',
                                                       '#dd8452'])
  ax.set_ylabel('accuracy (%), 95% CI')
  ax.set_ylim(0, 100)
  ax.set_title(f"ORBIT: {row['model']}")
  fig.tight_layout()
  with atomic.atomic_path(path, suffix='.png') as tmp:
    fig.savefig(tmp, format='png', dpi=120)
  plt.close(fig)


def write_report(row, summaries, results, output_dir):
  atomic.write_json(os.path.join(output_dir, 'orbit_results.json'),
                    {'table': row, 'summaries': summaries}, indent=1)
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=TABLE_COLUMNS)
  writer.writeheader()
  writer.writerow(row)
  atomic.write_text(os.path.join(output_dir, 'orbit_table.csv'), buffer.getvalue())
  atomic.write_text(os.path.join(output_dir, 'orbit_table.md'), markdown_table(row))
  _chart(row, os.path.join(output_dir, 'orbit_table.png'))
  for mode, mode_results in results.items():
    atomic.write_json(os.path.join(output_dir, f'predictions_{mode}.json'),
                      orbit_metrics.predictions_json(mode_results))
