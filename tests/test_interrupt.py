"""SIGINT and SIGTERM: training stops within seconds after the task in progress, with a
checkpoint of it, says how to resume, exits 130 / 143; the resumed run's history and weights
equal an uninterrupted run's (lite_tf.interrupt)."""

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import first_line
from conftest import REPO_ROOT

BINDINGS = ['run_training.num_steps=40', 'run_training.steps_per_log=10',
            'run_training.valid_episodes=2', 'run_training.test_episodes=4']


def _command(train_dir, *bindings, gin_files=()):
  return [sys.executable, os.path.join(REPO_ROOT, 'bin', 'train.py'), f'--train_dir={train_dir}',
          f"--gin_config={os.path.join(REPO_ROOT, 'gin', 'demo_protonets.gin')}",
          *[f'--gin_config={g}' for g in gin_files],
          *[f'--gin_bindings={b}' for b in BINDINGS + list(bindings)]]


def _env():
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join([os.path.dirname(__file__), env.get('PYTHONPATH', '')])
  return env


def _run(command):
  return subprocess.run(command, capture_output=True, text=True, timeout=900, env=_env(),
                        cwd=REPO_ROOT)


def _weights(path):
  out = {}
  with h5py.File(path) as f:
    f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
  return out


def _assert_same_run(run_dir, reference_dir):
  assert (run_dir / 'history.jsonl').read_text() == (reference_dir / 'history.jsonl').read_text()
  ours, theirs = _weights(run_dir / 'learner.weights.h5'), _weights(
      reference_dir / 'learner.weights.h5')
  assert ours.keys() == theirs.keys()
  assert all(np.array_equal(ours[k], theirs[k]) for k in ours)


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory, glyph_cache):
  reference = tmp_path_factory.mktemp('uninterrupted') / 'run'
  result = _run(_command(reference))
  assert result.returncode == 0, result.stderr[-3000:]
  return reference


@pytest.mark.parametrize('signum,code', [
    (signal.SIGINT, 130), pytest.param(signal.SIGTERM, 143, marks=pytest.mark.slow)])
def test_signal_inside_an_epoch_checkpoints_and_resumes_exactly(tmp_path, uninterrupted, signum,
                                                                code):
  gin_file = tmp_path / 'signal.gin'
  gin_file.write_text(f'import signal_at\nrun_training.callbacks = [@SignalAt()]\n'
                      f'SignalAt.task = 13\nSignalAt.signum = {int(signum)}\n')
  run_dir = tmp_path / 'run'
  command = _command(run_dir, gin_files=[gin_file])
  stopped = _run(command)
  name = signal.Signals(signum).name
  assert stopped.returncode == code, stopped.stderr[-3000:]
  assert 'Traceback' not in stopped.stderr
  last = stopped.stderr.strip().splitlines()[-1]
  assert last == (f'{name}: interrupted at step 13; checkpoint saved in '
                  f'{run_dir / "checkpoints"}: run the same command to resume'), last
  assert (run_dir / 'checkpoints' / 'ckpt-13.index').exists()
  assert not (run_dir / 'learner.weights.h5').exists()
  history = (run_dir / 'history.jsonl').read_text().splitlines()
  assert len(history) == 1  # the partial epoch wrote no line
  resumed = _run(command)  # task 13 is past: the callback does not fire again
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'resuming from' in resumed.stderr and 'ckpt-13' in resumed.stderr
  _assert_same_run(run_dir, uninterrupted)


def test_signal_during_validation_stops_there_and_resumes_exactly(tmp_path, uninterrupted):
  """Validation runs after an epoch's last task, when Keras has already reset the epoch's
  training metrics: the stop comes after the validation episode in progress, keeps the last
  checkpoint, and the resumed run (which trains that epoch again) equals an uninterrupted one."""
  gin_file = tmp_path / 'signal.gin'
  gin_file.write_text('import signal_at\nrun_training.callbacks = [@SignalAt()]\n'
                      "SignalAt.task = 20\nSignalAt.phase = 'validation'\n"
                      f"SignalAt.once_file = '{tmp_path / 'fired'}'\n")
  run_dir = tmp_path / 'run'
  command = _command(run_dir, gin_files=[gin_file])
  stopped = _run(command)
  assert stopped.returncode == 130, stopped.stderr[-3000:]
  assert 'Traceback' not in stopped.stderr
  last = stopped.stderr.strip().splitlines()[-1]
  assert last == ('SIGINT: stopped while validating after task 20; run the same command to '
                  'resume from its last checkpoint (task 10)'), last
  assert not (run_dir / 'checkpoints' / 'ckpt-20.index').exists()
  assert len((run_dir / 'history.jsonl').read_text().splitlines()) == 1
  resumed = _run(command)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'ckpt-10' in resumed.stderr
  _assert_same_run(run_dir, uninterrupted)


@pytest.mark.slow
@pytest.mark.parametrize('moment', ['tracing', 'mid_epoch', 'checkpoint_write'])
def test_signal_from_outside_at_any_moment_stops_within_seconds(tmp_path, uninterrupted, moment):
  """A real SIGINT from another process while the first step traces, in an epoch, and while
  an epoch's checkpoint is written; wherever it lands the run stops in under 10 s and the
  resumed run equals the uninterrupted one."""
  run_dir = tmp_path / 'run'
  command = _command(run_dir, 'run_training.num_steps=400', 'run_training.steps_per_log=100')
  reference = tmp_path / 'reference'
  result = _run(_command(reference, 'run_training.num_steps=400',
                         'run_training.steps_per_log=100'))
  assert result.returncode == 0, result.stderr[-3000:]
  process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=_env(), cwd=REPO_ROOT)
  deadline = time.monotonic() + 300
  index = run_dir / 'checkpoints' / 'checkpoint'
  if moment == 'tracing':  # the train_dir exists once the run set up; the first step traces
    while not (run_dir / 'operative_config.gin').exists():
      assert time.monotonic() < deadline and process.poll() is None
      time.sleep(0.01)
  else:
    while not index.exists():
      assert time.monotonic() < deadline and process.poll() is None
      time.sleep(0.01 if moment == 'checkpoint_write' else 0.05)
    if moment == 'mid_epoch':
      time.sleep(0.5)
  process.send_signal(signal.SIGINT)
  sent = time.monotonic()
  _, err = process.communicate(timeout=60)
  assert time.monotonic() - sent < 10, err[-3000:]
  assert process.returncode in (0, 130), err[-3000:]  # 0: it had already finished
  assert 'Traceback' not in err
  resumed = _run(command)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  _assert_same_run(run_dir, reference)


def test_the_first_signal_waits_for_a_safe_point_outside_it_stops_at_once():
  from lite_tf import interrupt  # pylint: disable=g-import-not-at-top
  interrupt.install()
  try:
    with interrupt.deferred():
      os.kill(os.getpid(), signal.SIGTERM)
      assert interrupt.requested() == signal.SIGTERM
      with pytest.raises(interrupt.Interrupted, match='SIGTERM: evaluation stopped') as e:
        interrupt.check('evaluation stopped')
      assert e.value.code == 143
    interrupt.reset()
    with pytest.raises(interrupt.Interrupted, match='SIGINT: stopped'):
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(1)
  finally:
    interrupt.reset()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _pretrain_command(output):
  return [sys.executable, os.path.join(REPO_ROOT, 'bin', 'pretrain.py'), f'--output={output}',
          f"--gin_config={os.path.join(REPO_ROOT, 'gin', 'pretrain_demo.gin')}",
          '--gin_bindings=run_pretraining.num_steps=60',
          '--gin_bindings=run_pretraining.steps_per_log=20']


@pytest.mark.parametrize('signum,code', [
    pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow), (signal.SIGTERM, 143)])
def test_pretraining_stops_with_a_checkpoint_and_resumes_exactly(tmp_path, glyph_cache, signum,
                                                                 code):
  reference = tmp_path / 'reference' / 'w.weights.h5'
  result = _run(_pretrain_command(reference))
  assert result.returncode == 0, result.stderr[-3000:]
  output = tmp_path / 'run' / 'w.weights.h5'
  checkpoints_dir = tmp_path / 'run' / 'w.weights.h5.checkpoints'
  process = subprocess.Popen(_pretrain_command(output), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO_ROOT)
  deadline = time.monotonic() + 300
  while not (checkpoints_dir / 'ckpt-20.index').exists():
    assert time.monotonic() < deadline and process.poll() is None
    time.sleep(0.02)
  time.sleep(0.3)  # inside the second epoch
  process.send_signal(signum)
  sent = time.monotonic()
  _, err = process.communicate(timeout=60)
  assert time.monotonic() - sent < 10, err[-3000:]
  assert process.returncode == code, err[-3000:]
  assert 'Traceback' not in err
  last = err.strip().splitlines()[-1]
  assert last.startswith(f'{signal.Signals(signum).name}: interrupted at step '), last
  assert last.endswith(f'checkpoint saved in {checkpoints_dir}: run the same command to resume')
  assert not output.exists()
  resumed = _run(_pretrain_command(output))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'resuming pre-training from' in resumed.stderr
  assert resumed.stdout.splitlines()[-1] == result.stdout.splitlines()[-1].replace(
      str(reference), str(output))
  ours, theirs = _weights(output), _weights(reference)
  assert ours.keys() == theirs.keys()
  assert all(np.array_equal(ours[k], theirs[k]) for k in ours)
  again = _run(_pretrain_command(output))  # finished: nothing rewritten
  assert again.returncode == 0 and again.stdout.startswith('already pretrained'), again.stderr
  assert _weights(output).keys() == ours.keys()


def test_pretraining_never_overwrites_an_output_it_did_not_write(tmp_path, glyph_cache):
  output = tmp_path / 'w.h5'
  output.write_bytes(b'someone else\'s weights')
  result = _run(_pretrain_command(output))
  assert result.returncode == 1
  assert first_line(result.stderr).startswith(f"error: --output='{output}' exists and "), (
      result.stderr[-2000:])
  assert output.read_bytes() == b'someone else\'s weights'
