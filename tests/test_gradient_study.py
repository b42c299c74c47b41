"""The gradient study (lite_tf.studies.gradient_error, bin/gradient_study.py): its statistics
against direct computation, the sub-sampled task, and a run of the binary whose LITE rows are
unbiased and exact at |H| = N."""

import csv
import json
import os

import numpy as np
import pytest

import keras
import tensorflow as tf

from conftest import REPO_ROOT
from conftest import run_binary
from conftest import small_episode
from lite_tf.learners import simple_cnaps
from lite_tf.learners.base import mean_cross_entropy
from lite_tf.studies import gradient_error


def _gram(errors):
  return errors @ errors.T


def test_error_statistics_match_direct_computation():
  rng = np.random.RandomState(0)
  true = rng.normal(size=50)
  estimates = true + 0.3 + rng.normal(size=(40, 50))  # biased by 0.3 per coordinate
  errors = estimates - true
  stats = gradient_error.error_statistics(_gram(errors), float(true @ true), bootstrap=200)
  norm = np.linalg.norm(true)
  rmse = np.sqrt(np.mean(np.sum(errors ** 2, axis=1)))
  mean = errors.mean(axis=0)
  trace_cov = np.sum(np.var(errors, axis=0, ddof=1))
  assert stats['relative_rmse'] == pytest.approx(rmse / norm)
  assert stats['relative_bias'] == pytest.approx(np.linalg.norm(mean) / norm)
  assert stats['relative_bias_noise_floor'] == pytest.approx(np.sqrt(trace_cov / 40) / norm)
  assert stats['bias_sq'] == pytest.approx(mean @ mean - trace_cov / 40)
  low, high = stats['relative_rmse_ci']
  assert low < stats['relative_rmse'] < high
  # ||bias||^2 = 50 * 0.09 = 4.5 against noise 50 / 40 per draw: clearly not zero.
  assert stats['bias_sq'] == pytest.approx(4.5, rel=0.5)
  assert not stats['bias_consistent_with_zero']


def test_unbiased_noise_is_consistent_with_zero_bias():
  rng = np.random.RandomState(1)
  true = rng.normal(size=200)
  errors = rng.normal(size=(100, 200))  # zero-mean
  stats = gradient_error.error_statistics(_gram(errors), float(true @ true), bootstrap=500)
  assert stats['bias_consistent_with_zero']
  # The raw ||mean error|| is not zero, but sits on its noise floor.
  assert stats['relative_bias'] == pytest.approx(stats['relative_bias_noise_floor'], rel=0.2)


def test_sub_sampled_task_keeps_present_classes_and_their_queries():
  episode = {'support_images': np.arange(6)[:, None, None, None] * np.ones((6, 2, 2, 3)),
             'support_labels': np.array([0, 1, 2, 0, 1, 2], np.int32),
             'query_images': np.arange(10, 16)[:, None, None, None] * np.ones((6, 2, 2, 3)),
             'query_labels': np.array([2, 1, 0, 2, 1, 0], np.int32), 'way': np.int32(3)}
  task = gradient_error.sub_sampled_task(episode, np.array([5, 3]))
  assert task['way'] == 2
  np.testing.assert_array_equal(task['support_labels'], [1, 0])  # class 2 -> 1, class 0 -> 0
  np.testing.assert_array_equal(task['support_images'][:, 0, 0, 0], [5, 3])
  np.testing.assert_array_equal(task['query_images'][:, 0, 0, 0], [10, 12, 13, 15])
  np.testing.assert_array_equal(task['query_labels'], [1, 0, 1, 0])


@pytest.fixture(scope='module')
def study(tmp_path_factory, glyph_cache):
  out = tmp_path_factory.mktemp('gradient_study')
  proc = run_binary('gradient_study.py',
                    f"--gin_config={os.path.join(REPO_ROOT, 'gin', 'gradient_study.gin')}",
                    f'--output_dir={out}', '--gin_bindings=IMAGE_SIZE = 16',
                    f"--gin_bindings=glyph_episodes.cache_dir = '{glyph_cache}'",
                    '--gin_bindings=glyph_episodes.way = 3',
                    '--gin_bindings=glyph_episodes.shot = 4',
                    '--gin_bindings=glyph_episodes.query_shot = 3',
                    '--gin_bindings=gradient_study.subset_sizes = [1, 4, 12]',
                    '--gin_bindings=gradient_study.draws = 30',
                    '--gin_bindings=gradient_study.chunk_size = 5',
                    '--gin_bindings=gradient_study.bootstrap = 300')
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out / 'gradient_study.json', encoding='utf-8') as f:
    return out, json.load(f)


def _rows(study_json, estimator, group='all'):
  return {r['subset_size']: r for r in study_json['results']
          if r['estimator'] == estimator and r['group'] == group}


def test_study_binary_writes_both_estimators_for_every_size_and_group(study):
  out, result = study
  assert result['setting']['support_size'] == 12 and result['setting']['way'] == 3
  groups = {r['group'] for r in result['results']}
  assert 'all' in groups and 'conv4/*' in groups
  assert any(g.startswith('conv4/block') for g in groups)
  for estimator in gradient_error.ESTIMATORS:
    assert sorted(_rows(result, estimator)) == [1, 4, 12]
  with open(out / 'gradient_study.csv', encoding='utf-8') as f:
    assert len(list(csv.DictReader(f))) == len(result['results'])
  assert (out / 'gradient_study.png').stat().st_size > 10_000


def test_lite_is_unbiased_and_exact_at_the_whole_support_set(study):
  _, result = study
  lite = _rows(result, 'lite')
  for h in (1, 4):
    assert lite[h]['bias_consistent_with_zero'], lite[h]
    assert lite[h]['relative_rmse'] > 1e-3  # a real estimate, not the true gradient
  assert lite[12]['relative_rmse'] < 1e-4
  assert _rows(result, 'sub_sampled')[12]['relative_rmse'] < 1e-4
  # Per-group figures add up: the groups' squared RMSEs sum to the whole.
  groups = [r for r in result['results'] if r['estimator'] == 'lite' and r['subset_size'] == 4
            and r['group'] != 'all' and not r['group'].endswith('/*')]
  assert sum(r['rmse'] ** 2 for r in groups) == pytest.approx(lite[4]['rmse'] ** 2, rel=1e-6)


def test_one_image_sub_sampled_task_has_zero_gradient(study):
  """One support image makes a one-class task: its loss, and so its gradient, is zero: the
  estimate's error is the whole true gradient, a bias no draw can remove."""
  _, result = study
  row = _rows(result, 'sub_sampled')[1]
  assert row['relative_rmse'] == pytest.approx(1.0, abs=1e-6)
  assert row['relative_bias'] == pytest.approx(1.0, abs=1e-6)
  assert not row['bias_consistent_with_zero']


def test_statistics_recomputed_from_the_saved_grams_match(study):
  out, result = study
  proc = run_binary('gradient_study.py', f'--output_dir={out}', '--from_grams')
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out / 'gradient_study.json', encoding='utf-8') as f:
    again = json.load(f)
  key = lambda r: (r['estimator'], r['subset_size'], r['group'])
  assert sorted(again['results'], key=key) == sorted(result['results'], key=key)


@pytest.fixture(scope='module')
def penalised_simple_cnaps():
  """Simple CNAPs whose FiLM penalty's gradient dominates the true gradient, its task, and
  the squared norms of its query loss's and penalty's gradients."""
  keras.utils.set_random_seed(1)
  learner = simple_cnaps.SimpleCnaps(backbone='conv4', image_size=16, set_encoder_norm='none',
                                     regularization_weight=10.0)
  episode = small_episode()
  learner(episode.to_dict())
  variables = learner.trainable_variables
  with tf.GradientTape(persistent=True) as tape:
    query_loss = mean_cross_entropy(learner(episode.to_dict()), episode.query_labels)
    penalty = learner.regularization_loss()
  norms = [sum(float(tf.reduce_sum(tf.square(g))) for g in tape.gradient(loss, variables)
               if g is not None) for loss in (query_loss, penalty)]
  numpy_episode = {'support_images': episode.support_images.numpy(),
                   'support_labels': episode.support_labels.numpy(),
                   'query_images': episode.query_images.numpy(),
                   'query_labels': episode.query_labels.numpy(), 'way': np.int32(3)}
  return learner, numpy_episode, norms


def test_a_study_saved_with_the_penalty_in_the_norm_is_renormalised_from_its_grams(
    penalised_simple_cnaps, tmp_path):
  """A study saved before 'relative_to' (its ||g||^2 with the penalty's gradient in it) is
  recomputed by --from_grams relative to the query loss's gradient, whose squared norm is the
  one-image sub-sampled task's squared error (its query loss is 0), every time."""
  from lite_tf.studies import gradient_study  # pylint: disable=g-import-not-at-top
  learner, episode, (query_norm_sq, _) = penalised_simple_cnaps
  draws = gradient_error.draw_gradients(learner, episode, subset_sizes=[1, 3], draws=3,
                                        chunk_size=3)
  with_penalty = {g: v * 100.0 for g, v in draws.true_norm_sq.items()}  # as the old norm
  stale = gradient_error.GradientDraws(with_penalty, draws.grams, draws.seconds)
  rows = gradient_error.summarize(stale, bootstrap=0)
  setting = {'learner': 'SimpleCnaps', 'context_subset': 'independent', 'has_context': True,
             'way': 3, 'support_size': 6, 'query_size': 7, 'image_size': 16, 'draws': 3,
             'chunk_size': 3, 'query_batch_size': None, 'seed': 0, 'bootstrap': 0}
  gradient_study.write_report(rows, setting, str(tmp_path))
  gradient_study._save_grams(str(tmp_path), draws.grams, with_penalty)  # pylint: disable=protected-access
  again = gradient_study.resummarize(str(tmp_path))
  one = [r for r in again if r['estimator'] == 'sub_sampled' and r['subset_size'] == 1
         and r['group'] == 'all'][0]
  assert one['relative_rmse'] == pytest.approx(1.0, abs=1e-4)
  assert one['true_norm'] ** 2 == pytest.approx(query_norm_sq, rel=1e-4)
  fresh = {(r['estimator'], r['subset_size'], r['group']): r['relative_rmse']
           for r in gradient_error.summarize(draws, bootstrap=0)}
  for r in again:
    assert r['relative_rmse'] == pytest.approx(
        fresh[(r['estimator'], r['subset_size'], r['group'])], rel=1e-3), r
  with open(tmp_path / 'gradient_study.json', encoding='utf-8') as f:
    assert json.load(f)['setting']['relative_to'] == 'query_loss_gradient'
  # The grams file is left as it was; a second --from_grams re-normalises the same way.
  assert gradient_study.resummarize(str(tmp_path)) == again


def test_errors_are_relative_to_the_query_loss_gradient_without_the_penalty(
    penalised_simple_cnaps):
  """Simple CNAPs with a FiLM penalty whose gradient dominates the true gradient: every
  estimator takes the penalty's gradient exactly, so ||g|| is the query loss's alone. A
  one-image sub-sampled task (one class, query loss 0) then misses by exactly that ||g||:
  relative RMSE and bias 1 (with the penalty in the norm they would be far below 1)."""
  learner, episode, (query_norm_sq, penalty_norm_sq) = penalised_simple_cnaps
  draws = gradient_error.draw_gradients(learner, episode, subset_sizes=[1], draws=3,
                                        chunk_size=3, estimators=('sub_sampled',))
  assert penalty_norm_sq > 10 * query_norm_sq  # the penalty would dominate ||g||
  assert draws.true_norm_sq['all'] == pytest.approx(query_norm_sq, rel=1e-4)
  row = [r for r in gradient_error.summarize(draws, bootstrap=0) if r['group'] == 'all'][0]
  assert row['relative_rmse'] == pytest.approx(1.0, abs=1e-4)
  assert row['relative_bias'] == pytest.approx(1.0, abs=1e-4)
