"""Peak memory and time of one meta-training step: LITE against exact back-propagation.

Modes (each run in a fresh process by bin/benchmark_memory.py):
  lite:  LITE step on a task of N support images (|H| back-propagated, the rest gradient-free in
         chunks) and one query batch; also times its parts separately in the same process.
  full:  exact back-propagation through all N support images and the query batch.
  floor: exact back-propagation through a task of only |H| support images and one query batch
         (what must hold gradients in any case).

Memory is read two ways: the TF allocator peak (`tf.config.experimental.get_memory_info`
after `reset_memory_stats`; on CPU this needs TF_CPU_ALLOCATOR_USE_BFC=true, which the parent
binary sets) and the process's peak resident set (VmHWM, reset through /proc/self/clear_refs)
above its resident set just before the first step.
"""

import json
import os
import statistics
import time

import keras
import tensorflow as tf

from lite_tf import proc_status
from lite_tf.benchmarks import reference_step
from lite_tf.episode import Episode
from lite_tf.episode import to_model_input
from lite_tf.learners import cnaps
from lite_tf.learners import protonets
from lite_tf.learners import simple_cnaps
from lite_tf.lite import chunking
from lite_tf.lite import model as lite_model


def _status_kib(field):
  kib = proc_status.status_kib(field)
  if kib is None:
    raise RuntimeError(f'{field} not readable from /proc/self/status (the memory benchmark '
                       'needs Linux)')
  return kib


def current_rss_bytes():
  return _status_kib('VmRSS') * 1024


def peak_rss_bytes():
  return _status_kib('VmHWM') * 1024


def reset_peak_rss():
  """Resets VmHWM to the current RSS (Linux >= 4.0); returns False where that is not allowed."""
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
    return True
  except OSError:
    return False


def _device():
  gpus = tf.config.list_logical_devices('GPU')
  return gpus[0].name if gpus else '/device:CPU:0'


def _allocator_peak(device):
  try:
    return tf.config.experimental.get_memory_info(device)['peak']
  except (ValueError, RuntimeError):
    return None


def _allocator_current(device):
  try:
    return tf.config.experimental.get_memory_info(device)['current']
  except (ValueError, RuntimeError):
    return None


def _reset_allocator(device):
  try:
    tf.config.experimental.reset_memory_stats(device)
  except (ValueError, RuntimeError):
    pass


def random_episode(num_support, num_query, image_size, way, seed=0, image_dtype='float32'):
  """reference_step.random_task's task (what bin/benchmark_reference.py's reference side gets
  too) as an Episode."""
  return Episode.from_numpy(*reference_step.random_task(num_support, num_query, image_size, way,
                                                        seed=seed, image_dtype=image_dtype),
                            way)


def _timed(fn, steps):
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    out = fn()
    tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, 'numpy') else t, out)
    times.append(time.perf_counter() - start)
  return times


LEARNERS = {'protonets': protonets.ProtoNets, 'cnaps': cnaps.Cnaps,
            'simple_cnaps': simple_cnaps.SimpleCnaps}


def _train_step_fn(learner, optimizer, episode, num_backprop, chunk_size, query_batch_size,
                   recompute_batch=None, recompute_mode='loop'):
  model = lite_model.LiteModel(learner, num_backprop=num_backprop, chunk_size=chunk_size,
                               query_batch_size=query_batch_size,
                               recompute_batch=recompute_batch, recompute_mode=recompute_mode)
  model.optimizer = optimizer
  # Traced as Keras' fit traces the train step in bin/train.py: without AutoGraph, and with
  # the task's sizes unknown (a dataset's element spec), so one traced step serves every task.
  task = episode.to_dict()
  signature = {key: tf.TensorSpec([None] + list(value.shape[1:]) if value.shape.rank else [],
                                  value.dtype)
               for key, value in task.items()}
  step = tf.function(model.train_step, input_signature=[signature], autograph=False)
  return lambda: step(task)


def run(mode, backbone, image_size, support_size, num_backprop, chunk_size, query_batch_size,
        way, steps, image_dtype='float32', learner='protonets', num_query=None,
        recompute_batch=None, time_parts=True, policy='float32', grappler=True,
        recompute_mode='loop', set_encoder_size=None):
  """Runs warm-up + `steps` steps of `mode` under the precision `policy`; returns a dict of
  measurements."""
  from lite_tf import precision  # pylint: disable=g-import-not-at-top
  precision.apply(policy)
  if not grappler:  # what tracing costs without TF's graph optimiser (first step, memory)
    tf.config.optimizer.set_experimental_options({'disable_meta_optimizer': True})
  keras.utils.set_random_seed(0)
  device = _device()
  learner_name = learner
  extra = {'set_encoder_size': set_encoder_size} if set_encoder_size else {}
  learner = LEARNERS[learner](backbone=backbone, image_size=image_size, **extra)
  n = num_backprop if mode == 'floor' else support_size
  num_query = num_query or query_batch_size
  episode = random_episode(n, num_query, image_size, way, image_dtype=image_dtype)
  # Build on a tiny task: a full-size call here would grow the allocator's pool (and the RSS)
  # before the measurement starts.
  learner(random_episode(2, 1, image_size, 2).to_dict())
  optimizer = lite_model.make_optimizer(1e-3)  # what training uses (under the policy applied)
  optimizer.build(learner.trainable_variables)

  # Every mode runs LiteModel.train_step: with |H| >= N it back-propagates the whole support
  # set, i.e. it is exact back-propagation (tests/test_lite_estimator.py), through the same code.
  step_fn = _train_step_fn(learner, optimizer, episode,
                           num_backprop if mode == 'lite' else n, chunk_size, query_batch_size,
                           recompute_batch, recompute_mode)
  rss_before = current_rss_bytes()
  peak_before_step = peak_rss_bytes()  # from process start: imports, model, task, tracing
  rss_reset = reset_peak_rss()
  _reset_allocator(device)
  current_at_reset = _allocator_current(device)
  times = _timed(step_fn, 1)  # warm-up: tracing and the first step
  peak_with_warmup = peak_rss_bytes()
  rss_after_warmup = current_rss_bytes()
  reset_peak_rss()
  times += _timed(step_fn, steps)
  steady_peak = peak_rss_bytes()
  result = {
      'mode': mode, 'learner': learner_name, 'backbone': backbone, 'image_size': image_size,
      'support_size': n, 'num_query': num_query, 'recompute_batch': recompute_batch,
      'recompute_mode': recompute_mode, 'set_encoder_size': set_encoder_size,
      'num_backprop': num_backprop, 'chunk_size': chunk_size,
      'query_batch_size': query_batch_size, 'device': device, 'image_dtype': image_dtype,
      'allocator_peak_bytes': _allocator_peak(device),
      # What the step itself needs on top of what existed before it (model, optimizer and
      # the task's own images): the part that must not grow with N.
      'allocator_current_at_start_bytes': current_at_reset,
      'step_peak_above_start_bytes': (_allocator_peak(device) - current_at_reset
                                      if current_at_reset is not None else None),
      # Peak RSS from before the warm-up step (tracing included) ...
      'peak_rss_above_start_bytes': (max(peak_with_warmup, steady_peak) - rss_before
                                     if rss_reset else None),
      # ... and over the timed steps only, above the RSS just before them (steady state).
      'steady_peak_rss_above_pre_step_bytes': (steady_peak - rss_after_warmup
                                               if rss_reset else None),
      'rss_before_bytes': rss_before,
      # The whole process's peak from its start (the maximum over the spans between resets).
      'process_peak_rss_bytes': max(peak_before_step, peak_with_warmup, steady_peak),
      'precision': policy,
      'first_step_seconds': times[0],
      'step_seconds': statistics.median(times[1:]),
      'malloc': 'no_mmap' if os.environ.get('MALLOC_MMAP_MAX_') == '0' else 'default',
  }

  if mode == 'lite' and time_parts:
    # The parts of a LITE step, timed separately: the gradient-free forward pass of the N-H
    # other support images, and exact back-propagation through H support + one query batch.
    rest = tf.range(max(n - num_backprop, 0))
    like = tf.zeros([1, learner.backbone.feature_dim])
    nograd = tf.function(lambda: chunking.chunked_map(
        lambda x: learner.support_contributions(to_model_input(x), None, training=False),
        episode.support_images,
        rest, chunk_size, like))
    floor_episode = random_episode(min(num_backprop, n), num_query, image_size, way,
                                   image_dtype=image_dtype)
    floor_fn = _train_step_fn(learner, optimizer, floor_episode, num_backprop, chunk_size,
                              query_batch_size, recompute_batch, recompute_mode)
    nograd_seconds = statistics.median(_timed(nograd, 1 + steps)[1:])
    floor_seconds = statistics.median(_timed(floor_fn, 1 + steps)[1:])
    result.update(parts_nograd_seconds=nograd_seconds, parts_backprop_seconds=floor_seconds,
                  parts_sum_seconds=nograd_seconds + floor_seconds,
                  step_over_parts=result['step_seconds'] / (nograd_seconds + floor_seconds))
  return result


def main_child(**kwargs):
  print('RESULT ' + json.dumps(run(**kwargs)), flush=True)
