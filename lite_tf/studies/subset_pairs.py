"""LITE against the full set on one small task, over every pair of subsets (H, H_c).

For a learner with a task context (CNAPs, Simple CNAPs) LITE draws H (the back-propagated
support images) and an independent H_c (the set encoder's); for a small task every pair of
|H|-subsets can be enumerated, so the two claims of lite_tf.lite.estimator are checked
exactly rather than statistically:

  forward:  every pair's loss equals the full-set loss (every image enters the forward pass);
  bias:     the mean over all pairs of LITE's gradient equals the exact gradient
            (estimator.full_task_gradients): relative bias ||mean - g|| / ||g|| per parameter
            group (the top level of the variable's path) and for all parameters.

bin/subset_pairs_study.py prints both for each set-encoder normalisation (docs/STUDIES.md).
"""

import itertools

import keras
import numpy as np
import tensorflow as tf

from lite_tf.episode import Episode
from lite_tf.lite import estimator


def _flat(grads):
  return np.concatenate([np.reshape(np.asarray(g, np.float64), [-1]) for g in grads])


def subset_pair_exactness(learner, episode, num_backprop, chunk_size):
  """LITE's loss and mean gradient over all C(N, |H|)^2 pairs (H, H_c), one query batch.

  Args:
    learner: a built learner with a task context.
    episode: a lite_tf.episode.Episode.
    num_backprop: |H| (= |H_c|).
    chunk_size: LITE's gradient-free chunk size.
  Returns:
    dict: full_loss, lite_loss_min, lite_loss_max, forward_mismatch (the largest
    |LITE loss - full loss| / |full loss| over the pairs), pairs, and relative_bias
    {group: ||mean_pairs - g|| / ||g||} ('all' and each top-level group).
  """
  variables = learner.trainable_variables
  full_loss, full, _ = estimator.full_task_gradients(learner, episode, variables)
  full = _flat(full)
  num_query = int(episode.query_images.shape[0])

  @tf.function
  def lite(subset, context):
    return estimator.lite_task_gradients(learner, episode, variables, num_backprop,
                                         chunk_size=chunk_size, query_batch_size=num_query,
                                         backprop_indices=subset[None],
                                         context_indices=context[None])[:2]

  n = int(episode.support_images.shape[0])
  subsets = list(itertools.combinations(range(n), num_backprop))
  total = np.zeros_like(full)
  losses = []
  for subset in subsets:
    for context in subsets:
      loss, grads = lite(tf.constant(subset, tf.int32), tf.constant(context, tf.int32))
      losses.append(float(loss))
      total += _flat(grads)
  mean = total / len(subsets) ** 2
  groups = {'all': np.ones(full.size, bool)}
  tops = np.concatenate([np.full(int(np.prod(v.shape)), v.path.split('/')[0])
                         for v in variables])
  groups.update({top: tops == top for top in dict.fromkeys(tops)})
  full_loss = float(full_loss)
  return {
      'full_loss': full_loss, 'lite_loss_min': min(losses), 'lite_loss_max': max(losses),
      'forward_mismatch': max(abs(l - full_loss) for l in losses) / abs(full_loss),
      'pairs': len(losses),
      'relative_bias': {name: float(np.linalg.norm(mean[m] - full[m]) / np.linalg.norm(full[m]))
                        for name, m in groups.items()},
  }


def small_task(num_support=6, num_query=7, image_size=16, way=3, seed=0):
  """A random task (support labels cycling over the classes), tests/conftest.py's
  small_episode."""
  rng = np.random.RandomState(seed)
  query_labels = rng.randint(0, way, num_query)
  return Episode.from_numpy(rng.uniform(-1, 1, (num_support, image_size, image_size, 3)),
                            np.arange(num_support) % way,
                            rng.uniform(-1, 1, (num_query, image_size, image_size, 3)),
                            query_labels, way)


def perturb_film(learner, stddev, seed=(1, 2)):
  """Draws the FiLM generators' regularizer vectors (which start at zero, FiLM at the
  identity) with `stddev`, as tests/test_cnaps.py does, so that the set encoder's embedding
  moves the loss and its nested terms of the gradient are not negligible."""
  generator = learner.film_generator
  for r in generator.gamma_regularizers + generator.beta_regularizers:
    r.assign(tf.random.stateless_normal(r.shape, seed=list(seed), stddev=stddev))


def norm_table(make_learners, norms, episode, num_backprop, chunk_size, regularizer_stddev=0.5,
               seed=1):
  """Markdown rows, one per (learner, set_encoder_norm): make_learners[name](norm) builds it
  (Keras seed `seed` before each, so every norm starts from the same other weights), its
  FiLM regularizers drawn with regularizer_stddev (perturb_film; 0 keeps them)."""
  lines = ['| learner | set_encoder_norm | full-set loss | LITE loss over the pairs | '
           'forward mismatch | relative bias: set encoder | FiLM generators | all |',
           '| --- | --- | ---: | --- | ---: | ---: | ---: | ---: |']
  for name, make in make_learners.items():
    for norm in norms:
      keras.utils.set_random_seed(seed)
      learner = make(norm)
      learner(episode.to_dict())
      if regularizer_stddev:
        perturb_film(learner, regularizer_stddev)
      r = subset_pair_exactness(learner, episode, num_backprop, chunk_size)
      bias = r['relative_bias']
      lines.append(f"| {name} | `'{norm}'` | {r['full_loss']:.4f} | {r['lite_loss_min']:.4f} - "
                   f"{r['lite_loss_max']:.4f} | {r['forward_mismatch']:.2g} | "
                   f"{bias['set_encoder']:.2g} | {bias['film_generator']:.2g} | "
                   f"{bias['all']:.2g} |")
  return '\n'.join(lines)
