"""Error of LITE's meta-gradient against |H| (the LITE paper's Fig. 4 and Table D.7).

For one task and one learner, the true gradient g of the mean query loss comes from exact
back-propagation through the whole support set (estimator.full_task_gradients). Two
estimators are then drawn K times for each subset size |H|, with the same random subset H in
both draws of a pair:

  lite:        LITE's estimate (estimator.lite_task_gradients with H given): every support
               image enters the forward pass, H is back-propagated with weight N/|H|;
  sub_sampled: the exact gradient of a smaller task made of the |H| support images of H only
               (the classes present in H, the query images of those classes), the paper's
               alternative to LITE.

For each estimator, |H| and parameter group (and all parameters together), from the K
differences d_k = estimate_k - g:

  rmse      sqrt(mean_k ||d_k||^2), and relative to ||g||;
  bias      ||mean_k d_k|| relative to ||g||, beside its noise floor sqrt(tr(S) / K) / ||g||
            (what ||mean_k d_k|| is expected to be for an unbiased estimator with sample
            covariance S);
  bias_sq   ||mean_k d_k||^2 - tr(S) / K = mean_{i != j} <d_i, d_j>, an unbiased estimate of
            ||E[estimate] - g||^2, which is zero exactly when the estimator is unbiased; with
            its jackknife standard error se, bias_sq <= 1.645 se (a one-sided 5% test, since
            ||bias||^2 >= 0) means the measured bias is indistinguishable from zero at this K.

Relative figures divide by ||g_query||, the norm of the query loss's gradient alone. The
training loss also holds the learner's regularization loss (CNAPs' FiLM penalty), whose
gradient all three computations (the true one, LITE, the sub-sampled task) take exactly, so
it cancels in every d_k; kept in the normaliser it would dominate it (Simple CNAPs at
initialisation: 7.750e-4 of ||g|| = 7.754e-4) and shrink every relative error.

The RMSE's bootstrap CI resamples the K draws (with replacement) through the K x K Gram matrix
of the differences, so no resampled gradient is ever formed.
"""

import dataclasses
import time

import numpy as np
import tensorflow as tf

from lite_tf import progress as progress_lib
from lite_tf.episode import Episode
from lite_tf.lite import estimator

ESTIMATORS = ('lite', 'sub_sampled')
PAPER_SUBSET_SIZES = (1, 5, 10, 20, 40, 60, 80, 100)


def sub_sampled_task(episode, chosen):
  """The task made of support rows `chosen` only, as numpy arrays.

  Classes absent from `chosen` leave the task (with their query images); the others are
  relabelled 0 .. way' - 1 in their original order.

  Args:
    episode: a dict of numpy arrays (support_images, support_labels, query_images,
      query_labels, way).
    chosen: [h] int row indices into the support set.
  """
  labels = np.asarray(episode['support_labels'])[chosen]
  present = np.unique(labels)
  relabel = np.full(int(episode['way']), -1, np.int32)
  relabel[present] = np.arange(len(present), dtype=np.int32)
  query_labels = np.asarray(episode['query_labels'])
  keep = np.isin(query_labels, present)
  return {
      'support_images': np.asarray(episode['support_images'])[chosen],
      'support_labels': relabel[labels],
      'query_images': np.asarray(episode['query_images'])[keep],
      'query_labels': relabel[query_labels[keep]],
      'way': np.int32(len(present)),
  }


def parameter_groups(variables):
  """{group name: [indices into variables]}, grouping by the path below the learner (its
  first two levels: 'conv4/block0_conv', 'set_encoder/conv0', 'film_generator/...'), plus
  'top/*' for every top level that holds deeper groups ('set_encoder/*': the whole set
  encoder). The two-level groups partition the variables; the 'top/*' ones overlap them."""
  groups, tops = {}, {}
  for i, v in enumerate(variables):
    parts = v.path.split('/')[:-1] or [v.path]
    groups.setdefault('/'.join(parts[:2]), []).append(i)
    if len(parts) > 1:
      tops.setdefault(f'{parts[0]}/*', []).append(i)
  groups.update(tops)
  return groups


def _flat(grads):
  return np.concatenate([np.reshape(np.asarray(g, np.float64), [-1]) for g in grads])


def _group_slices(variables, groups):
  sizes = [int(np.prod(v.shape)) for v in variables]
  offsets = np.concatenate([[0], np.cumsum(sizes)])
  return {name: np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in indices])
          for name, indices in groups.items()}


def error_statistics(gram, true_norm_sq, bootstrap=1000, seed=0):
  """RMSE and bias of K estimates from the Gram matrix of their errors.

  Args:
    gram: [K, K] float64, gram[i, j] = <d_i, d_j> with d_k = estimate_k - true gradient.
    true_norm_sq: ||true gradient||^2 over the same parameters.
    bootstrap: resamples for the RMSE's 95% CI (0: none).
  Returns:
    dict of floats (see the module docstring); relative figures divide by
    sqrt(true_norm_sq) (the study passes ||g_query||^2, penalty excluded).
  """
  k = gram.shape[0]

  def stats(weights):  # weights [B, K]: how often each draw is in a resample (sum K)
    diag = weights @ np.diag(gram) / k
    mean_sq = np.einsum('bi,ij,bj->b', weights, gram, weights) / k ** 2
    trace_cov = (weights @ np.diag(gram) - k * mean_sq) / max(k - 1, 1)
    return np.sqrt(np.maximum(diag, 0)), mean_sq, trace_cov, mean_sq - trace_cov / k

  rmse, mean_sq, trace_cov, bias_sq = (x[0] for x in stats(np.ones([1, k])))
  norm = np.sqrt(true_norm_sq) if true_norm_sq > 0 else np.nan
  out = {
      'rmse': float(rmse), 'relative_rmse': float(rmse / norm),
      'relative_bias': float(np.sqrt(max(mean_sq, 0)) / norm),
      'relative_bias_noise_floor': float(np.sqrt(max(trace_cov, 0) / k) / norm),
      'bias_sq': float(bias_sq), 'relative_bias_sq': float(bias_sq / norm ** 2),
      'true_norm': float(np.sqrt(true_norm_sq)), 'draws': int(k),
  }
  if bootstrap and k > 1:
    rng = np.random.RandomState(seed)
    weights = np.stack([np.bincount(rng.randint(0, k, k), minlength=k)
                        for _ in range(bootstrap)]).astype(np.float64)
    boot_rmse = stats(weights)[0]
    low, high = np.percentile(boot_rmse, [2.5, 97.5])
    out.update(relative_rmse_ci=[float(low / norm), float(high / norm)])
  if k > 2:
    # bias_sq is the U-statistic mean_{i != j} <d_i, d_j>; resampling with replacement pairs
    # draws with themselves and shifts it, so its CI comes from the jackknife (leave one out).
    off = gram - np.diag(np.diag(gram))
    total, rows = off.sum(), off.sum(axis=1)
    leave_one_out = (total - 2 * rows) / ((k - 1) * (k - 2))
    se = np.sqrt((k - 1) / k * np.sum((leave_one_out - leave_one_out.mean()) ** 2))
    low, high = bias_sq - 1.96 * se, bias_sq + 1.96 * se
    # ||bias||^2 >= 0, so only a clearly positive estimate is evidence of bias (one-sided 5%
    # test); a bias within float32 round-off (|H| = N is exact, up to the order of sums) counts
    # as zero too.
    consistent = bias_sq - 1.645 * se <= 0.0 or abs(bias_sq) <= 1e-7 * norm ** 2
    out.update(relative_bias_sq_ci=[float(low / norm ** 2), float(high / norm ** 2)],
               bias_consistent_with_zero=bool(consistent))
  return out


@dataclasses.dataclass
class GradientDraws:
  """The estimates of one study, ready for error_statistics: for each (estimator, |H|), the
  K x K Gram matrix of the errors per parameter group ('all' for every parameter)."""
  true_norm_sq: dict  # {group: ||g_query||^2}, the query loss's gradient (no penalty)
  grams: dict  # {(estimator, h): {group: [K, K]}}
  seconds: dict  # {(estimator, h): seconds for the K draws}


def draw_gradients(learner, episode, subset_sizes=PAPER_SUBSET_SIZES, draws=100,
                   chunk_size=40, query_batch_size=None, context_subset='independent',
                   seed=0, estimators=ESTIMATORS, progress=None):
  """Draws both estimators K times per |H| on one task; returns GradientDraws.

  Args:
    learner: a built lite_tf.learners.base.Learner.
    episode: a dict of numpy arrays (one task).
    subset_sizes: the |H| values; those above N are dropped, N itself is exact for both.
    draws: K.
    chunk_size: LITE's gradient-free chunk size.
    query_batch_size: LITE's query batch (default: the whole query set, one subset per task).
    context_subset: 'independent' or 'shared' (learners with a task context, see
      estimator.lite_task_gradients).
    seed: seeds the subset draws (numpy).
    progress: optional callable(message).
  """
  n = len(episode['support_labels'])
  num_query = len(episode['query_labels'])
  query_batch_size = query_batch_size or num_query
  num_batches = -(-num_query // query_batch_size)
  sizes = sorted({int(h) for h in subset_sizes if 1 <= int(h) <= n})
  if not sizes:
    raise ValueError(f'gradient_study.subset_sizes={list(subset_sizes)}: none lies in '
                     f'[1, N={n}]')
  variables = learner.trainable_variables
  groups = parameter_groups(variables)
  slices = _group_slices(variables, groups)
  full = Episode.from_numpy(episode['support_images'], episode['support_labels'],
                            episode['query_images'], episode['query_labels'],
                            int(episode['way']))
  true = _flat(tf.function(
      lambda: estimator.full_task_gradients(learner, full, variables)[1])())
  query_true = true - _flat(tf.function(lambda: penalty_gradients(learner, variables))())
  true_norm_sq = {'all': float(query_true @ query_true)}
  true_norm_sq.update({g: float(query_true[s] @ query_true[s]) for g, s in slices.items()})

  index_spec = tf.TensorSpec([None, None], tf.int32)

  @tf.function(input_signature=[index_spec, index_spec])
  def lite_fn(indices, context_indices):
    return estimator.lite_task_gradients(
        learner, full, variables, num_backprop=1, chunk_size=chunk_size,
        query_batch_size=query_batch_size, backprop_indices=indices,
        context_subset=context_subset,
        context_indices=context_indices if context_subset == 'independent' else None)[1]

  image_spec = tf.TensorSpec([None] + list(np.shape(episode['support_images'])[1:]),
                             tf.as_dtype(np.asarray(episode['support_images']).dtype))
  label_spec = tf.TensorSpec([None], tf.int32)

  @tf.function(input_signature=[image_spec, label_spec, image_spec, label_spec,
                                tf.TensorSpec([], tf.int32)])
  def sub_fn(support_images, support_labels, query_images, query_labels, way):
    task = Episode(support_images, support_labels, query_images, query_labels, way)
    return estimator.full_task_gradients(learner, task, variables)[1]

  rng = np.random.RandomState(seed)
  grams, seconds = {}, {}
  shown = progress_lib.Progress(len(sizes) * len(estimators) * draws, 'gradient study',
                                'gradients')
  for h in sizes:
    subsets = [[rng.permutation(n)[:h] for _ in range(num_batches)] for _ in range(draws)]
    context = [[rng.permutation(n)[:h] for _ in range(num_batches)] for _ in range(draws)]
    for name in estimators:
      start = time.perf_counter()
      errors = np.empty([draws, true.size], np.float32)
      for k in range(draws):
        if name == 'lite':
          grads = lite_fn(tf.constant(np.stack(subsets[k]), tf.int32),
                          tf.constant(np.stack(context[k]), tf.int32))
        else:
          task = sub_sampled_task(episode, subsets[k][0])
          grads = sub_fn(task['support_images'], task['support_labels'],
                         task['query_images'], task['query_labels'], task['way'])
        errors[k] = _flat(grads) - true
        shown.update(shown.done + 1)
      grams[(name, h)] = {'all': _gram(errors)}
      grams[(name, h)].update({g: _gram(errors[:, s]) for g, s in slices.items()})
      seconds[(name, h)] = time.perf_counter() - start
      if progress:
        progress(f'{name} |H|={h}: {draws} draws in {seconds[(name, h)]:.1f} s')
  shown.close()
  return GradientDraws(true_norm_sq, grams, seconds)


def penalty_gradients(learner, variables):
  """The gradient of learner.regularization_loss() (the part of the true gradient that every
  estimator computes exactly), dense, aligned with `variables`."""
  with tf.GradientTape() as tape:
    penalty = learner.regularization_loss()
  return estimator.dense_gradients(tape.gradient(penalty, variables), variables)


def _gram(errors):
  e = errors.astype(np.float64)
  return e @ e.T


def summarize(draws, bootstrap=1000, seed=0):
  """Rows {estimator, subset_size, group, **error_statistics, seconds} of a GradientDraws."""
  rows = []
  for (name, h), per_group in sorted(draws.grams.items()):
    for group, gram in per_group.items():
      row = {'estimator': name, 'subset_size': h, 'group': group,
             'seconds': draws.seconds[(name, h)]}
      row.update(error_statistics(gram, draws.true_norm_sq[group], bootstrap, seed))
      rows.append(row)
  return rows
