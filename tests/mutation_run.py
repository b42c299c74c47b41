"""`make mutation`: mutmut 3 over the estimator, ORBIT's metrics, the learners' heads and
LiteModel, one group of files at a time, each with its own fast test selection
(docs/MUTATION_TESTING.md). Not part of the test suite (pytest collects test_*.py only).

Usage (mutmut importable, e.g. PYTHONPATH=<dir of `pip install --target` mutmut==3.8.1>):

  python tests/mutation_run.py [--max_children=N] GROUP [GROUP ...]

Each group runs in build/mutation/GROUP, a copy of lite_tf/, tests/ and gin/ with the group's
setup.cfg for mutmut; `mutmut results` and `mutmut show NAME` work there afterwards, and
build/mutation/GROUP/summary.json holds every mutant's status. A mutant's tests (those that
called the mutated function in mutmut's stats run) run fastest first, with -x.
"""

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK_ROOT = os.path.join(REPO_ROOT, 'build', 'mutation')

_LITE_PATHS = 'tests/test_lite_paths.py::'
_CNAPS = 'tests/test_cnaps.py::'
_ESTIMATOR = 'tests/test_lite_estimator.py::'
_MODEL = 'tests/test_lite_model.py::'

# group: (files to mutate, pytest arguments selecting its tests).
GROUPS = {
    'estimator': (
        ['lite_tf/lite/estimator.py'],
        ['tests/test_lite_estimator.py', 'tests/test_lite_draws.py',
         'tests/test_loss_accounting.py', 'tests/test_mutation_kills.py',
         _LITE_PATHS + 'test_while_loop_branch_equals_eager_and_the_full_gradient',
         _LITE_PATHS + 'test_unequal_query_batches_with_a_subset_agree_across_paths'
         '[None-unrolled]',
         _LITE_PATHS + 'test_recompute_with_more_micro_batches_than_rows_skips_the_empty_ones'
         '[loop]',
         _LITE_PATHS + 'test_chunked_map_of_no_rows_never_calls_the_network_on_an_empty_batch',
         _CNAPS + 'test_backprop_whole_support_set_is_exact',
         _CNAPS + 'test_default_lite_is_the_full_forward_and_unbiased_over_all_subset_pairs'
         '[cnaps]',
         _CNAPS + 'test_set_encoder_task_statistics_are_the_whole_context_sets[cnaps]',
         _CNAPS + 'test_default_adaptation_in_chunks_is_the_one_pass_forward[cnaps]',
         # H_c's recomputation (issue #31): the context path's recompute branch.
         _CNAPS + 'test_default_recomputation_recomputes_the_context_subset_too[cnaps]',
         _CNAPS + 'test_a_batch_normalised_set_encoder_is_not_recomputed',
         '--deselect',
         _ESTIMATOR + 'test_random_subsets_depend_on_seed_and_average_towards_full']),
    'orbit_metrics': (
        ['lite_tf/training/orbit_metrics.py'],
        ['tests/test_orbit_metrics.py', 'tests/test_mutation_kills.py']),
    'heads': (
        ['lite_tf/learners/protonets.py', 'lite_tf/learners/cnaps.py',
         'lite_tf/learners/simple_cnaps.py', 'lite_tf/learners/base.py'],
        [_CNAPS + 'test_mahalanobis_logits_match_numpy',
         _CNAPS + 'test_one_shot_class_covariance_is_a_matrix',
         _CNAPS + 'test_solvers_give_the_same_gradients',
         _CNAPS + 'test_generated_film_shapes_and_frozen_backbone',
         _CNAPS + 'test_film_starts_near_identity',
         _CNAPS + 'test_backprop_whole_support_set_is_exact',
         _CNAPS + 'test_set_encoder_task_statistics_are_the_whole_context_sets',
         _CNAPS + 'test_default_adaptation_in_chunks_is_the_one_pass_forward',
         _CNAPS + 'test_lite_model_scales_the_penalty_by_the_tasks_of_a_step',
         _ESTIMATOR + 'test_average_over_all_subsets_equals_full_gradient',
         _ESTIMATOR + 'test_backprop_whole_support_set_is_exact',
         _ESTIMATOR + 'test_adapt_and_predict_matches_one_forward_pass',
         'tests/test_clip_pooling.py', 'tests/test_mutation_kills.py']),
    # Second passes: a group's survivors (--mutants) against the tests written for them.
    'estimator_kills': (['lite_tf/lite/estimator.py'],
                        ['tests/test_mutation_kills.py', 'tests/test_loss_accounting.py',
                         'tests/test_lite_estimator.py::test_graph_mode_matches_eager',
                         'tests/test_lite_paths.py::test_while_loop_branch_equals_eager_and_the_'
                         'full_gradient']),
    'orbit_metrics_kills': (['lite_tf/training/orbit_metrics.py'],
                            ['tests/test_mutation_kills.py']),
    'model': (
        ['lite_tf/lite/model.py'],
        ['tests/test_lite_model.py', 'tests/test_mutation_kills.py',
         'tests/test_loss_accounting.py::test_lite_model_passes_the_options_and_names_the_binding',
         _CNAPS + 'test_lite_model_scales_the_penalty_by_the_tasks_of_a_step',
         '--deselect', _MODEL + 'test_fit_with_the_usual_keras_callbacks',
         '--deselect', _MODEL + 'test_fit_reduces_training_loss']),
}

# Imported by mutmut's fork server before it forks a mutant's process. Not `pytest
# --collect-only` (mutmut's default): collecting these tests starts TensorFlow's runtime, whose
# threads a forked process lacks, and every mutant's tests then hang.
_PRELOAD = ('numpy', 'tensorflow', 'keras', 'gin', 'pytest', 'lite_tf.episode',
            'lite_tf.lite.estimator', 'lite_tf.lite.model', 'lite_tf.learners.protonets',
            'lite_tf.learners.cnaps', 'lite_tf.learners.simple_cnaps',
            'lite_tf.training.orbit_metrics')

# The *_kills groups: a first pass's survivors against the tests written for them, each
# function's mutants against the tests aimed at it (the others of test_mutation_kills.py that
# call the function do not run).
_KILLS = 'tests/test_mutation_kills.py::'
_GRAPH = 'tests/test_lite_estimator.py::test_graph_mode_matches_eager'
_WHILE = 'tests/test_lite_paths.py::test_while_loop_branch_equals_eager_and_the_full_gradient'
_STEPS = [_KILLS + 'test_single_image_subsets_average_to_the_full_gradient',
          _KILLS + 'test_lite_step_is_the_full_forward_with_either_statistics',
          _KILLS + 'test_recomputed_lite_steps_are_the_plain_ones']
_ADAPTATION = [_KILLS + 'test_test_time_adaptation_is_the_one_pass_forward']
_RECOMPUTE = [_KILLS + 'test_recomputed_rows_value_and_gradients_with_an_unknown_number_of_rows',
              _KILLS + 'test_recomputed_rows_default_mode_and_refusals',
              _KILLS + 'test_looped_gradients_are_summed_in_float32_or_better']
_CONTEXT = [_KILLS + 'test_shipped_context_learner_is_the_full_forward',
            _KILLS + 'test_given_context_subsets_are_the_ones_back_propagated',
            _KILLS + 'test_draws_are_the_documented_fold_ins',
            _KILLS + 'test_refusals_of_a_learner_with_a_task_context']
_REFUSALS = [_KILLS + 'test_bad_lite_arguments_are_refused_with_their_message',
             _KILLS + 'test_refusals_of_a_learner_with_a_task_context']
_TRACED = ('tests/test_traced_step.py::'
           'test_a_traced_step_traces_one_query_batch_whatever_their_number')
TESTS_BY_FUNCTION = {
    'x_adapt_task': _ADAPTATION, 'x_adapted_query_logits': _ADAPTATION,
    'x_adapted_query_features': _ADAPTATION + [_KILLS + 'test_adapted_query_features_carry'],
    'x_adapted_logits_from_features': _ADAPTATION,
    'x_adapt_and_predict': _ADAPTATION,
    'x_servable_state': [_KILLS + 'test_servable_state_gives_the_same_logits_through_the_inverse'],
    'x_recomputed_rows': _RECOMPUTE, 'x__unrolled_recomputed_rows': _RECOMPUTE,
    'x__looped_recomputed_rows': _RECOMPUTE, 'x__looped_forward': _RECOMPUTE,
    'x__looped_backward': _RECOMPUTE, 'x__accumulator_dtype': _RECOMPUTE,
    'x_full_task_gradients': [
        _KILLS + 'test_full_task_gradients_is_the_loss_with_its_penalty_and_loss_scale'],
    'x__context_subset': _CONTEXT, 'x__task_context': _CONTEXT,
    'x__cache_task_constants': _CONTEXT + [
        _KILLS + 'test_lite_step_is_the_full_forward_with_either_statistics'],
    'x__query_objective': [_KILLS + 'test_recomputed_lite_steps_are_the_plain_ones', _GRAPH],
    'x__query_batch_in': [_KILLS + 'test_single_image_subsets_average_to_the_full_gradient',
                          _KILLS + 'test_lite_step_is_the_full_forward_with_either_statistics',
                          _GRAPH, 'tests/test_loss_accounting.py::'] + _CONTEXT,
    'x__query_batch': ['tests/test_loss_accounting.py::'],
    'x__all_query_batches': [_GRAPH, _WHILE, _KILLS + 'test_lite_step_is_the_full_forward',
                             _KILLS + 'test_later_query_batches_reuse_the_cache_and_count_the_'
                             'penalty_once', _TRACED, 'tests/test_loss_accounting.py::'],
    'x__task_cache': [_KILLS + 'test_lite_step_is_the_full_forward', _TRACED] + _CONTEXT,
    'x__filled_support': [_KILLS + 'test_later_query_batches_reuse_the_cache_and_count_the_'
                          'penalty_once', _WHILE, _TRACED],
    'x__support_contributions': [_KILLS + 'test_recomputed_lite_steps_are_the_plain_ones'],
    'x__check_arguments': _REFUSALS,
    'x_disable_grappler_add_rewrite': [_KILLS + 'test_grappler_add_rewrite_is_turned_off_once'],
    'x_lite_task_objective': _STEPS + _CONTEXT + _REFUSALS + [_GRAPH, 'tests/test_loss_accounting.py::'],
    'x__backprop_subset': _STEPS + [_KILLS + 'test_draws_are_the_documented_fold_ins'],
}

_SETUP_CFG = """[mutmut]
source_paths = lite_tf
only_mutate =
{only_mutate}
also_copy =
    gin
    pytest.ini
process_isolation = forkserver
forkserver_warmup = import
preload_modules_file = preload_modules.txt
use_git_change_detection = false
timeout_multiplier = 2.0
timeout_constant = 30.0
pytest_add_cli_args =
    -p
    no:cacheprovider
    -m
    not slow
pytest_add_cli_args_test_selection =
{selection}
"""

# Runs mutmut's `run` with a mutant's tests ordered fastest first (a killed mutant stops at its
# first failing test; mutmut itself passes them in set order).
_RUN = """
import json
import sys
import mutmut.__main__ as mutmut_main
from mutmut.state import state
from mutmut.workers import isolation

submit = isolation.ForkServerRunner.submit

TESTS_BY_FUNCTION = json.loads(sys.argv[4])

def submit_fastest_first(self, mutant_name, tests, cpu_time_limit, estimated_time):
  durations = state().duration_by_test
  function = mutant_name.rsplit('__mutmut_', 1)[0].rsplit('.', 1)[-1]
  if function in TESTS_BY_FUNCTION:  # the tests written for this function's survivors
    tests = [t for t in tests if any(t.startswith(p) for p in TESTS_BY_FUNCTION[function])]
    if not tests:
      self._no_tests_results.append(isolation.MutantResult(mutant_name=mutant_name,
                                                           exit_code=33, duration=0.0))
      return None
  tests = sorted(tests, key=lambda t: (durations.get(t, 0.0), t))
  budget = float(sys.argv[2])
  if budget > 0:  # the fastest tests whose stats-run durations sum to at most budget (>= 1)
    total, kept = 0.0, []
    for t in tests:
      total += durations.get(t, 0.0)
      if kept and total > budget:
        break
      kept.append(t)
    tests = kept
  return submit(self, mutant_name, tests, cpu_time_limit, estimated_time)

isolation.ForkServerRunner.submit = submit_fastest_first
if sys.argv[3] == 'resume':  # the clean run passed when the group started
  isolation.ForkServerRunner.run_clean_tests = lambda self, tests: 0
mutmut_main.cli(['run', '--max-children', sys.argv[1]] + sys.argv[5:])
"""

_SUMMARY = """
import collections, glob, json, sys
from mutmut.__main__ import status_by_exit_code
out = collections.OrderedDict()
for meta in sorted(glob.glob('mutants/lite_tf/**/*.py.meta', recursive=True)):
  with open(meta) as f:
    codes = json.load(f)['exit_code_by_key']
  out[meta[len('mutants/'):-len('.meta')]] = {
      name: status_by_exit_code[code] if code is not None else 'not checked'
      for name, code in sorted(codes.items())}
with open('summary.json', 'w') as f:
  json.dump(out, f, indent=1)
for path, statuses in out.items():
  print(path, dict(collections.Counter(statuses.values())))
"""


def _prepare(group):
  files, selection = GROUPS[group]
  work = os.path.join(WORK_ROOT, group)
  # A new run starts clean: mutmut keeps a mutant's verdict in mutants/ while its function's
  # source is unchanged, so new tests would not be run against an earlier survivor.
  shutil.rmtree(work, ignore_errors=True)
  os.makedirs(work, exist_ok=True)
  ignore = shutil.ignore_patterns('__pycache__', '*.pyc')
  for name in ('lite_tf', 'tests', 'gin'):
    shutil.copytree(os.path.join(REPO_ROOT, name), os.path.join(work, name), ignore=ignore,
                    dirs_exist_ok=True)
  shutil.copy(os.path.join(REPO_ROOT, 'pytest.ini'), work)
  with open(os.path.join(work, 'preload_modules.txt'), 'w') as f:
    f.write('\n'.join(_PRELOAD) + '\n')
  # Test files not written yet (a fresh checkout has them all) are left out.
  selection = [a for a in selection
               if not a.endswith('.py') or os.path.exists(os.path.join(REPO_ROOT, a))]
  with open(os.path.join(work, 'setup.cfg'), 'w') as f:
    f.write(_SETUP_CFG.format(only_mutate='\n'.join(f'    {p}' for p in files),
                              selection='\n'.join(f'    {a}' for a in selection)))
  return work


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--max_children', type=int, default=1)
  parser.add_argument('--test_budget_s', type=float, default=0.0,
                      help='> 0: each mutant runs only its fastest tests, their stats-run '
                      'durations summing to at most this (a first pass; 0: all its tests)')
  parser.add_argument('--resume', action='store_true',
                      help='reuse build/mutation/GROUP as it is (no new copy or setup.cfg), '
                      "so that mutmut keeps its stats and the verdicts it has")
  parser.add_argument('--mutants', default='',
                      help='comma-separated mutant names (or globs) to run instead of all')
  parser.add_argument('groups', nargs='+', choices=sorted(GROUPS))
  args = parser.parse_args()
  counts = collections.OrderedDict()
  for group in args.groups:
    work = os.path.join(WORK_ROOT, group) if args.resume else _prepare(group)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env['PYTHONPATH'] = os.environ.get('PYTHONPATH', '')  # mutmut's, not the repo's
    subprocess.run([sys.executable, '-c', _RUN, str(args.max_children), str(args.test_budget_s),
                    'resume' if args.resume else 'new',
                    json.dumps(TESTS_BY_FUNCTION if group.endswith('_kills') else {})]
                   + [m for m in args.mutants.split(',') if m],
                   cwd=work, env=env, check=False)
    summary = subprocess.run([sys.executable, '-c', _SUMMARY], cwd=work, env=env, check=True,
                             capture_output=True, text=True)
    counts[group] = summary.stdout
  for group, text in counts.items():
    print(f'{group}:\n{text}')


if __name__ == '__main__':
  main()
