"""bin/benchmark_reference.py: lite_tf's Simple CNAPs + LITE step beside the PyTorch reference's.

Without torch: the flags are refused by name at once, the runs interleave, the table's ratios
are lite_tf / reference, and the reference's task is the one lite_tf's benchmark draws. With a
cambridge-mlg/LITE checkout (LITE_REFERENCE_DIR) and a Python with torch (TORCH_PYTHON), a tiny
run of both children (marked slow).
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import first_line
from conftest import REPO_ROOT
from lite_tf.benchmarks import reference
from lite_tf.benchmarks import reference_step

BINARY = os.path.join(REPO_ROOT, 'bin', 'benchmark_reference.py')


def _fake_checkout(tmp_path):
  for name in reference.REFERENCE_FILES:
    path = tmp_path / 'LITE' / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('')
  return str(tmp_path / 'LITE')


def _run_binary(*args):
  start = time.monotonic()
  result = subprocess.run([sys.executable, BINARY, *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO_ROOT)
  return result, time.monotonic() - start


@pytest.mark.parametrize('case', ['no_reference_dir', 'not_a_checkout', 'no_torch_python',
                                  'not_executable', 'no_torch', 'no_output', 'bad_rows'])
def test_refused_by_name_within_seconds(tmp_path, case):
  checkout = _fake_checkout(tmp_path)
  good = [f'--reference_dir={checkout}', '--torch_python=/bin/true',
          f'--output={tmp_path}/out.json']
  args, expected = {
      'no_reference_dir': (good[1:], 'error: --reference_dir is required'),
      'not_a_checkout': ([f'--reference_dir={tmp_path}'] + good[1:],
                         f"error: --reference_dir='{tmp_path}' is not a checkout of "
                         'cambridge-mlg/LITE: expected src/run.py'),
      'no_torch_python': (good[:1] + good[2:], 'error: --torch_python is required'),
      'not_executable': (good[:1] + [f'--torch_python={tmp_path}/none'] + good[2:],
                         f"error: --torch_python='{tmp_path}/none' is not an executable file"),
      'no_torch': (good[:1] + ['--torch_python=/bin/false'] + good[2:],
                   "error: --torch_python='/bin/false' cannot import torch and numpy"),
      'no_output': (good[:2], 'error: --output is required'),
      'bad_rows': (good + ['--rows=84:100,224'], "--rows entries must be S:N"),
  }[case]
  if case in ('no_output', 'bad_rows'):
    # These come after --torch_python's check, which /bin/true passes with no version: give a
    # stand-in that prints one.
    fake = tmp_path / 'python'
    fake.write_text('#!/bin/sh\necho 0.0-fake\n')
    fake.chmod(0o755)
    args = [a.replace('/bin/true', str(fake)) for a in args]
  result, seconds = _run_binary(*args)
  assert result.returncode == 1, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  assert expected in first_line(result.stderr), result.stderr[-3000:]
  assert seconds < 60


def test_flags_load_no_tensorflow():
  code = ('import runpy, sys; runpy.run_path(sys.argv[1], run_name="binary_under_test"); '
          'loaded = [m for m in ("tensorflow", "keras", "torch") if m in sys.modules]; '
          'assert not loaded, loaded')
  result = subprocess.run([sys.executable, '-c', code, BINARY], capture_output=True, text=True,
                          timeout=120, cwd=REPO_ROOT)
  assert result.returncode == 0, result.stderr[-3000:]


def test_runs_interleave_reference_first():
  assert reference.run_order([(84, 100), (224, 100)]) == [
      ((84, 100), 'reference'), ((84, 100), 'lite_tf'),
      ((224, 100), 'reference'), ((224, 100), 'lite_tf')]


def test_rows_parse_and_refuse():
  assert reference.parse_rows(['84:100', '224:500']) == [(84, 100), (224, 500)]
  for bad in ('84', '84:0', 'a:b', '84:100:84'):
    with pytest.raises(ValueError, match='--rows entries must be S:N'):
      reference.parse_rows([bad])


SIZING = {'num_backprop': 40, 'batch_size': 40, 'num_query': 40, 'way': 10, 'steps': 3,
          'threads': 2, 'image_dtype': 'uint8', 'flush_denormal': True}


def _row(side, s, n, mib, step, first):
  return {'side': side, 'image_size': s, 'support_size': n,
          'process_peak_rss_bytes': mib * 1024 ** 2, 'step_seconds': step,
          'first_step_seconds': first}


def test_table_ratios_are_lite_tf_over_reference():
  results = [_row('reference', 84, 100, 2000, 4.0, 6.0), _row('lite_tf', 84, 100, 1500, 1.0, 50.0),
             _row('reference', 224, 100, 10000, 28.0, 30.0),
             {'side': 'lite_tf', 'image_size': 224, 'support_size': 100,
              'error': 'did not fit: RSS passed 18 GB'}]
  assert reference.ratios(results[0], results[1]) == {'memory_ratio': 0.75, 'time_ratio': 0.25}
  assert reference.ratios(results[2], results[3]) == {'memory_ratio': None, 'time_ratio': None}
  lines = reference.markdown_table(results, SIZING).splitlines()
  assert lines[0].startswith('| S | N | config | reference | lite_tf | memory ratio')
  assert len(lines) == 4
  assert lines[2] == ('| 84 | 100 | H 40, chunk 40, query batch 40 (40 query), 10-way, set '
                      'encoder at S | 2000 MiB, 4.00 s/step | 1500 MiB, 1.00 s/step | 0.75x | '
                      '0.25x | 6.0 / 50.0 |')
  assert lines[3].endswith('| 10000 MiB, 28.00 s/step | did not fit: RSS passed 18 GB | - | - | '
                           '30.0 / - |')


def test_table_keeps_first_run_order_and_marks_a_side_not_run():
  results = [_row('reference', 224, 100, 10000, 28.0, 30.0), _row('reference', 84, 100, 2000,
                                                                  4.0, 6.0)]
  lines = reference.markdown_table(results, SIZING).splitlines()
  assert lines[2].startswith('| 224 |') and lines[3].startswith('| 84 |')
  assert '| not run |' in lines[2]


def test_table_goes_beside_the_json():
  assert reference.table_path('/x/bench.json') == '/x/bench.md'
  assert reference.table_path('/x/bench') == '/x/bench.md'


@pytest.mark.parametrize('image_dtype', ['uint8', 'float32'])
def test_reference_task_is_lite_tf_benchmark_task(image_dtype):
  """reference_step.random_task (numpy only, for the torch child) draws what
  lite_tf.benchmarks.memory.random_episode draws, in more than one block of images."""
  from lite_tf.benchmarks import memory  # pylint: disable=g-import-not-at-top
  episode = memory.random_episode(40, 7, 8, 3, image_dtype=image_dtype)
  support, support_labels, query, query_labels = reference_step.random_task(
      40, 7, 8, 3, image_dtype=image_dtype)
  np.testing.assert_array_equal(support, episode.support_images.numpy())
  np.testing.assert_array_equal(query, episode.query_images.numpy())
  np.testing.assert_array_equal(support_labels, episode.support_labels.numpy())
  np.testing.assert_array_equal(query_labels, episode.query_labels.numpy())
  model_input = reference_step.as_model_input(support)
  assert model_input.dtype == np.float32 and model_input.min() >= -1 and model_input.max() <= 1


def test_reference_command_line_is_simple_cnaps_lite():
  argv = reference_step.reference_command_line(84, 40, 40, '/tmp/c')
  assert argv[argv.index('--train_method') + 1] == 'lite'
  assert argv[argv.index('--h') + 1] == '40' and argv[argv.index('--batch_size') + 1] == '40'
  assert argv[argv.index('--tasks_per_step') + 1] == '1'


@pytest.mark.slow
def test_tiny_run_of_both_children(tmp_path):
  """Both children at S = 32, N = 12, |H| = 4, chunk and query batch 4, 3-way, one timed step
  (about 2 minutes on 2 cores): the reference's own step under torch, lite_tf's under TF."""
  reference_dir = os.environ.get('LITE_REFERENCE_DIR')
  torch_python = os.environ.get('TORCH_PYTHON')
  if not (reference_dir and torch_python):
    pytest.skip('set LITE_REFERENCE_DIR (a cambridge-mlg/LITE checkout) and TORCH_PYTHON (a '
                'Python with torch) to run the reference side by side')
  out = tmp_path / 'reference.json'
  result = subprocess.run(
      [sys.executable, BINARY, f'--reference_dir={reference_dir}',
       f'--torch_python={torch_python}', '--reference_commit=test', '--rows=32:12',
       '--num_backprop=4', '--batch_size=4', '--way=3', '--steps=1', f'--output={out}'],
      capture_output=True, text=True, timeout=900, cwd=REPO_ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  payload = json.loads(out.read_text())
  sides = [r['side'] for r in payload['results']]
  assert sides == ['reference', 'lite_tf'], payload['results']
  ref, ours = payload['results']
  assert 'error' not in ref and 'error' not in ours, payload['results']
  assert ref['trainable_parameters'] > 0 and np.isfinite(ref['losses']).all()
  assert ref['reference_args']['train_method'] == 'lite' and ref['reference_args']['h'] == 4
  assert ours['learner'] == 'simple_cnaps' and ours['support_size'] == 12
  for r in (ref, ours):
    assert r['process_peak_rss_bytes'] >= r['rss_before_bytes'] > 0
    assert r['step_seconds'] > 0 and r['threads'] == 2
  assert payload['machine']['tensorflow'] and payload['reference']['torch']
  table = (tmp_path / 'reference.md').read_text()
  assert '| 32 | 12 |' in table and table.endswith(payload['table'])
  assert '[2/2] S=32 N=12 lite_tf:' in result.stderr
