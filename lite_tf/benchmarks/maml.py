"""Peak memory, time per meta-step and meta-gradient fidelity of MAML's multi-step estimation.

One configuration per process: Conv-4 MAML, K inner steps, on a real 5-way 5-shot task of the
glyph demo data rendered at the benchmark's image size. The cosine similarity compares the
configuration's meta-gradient with exact second-order MAML's (window 1) at the same weights and
the same inner learning rate, for each of `fidelity_lrs`. Memory: the TF allocator's peak, the
process's peak RSS above its RSS before the first step, and the whole process's peak RSS since
it started (imports and data included).
"""

import json
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from lite_tf.benchmarks import memory
from lite_tf.data import glyphs
from lite_tf.data import in_memory
from lite_tf.episode import Episode
from lite_tf.learners import maml as maml_lib


def real_task(image_size, way=5, shot=5, query_shot=5, seed=0):
  data = glyphs.load(size=image_size)
  sampler = in_memory.EpisodeSampler(data.images_by_class('test'), way=way, shot=shot,
                                     query_shot=query_shot, seed=seed)
  return in_memory.episode_from_dict(sampler.episode(0))


def _learner(image_size, num_inner_steps, window_size, first_order, inner_lr=0.01,
             literal_window=False):
  keras.utils.set_random_seed(0)
  return maml_lib.Maml(backbone='conv4', image_size=image_size, max_way=5,
                       num_inner_steps=num_inner_steps, inner_lr=inner_lr,
                       first_order=first_order, window_size=window_size,
                       literal_window=literal_window)


def _flat(grads):
  return np.concatenate([g.numpy().ravel() for g in grads])


def run(image_size, num_inner_steps, window_size, first_order, steps, literal_window=False,
        inner_lr=0.01, fidelity_lrs=(0.01,)):
  episode = real_task(image_size)
  learner = _learner(image_size, num_inner_steps, window_size, first_order, inner_lr,
                     literal_window)
  optimizer = keras.optimizers.Adam(1e-3)
  optimizer.build(learner.trainable_variables)
  initial = [v.numpy() for v in learner.trainable_variables]
  grads_fn = tf.function(lambda d: learner.task_gradients(Episode.from_dict(d))[1])

  def step():
    grads = grads_fn(episode.to_dict())
    optimizer.apply_gradients(zip(grads, learner.trainable_variables))
    return grads

  device = '/device:CPU:0' if not tf.config.list_logical_devices('GPU') else 'GPU:0'
  peak_before_reset = memory.peak_rss_bytes()
  rss_before = memory.current_rss_bytes()
  rss_reset = memory.reset_peak_rss()
  try:
    tf.config.experimental.reset_memory_stats(device)
  except (ValueError, RuntimeError):
    pass
  times = []
  for _ in range(1 + steps):
    start = time.perf_counter()
    [g.numpy() for g in step()]
    times.append(time.perf_counter() - start)
  try:
    peak = tf.config.experimental.get_memory_info(device)['peak']
  except (ValueError, RuntimeError):
    peak = None
  peak_now = memory.peak_rss_bytes()
  peak_rss = (peak_now - rss_before) if rss_reset else None
  result = {'image_size': image_size, 'num_inner_steps': num_inner_steps,
            'window_size': window_size, 'first_order': first_order,
            'literal_window': literal_window, 'inner_lr': inner_lr,
            'allocator_peak_bytes': peak, 'peak_rss_above_start_bytes': peak_rss,
            'process_peak_rss_bytes': max(peak_before_reset, peak_now),
            'step_seconds': statistics.median(times[1:]), 'cosine_to_exact_maml': None,
            'cosine_by_inner_lr': {}}
  # Reported before the fidelity check, which runs exact MAML and may not fit in memory.
  print('RESULT ' + json.dumps(result), flush=True)

  # Fidelity at the initial weights: this configuration against exact MAML, at each inner
  # learning rate, both as tf.functions (graph-versus-eager float32 differences would blur it).
  for lr in fidelity_lrs:
    pair = []
    for window, first, literal in ((window_size, first_order, literal_window), (1, False, False)):
      other = _learner(image_size, num_inner_steps, window, first, lr, literal)
      for v, w in zip(other.trainable_variables, initial):
        v.assign(w)
      fn = tf.function(lambda d, o=other: o.task_gradients(Episode.from_dict(d))[1])
      pair.append(_flat(fn(episode.to_dict())))
    mine, exact = pair
    result['cosine_by_inner_lr'][str(lr)] = float(
        mine @ exact / (np.linalg.norm(mine) * np.linalg.norm(exact)))
  result['cosine_to_exact_maml'] = result['cosine_by_inner_lr'].get(str(inner_lr))
  return result


def main_child(**kwargs):
  print('RESULT ' + json.dumps(run(**kwargs)), flush=True)
