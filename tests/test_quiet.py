"""lite_tf.quiet: a binary's terminal shows lite_tf's lines; TensorFlow's native log goes to a
file that is named after an error and removed on success."""

import os
import subprocess
import sys

from conftest import REPO_ROOT

# A stand-in binary: native lines written straight to fd 2, as TensorFlow's C++ code does.
SCRIPT = r'''
import os, sys
from lite_tf import quiet
quiet.start()
from absl import app, logging
from lite_tf import binary

def main(argv):
  os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written '
              b'to STDERR\nI0000 00:00:1.5   7 port.cc:153] oneDNN custom operations are on.\n'
              b'E0000 00:00:2.5   7 ring_alg.cc:291] Aborting RingReduce with UNAVAILABLE\n'
              b'Additional GRPC error information from remote target\n')
  logging.info('an INFO line of code outside lite_tf')
  import tensorflow  # its own Python INFO lines are dropped; lite_tf's and warnings are kept
  from tensorflow.python.platform import tf_logging
  tf_logging.info('a TensorFlow INFO line')
  tf_logging.warning('a TensorFlow warning')
  if argv[1:] == ['fatal']:
    os.write(2, b'F0000 00:00:3.5   7 check.cc:1] Check failed: x\n*** stack trace\n')
  if argv[1:] in (['fail'], ['fatal']):
    print('error: it failed', file=sys.stderr)
    binary.hard_exit(1)
  print('done')

app.run(binary.exits_on_error(main))
'''


def _run(tmp_path, *args):
  script = tmp_path / 'native_binary.py'
  script.write_text(SCRIPT)
  env = dict(os.environ, TMPDIR=str(tmp_path), PYTHONPATH=REPO_ROOT)
  env.pop('LITE_TF_NATIVE_LOG', None)
  return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                        timeout=120, env=env)


def _logs(tmp_path):
  folder = tmp_path / 'lite_tf_logs'
  return sorted(folder.iterdir()) if folder.exists() else []


def test_native_lines_stay_out_of_the_terminal_and_are_removed_on_success(tmp_path):
  result = _run(tmp_path)
  assert result.returncode == 0, result.stderr
  assert result.stdout == 'done\n'
  for native in ('InitializeLog', 'oneDNN', 'RingReduce', 'GRPC'):
    assert native not in result.stderr, result.stderr
  # lite_tf's own INFO lines are kept (test_interrupt reads 'resuming from ...' in them).
  assert 'an INFO line of code outside lite_tf' not in result.stderr
  assert 'a TensorFlow warning' in result.stderr
  assert 'a TensorFlow INFO line' not in result.stderr
  assert _logs(tmp_path) == []


def test_after_an_error_the_error_comes_first_and_the_native_log_is_named(tmp_path):
  result = _run(tmp_path, 'fail')
  assert result.returncode == 1
  lines = [l for l in result.stderr.splitlines() if not l.startswith(('I', 'W'))]
  assert lines[0] == 'error: it failed', result.stderr
  logs = _logs(tmp_path)
  assert len(logs) == 1 and lines[1] == f"(TensorFlow's own log of this run: {logs[0]})"
  text = logs[0].read_text()
  assert 'Aborting RingReduce' in text and 'Additional GRPC error information' in text
  assert 'oneDNN' not in text and 'InitializeLog' not in text  # start-up noise: dropped


def test_a_native_fatal_line_and_what_follows_reach_the_terminal(tmp_path):
  result = _run(tmp_path, 'fatal')
  assert 'Check failed: x' in result.stderr and '*** stack trace' in result.stderr
  assert 'RingReduce' not in result.stderr


def test_verbosity_shows_everything(tmp_path):
  result = _run(tmp_path, '--verbosity=0')
  assert result.returncode == 0, result.stderr
  for shown in ('oneDNN', 'RingReduce', 'GRPC', 'a TensorFlow INFO line',
                'an INFO line of code outside lite_tf'):
    assert shown in result.stderr, result.stderr
  assert _logs(tmp_path) == []


def test_a_real_binary_prints_no_tensorflow_start_up_lines(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, 'bin', 'train.py'),
       f"--gin_config={os.path.join(REPO_ROOT, 'gin', 'demo_protonets.gin')}",
       f'--train_dir={tmp_path / "run"}', '--gin_bindings=glyph_episodes.way=0'],
      capture_output=True, text=True, timeout=120, env=dict(os.environ, TMPDIR=str(tmp_path)))
  assert result.returncode == 1
  assert result.stderr.startswith('error: glyph_episodes.way must be an integer >= 2'), (
      result.stderr)
  assert 'oneDNN' not in result.stderr and 'InitializeLog' not in result.stderr
