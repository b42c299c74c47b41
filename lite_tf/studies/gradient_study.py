"""bin/gradient_study.py's work: LITE against sub-sampled tasks on one task, as CSV, JSON and a
Fig. 4-style PNG (relative RMSE of the meta-gradient against |H|, log scale)."""

import csv
import io
import itertools
import json
import os

from absl import logging
import gin
import numpy as np

from lite_tf import atomic
from lite_tf import checks
from lite_tf.data import adapters
from lite_tf.learners import base as learner_base
from lite_tf.lite import estimator
from lite_tf.studies import gradient_error
from lite_tf.training import checkpoints
from lite_tf.training import train

CSV_COLUMNS = ('estimator', 'subset_size', 'group', 'relative_rmse', 'relative_rmse_ci_low',
               'relative_rmse_ci_high', 'relative_bias', 'relative_bias_noise_floor',
               'relative_bias_sq', 'relative_bias_sq_ci_low', 'relative_bias_sq_ci_high',
               'bias_consistent_with_zero', 'rmse', 'true_norm', 'draws', 'seconds')


# What the relative figures divide by (gradient_error: the penalty cancels in the errors).
RELATIVE_TO = 'query_loss_gradient'
# setting['query_norm_from'] of a study re-normalised by resummarize.
ONE_IMAGE_TASK = 'one_image_sub_sampled_task'


def _episode(episode_source, split, index):
  source = adapters.make_episode_source(episode_source, split)
  if hasattr(source, 'episode'):
    episode = source.episode(index)
  else:
    episode = next(itertools.islice(source.episodes(), index, None), None)
    if episode is None:
      raise ValueError(f'gradient_study.episode_index={index}: the {split} source has fewer '
                       'episodes')
  return {k: np.asarray(v) for k, v in episode.items()}


@gin.configurable('gradient_study')
def run_gradient_study(output_dir, learner=gin.REQUIRED, episode_source=train.glyph_episodes,
                       split='train', episode_index=0, learner_weights=None,
                       subset_sizes=gradient_error.PAPER_SUBSET_SIZES, draws=100,
                       chunk_size=40, query_batch_size=None, context_subset='independent',
                       seed=0, bootstrap=1000):
  """Runs the study on episode `episode_index` of `episode_source(split)`; writes
  output_dir/gradient_study.{json,csv,png} and the errors' Gram matrices
  (gradient_study_grams.npz); returns the rows (gradient_error.summarize).

  Args:
    learner: a lite_tf.learners.base.Learner (gin: `gradient_study.learner = @protonets()`).
    learner_weights: optional .weights.h5 of this learner (bin/train.py's learner.weights.h5);
      default: the learner as initialised (--seed).
    subset_sizes, draws, chunk_size, query_batch_size, context_subset, seed: see
      gradient_error.draw_gradients.
    bootstrap: resamples of the K draws for the 95% CIs.
  """
  if not isinstance(learner, learner_base.Learner):
    raise ValueError(f'gradient_study.learner must be a LITE learner (ProtoNets, CNAPs, Simple '
                     f'CNAPs); got {type(learner).__name__}')
  if isinstance(draws, bool) or not isinstance(draws, int) or draws < 2:
    raise ValueError(f'gradient_study.draws must be an integer >= 2; got {draws!r}')
  checks.require_int('gradient_study.episode_index', episode_index, 0)
  checks.require_int('gradient_study.chunk_size', chunk_size, 1)
  checks.require_int('gradient_study.bootstrap', bootstrap, 1)
  if query_batch_size is not None:
    checks.require_int('gradient_study.query_batch_size', query_batch_size, 1)
  if context_subset not in estimator.CONTEXT_SUBSETS:
    raise ValueError(f'gradient_study.context_subset must be one of '
                     f'{list(estimator.CONTEXT_SUBSETS)}; got {context_subset!r}')
  for h in subset_sizes:
    checks.require_int('gradient_study.subset_sizes entries', h, 1)
  train.check_writable_dir(output_dir, '--output_dir')
  episode = _episode(episode_source, split, episode_index)
  n = len(episode['support_labels'])
  above = sorted(int(h) for h in subset_sizes if int(h) > n)
  if above and tuple(subset_sizes) != tuple(gradient_error.PAPER_SUBSET_SIZES):
    raise ValueError(f'gradient_study.subset_sizes {above} exceed the task\'s N = {n} support '
                     'images (|H| = N is exact; larger sizes would not be studied)')
  if above:
    logging.info('gradient study: the paper\'s |H| values %s exceed N = %d and are left out',
                 above, n)
  first = gradient_error.sub_sampled_task(episode,
                                          np.arange(min(2, len(episode['support_labels']))))
  learner(_episode_dict(first))  # builds every layer
  if learner_weights:
    checkpoints.load_learner_weights(learner, learner_weights)
  n = len(episode['support_labels'])
  logging.info('gradient study: %s, %d-way task, N=%d support, %d query images, K=%d',
               type(learner).__name__, int(episode['way']), n, len(episode['query_labels']),
               draws)
  draws_ = gradient_error.draw_gradients(
      learner, episode, subset_sizes, draws, chunk_size, query_batch_size, context_subset,
      seed, progress=lambda m: logging.info('%s', m))
  rows = gradient_error.summarize(draws_, bootstrap, seed)
  setting = {
      'learner': type(learner).__name__, 'context_subset': context_subset,
      'has_context': learner.has_context, 'way': int(episode['way']), 'support_size': n,
      'query_size': len(episode['query_labels']),
      'image_size': int(episode['support_images'].shape[1]), 'draws': draws,
      'chunk_size': chunk_size, 'query_batch_size': query_batch_size,
      'seed': seed, 'bootstrap': bootstrap, 'learner_weights': learner_weights,
      'split': split, 'episode_index': episode_index,
      'parameters': int(sum(np.prod(v.shape) for v in learner.trainable_variables)),
      'relative_to': RELATIVE_TO,
  }
  write_report(rows, setting, output_dir)
  # The Gram matrices of the errors: every statistic above can be recomputed from them.
  _save_grams(output_dir, draws_.grams, draws_.true_norm_sq)
  return rows


def _save_grams(output_dir, grams, true_norm_sq):
  with atomic.atomic_path(os.path.join(output_dir, 'gradient_study_grams.npz'),
                          suffix='.npz') as tmp:
    np.savez_compressed(tmp, **{f'{name}/{h}/{group}': gram
                                for (name, h), groups in grams.items()
                                for group, gram in groups.items()},
                        **{f'true_norm_sq/{group}': np.float64(v)
                           for group, v in true_norm_sq.items()})


def resummarize(output_dir, bootstrap=None, seed=None):
  """Recomputes a finished study's statistics from its gradient_study_grams.npz (no gradient
  is drawn again) and rewrites gradient_study.{json,csv,png}; returns the rows."""
  with open(os.path.join(output_dir, 'gradient_study.json'), encoding='utf-8') as f:
    setting = json.load(f)['setting']
  grams_path = os.path.join(output_dir, 'gradient_study_grams.npz')
  if not os.path.exists(grams_path):
    raise ValueError(f'--from_grams: {grams_path} does not exist (written by a study run)')
  saved = np.load(grams_path)
  true_norm_sq = {k.split('/', 1)[1]: float(saved[k]) for k in saved.files
                  if k.startswith('true_norm_sq/')}
  grams, seconds = {}, {}
  for key in saved.files:
    if key.startswith('true_norm_sq/'):
      continue
    name, h, group = key.split('/', 2)
    grams.setdefault((name, int(h)), {})[group] = saved[key]
  if ((setting['has_context'] and setting.get('relative_to') != RELATIVE_TO)
      or setting.get('query_norm_from') == ONE_IMAGE_TASK):
    # Saved before 'relative_to': its grams file keeps the old norms (not rewritten: tens of
    # MB), the setting says where the query loss's norms come from on every recomputation.
    true_norm_sq = _query_norms_from_one_image_task(grams, output_dir)
    setting = dict(setting, relative_to=RELATIVE_TO, query_norm_from=ONE_IMAGE_TASK)
  with open(os.path.join(output_dir, 'gradient_study.json'), encoding='utf-8') as f:
    for r in json.load(f)['results']:
      seconds[(r['estimator'], r['subset_size'])] = r['seconds']
  rows = gradient_error.summarize(
      gradient_error.GradientDraws(true_norm_sq, grams, seconds),
      setting['bootstrap'] if bootstrap is None else bootstrap,
      setting['seed'] if seed is None else seed)
  write_report(rows, setting, output_dir)
  return rows


def _query_norms_from_one_image_task(grams, output_dir):
  """{group: ||g_query||^2} for a study saved before 'relative_to', whose true_norm_sq held
  the FiLM penalty's gradient too. A one-image sub-sampled task has one class and a query
  loss of exactly 0, so its gradient is the penalty's and its error every draw is exactly
  -g_query: the diagonal of its Gram matrix is ||g_query||^2 per group."""
  one_image = grams.get(('sub_sampled', 1))
  if one_image is None:
    raise ValueError(f'--from_grams: {output_dir} saved the norm of the gradient with the '
                     'regularization penalty in it and has no |H| = 1 sub-sampled draws to '
                     'recover the query loss\'s from; re-run the study')
  return {group: float(gram[0, 0]) for group, gram in one_image.items()}


def _episode_dict(episode):
  """A numpy episode dict as the learner's call takes it."""
  from lite_tf.episode import Episode  # pylint: disable=g-import-not-at-top
  return Episode.from_numpy(episode['support_images'], episode['support_labels'],
                            episode['query_images'], episode['query_labels'],
                            int(episode['way'])).to_dict()


def _csv_row(row):
  out = {k: row.get(k) for k in CSV_COLUMNS}
  for name in ('relative_rmse', 'relative_bias_sq'):
    low, high = row.get(f'{name}_ci') or (None, None)
    out[f'{name}_ci_low'], out[f'{name}_ci_high'] = low, high
  return out


def write_report(rows, setting, output_dir):
  atomic.write_json(os.path.join(output_dir, 'gradient_study.json'),
                    {'setting': setting, 'results': rows}, indent=1)
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
  writer.writeheader()
  writer.writerows(_csv_row(r) for r in rows)
  atomic.write_text(os.path.join(output_dir, 'gradient_study.csv'), buffer.getvalue())
  plot(rows, setting, os.path.join(output_dir, 'gradient_study.png'))


def plot(rows, setting, path):
  """Relative RMSE (with bootstrap 95% CIs) and relative bias against |H|, both estimators,
  all parameters, log scale."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, (ax_rmse, ax_bias) = plt.subplots(1, 2, figsize=(9, 3.8))
  styles = {'lite': ('LITE', '#c44e52', 'o'), 'sub_sampled': ('sub-sampled task', '#4c72b0', 's')}
  for name, (label, colour, marker) in styles.items():
    chosen = sorted((r for r in rows if r['estimator'] == name and r['group'] == 'all'),
                    key=lambda r: r['subset_size'])
    if not chosen:
      continue
    h = np.array([r['subset_size'] for r in chosen])
    # |H| = N is exact for both estimators: error at float round-off, off a log scale.
    floor = 1e-7
    rmse = np.maximum([r['relative_rmse'] for r in chosen], floor)
    ci = np.array([r.get('relative_rmse_ci') or [r['relative_rmse']] * 2 for r in chosen])
    ax_rmse.errorbar(h, rmse, yerr=[np.maximum(rmse - np.maximum(ci[:, 0], floor), 0),
                                    np.maximum(ci[:, 1] - rmse, 0)],
                     label=label, color=colour, marker=marker, capsize=3)
    # Zeros (exact estimates, a 1-way task's zero gradient) have no place on a log scale.
    def shown(key):
      values = np.array([r[key] for r in chosen], np.float64)
      return np.where(values > floor, values, np.nan)
    ax_bias.plot(h, shown('relative_bias'), label=label, color=colour, marker=marker)
    ax_bias.plot(h, shown('relative_bias_noise_floor'), color=colour, linestyle=':',
                 label=f'{label}: noise floor')
  for ax, ylabel in ((ax_rmse, 'RMSE / ||true gradient||'),
                     (ax_bias, '||mean error|| / ||true gradient||')):
    ax.set_yscale('log')
    ax.set_xlabel('|H| (support images back-propagated)')
    ax.set_ylabel(ylabel)
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=7)
  subset = f", context subset '{setting['context_subset']}'" if setting.get('has_context') else ''
  fig.suptitle(f"{setting['learner']}{subset}: {setting['way']}-way, |D_S| = "
               f"{setting['support_size']}, {setting['image_size']}x{setting['image_size']}, "
               f"K = {setting['draws']}", fontsize=10)
  fig.tight_layout()
  with atomic.atomic_path(path, suffix='.png') as tmp:
    fig.savefig(tmp, format='png', dpi=120)
  plt.close(fig)
