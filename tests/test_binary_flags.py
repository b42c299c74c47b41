"""Flags of the study, planner and benchmark binaries refused by name before any work, and a
gin binding that does not parse: one line on stderr, exit 1, within seconds."""

import os
import subprocess
import sys
import time

import pytest

from conftest import first_line
from conftest import REPO_ROOT

STUDY = ['gradient_study.py', '--output_dir=/tmp/unused',
         f'--gin_config={REPO_ROOT}/gin/gradient_study.gin']
CASES = [
    (['plan_memory.py', '--support_size=0'], 'flag --support_size=0: 0 is not a positive integer'),
    (['plan_memory.py', '--tasks_held=0'], 'flag --tasks_held=0: 0 is not a positive integer'),
    (['plan_memory.py', '--query_size=-1'], 'flag --query_size=-1: -1 is not a positive integer'),
    (['plan_memory.py', '--verify_support_sizes=abc'],
     '--verify_support_sizes must be comma-separated integers >= 1'),
    (['benchmark_memory.py', '--support_sizes=abc'],
     '--support_sizes must be comma-separated integers >= 1'),
    (['benchmark_memory.py', '--backbone=resnet99'],
     "error: --backbone='resnet99' is not a lite_tf backbone; expected one of"),
    (['benchmark_pipeline.py', '--records_dir=/no/such/records'],
     '--records_dir must be an existing folder'),
    (['benchmark_pipeline.py', '--episodes=0'], 'flag --episodes=0: 0 is not a positive integer'),
    (['benchmark_orbit_reader.py', '--root=/no/such/orbit'], '--root must be an existing folder'),
    (['benchmark_tflite.py', '--train_dir=/no/such/run'], '--train_dir must be an existing folder'),
    (['accuracy_study.py', '--output_dir=/tmp/unused', '--image_sizes=0'],
     '--image_sizes must be comma-separated integers >= 1'),
    (STUDY + ['--gin_bindings=gradient_study.context_subset = "foo"'],
     "gradient_study.context_subset must be one of ['independent', 'shared']; got 'foo'"),
    (STUDY + ['--gin_bindings=gradient_study.bootstrap = 0'],
     'gradient_study.bootstrap must be an integer >= 1; got 0'),
    (STUDY + ['--gin_bindings=gradient_study.subset_sizes = [0, 5]'],
     'gradient_study.subset_sizes entries must be an integer >= 1; got 0'),
    (['accuracy_study.py', '--output_dir=/tmp/unused', '--gin_bindings=lite.num_backprob=3'],
     "Configurable 'lite' doesn't have a parameter named 'num_backprob'"),
    (['train.py', '--train_dir=/tmp/unused', f"--gin_config={REPO_ROOT}/gin/demo_protonets.gin",
      '--gin_bindings=lite.memory_plan_support_size = 0'],
     'lite.memory_plan_support_size must be an integer >= 1; got 0'),
    (['train.py', '--train_dir=/tmp/unused', f"--gin_config={REPO_ROOT}/gin/demo_protonets.gin",
      '--gin_bindings=lite.num_backprop = ('], "bindings ['lite.num_backprop = (']"),
]


@pytest.mark.parametrize('args,message', CASES, ids=[' '.join(a[:2]) for a, _ in CASES])
def test_refused_by_name(args, message):
  start = time.monotonic()
  result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'bin', args[0]), *args[1:]],
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
  assert result.returncode == 1, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  assert message in first_line(result.stderr), result.stderr[-3000:]
  assert time.monotonic() - start < 60


def test_md_episodes_dir_pointing_nowhere_is_refused():
  from lite_tf.training import vtab_md_evaluation  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="run_vtab_md_evaluation.md_episodes_dir='/no/such' is "
                     'not a folder'):
    vtab_md_evaluation.run_vtab_md_evaluation(None, None, md_episodes_dir='/no/such')


def test_vtab_support_is_refused_by_its_own_binding():
  from lite_tf.training import vtab_md_evaluation  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="run_vtab_md_evaluation.vtab_support must be "
                     "'train800val200' .* got 'all'"):
    vtab_md_evaluation.run_vtab_md_evaluation(None, None, vtab_support='all')


SIZING = ['learner', 'backbone', 'image_size', 'num_backprop', 'chunk_size', 'query_batch_size',
          'way']
STEP = ['precision', 'recompute_batch', 'recompute_mode', 'set_encoder_size', 'image_dtype']
CHILD = ['malloc', 'memory_limit_gb']
GIN = ['gin_config', 'gin_bindings']
# Each benchmark binary and the flags it defines through lite_tf.benchmarks.step_flags or
# binary.define_gin_flags.
SHARED_FLAGS = {
    'benchmark_memory.py': SIZING + STEP + CHILD + ['bfc'],
    'benchmark_op_profile.py': SIZING,
    'benchmark_train_memory.py': STEP + CHILD + ['bfc'] + GIN,
    'benchmark_maml.py': CHILD,
}
DEFINE_FLAGS = '''
import runpy, sys
from absl import flags
runpy.run_path(sys.argv[1], run_name='binary_under_test')
loaded = [m for m in ('tensorflow', 'keras') if m in sys.modules]
assert not loaded, f'{sys.argv[1]} imports {loaded} when it defines its flags'
print(' '.join(f.name for f in flags.FLAGS.get_key_flags_for_module('binary_under_test')))
'''


@pytest.mark.parametrize('name', sorted(SHARED_FLAGS))
def test_benchmark_flags_load_no_tensorflow_and_show_in_help(name):
  """The shared flag definitions import no TF (--help and flag errors come at once), and the
  binary adopts them as its own: its --help (the key flags of the binary) lists them."""
  result = subprocess.run(
      [sys.executable, '-c', DEFINE_FLAGS, os.path.join(REPO_ROOT, 'bin', name)],
      capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  key_flags = set(result.stdout.split())
  assert set(SHARED_FLAGS[name]) <= key_flags, set(SHARED_FLAGS[name]) - key_flags


def test_gin_binary_help_lists_the_gin_flags():
  """binary.define_gin_flags' flags are the binary's own: --helpshort (which exits 1) lists them."""
  result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'bin', 'pretrain.py'),
                           '--helpshort'], capture_output=True, text=True, timeout=300,
                          cwd=REPO_ROOT)
  assert '--gin_config: gin config files (repeatable).' in result.stdout, result.stdout
  assert '--gin_bindings: gin bindings (repeatable).' in result.stdout, result.stdout


def test_shared_flag_modules_import_no_tensorflow():
  result = subprocess.run(
      [sys.executable, '-c', 'import sys; from lite_tf import binary; '
       'from lite_tf.benchmarks import step_flags; '
       'print("tensorflow" in sys.modules, "keras" in sys.modules)'],
      capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split() == ['False', 'False']


def test_step_flag_values_match_the_library():
  """step_flags keeps its value lists as literals (importing their sources imports TF)."""
  from lite_tf import precision  # pylint: disable=g-import-not-at-top
  from lite_tf.benchmarks import memory  # pylint: disable=g-import-not-at-top
  from lite_tf.benchmarks import step_flags  # pylint: disable=g-import-not-at-top
  from lite_tf.lite import estimator  # pylint: disable=g-import-not-at-top
  assert step_flags.POLICIES == list(precision.POLICIES)
  assert step_flags.LEARNERS == list(memory.LEARNERS)
  assert step_flags.RECOMPUTE_MODES == list(estimator.RECOMPUTE_MODES)
