"""bin/train.py --distribution=multi_worker across two real worker processes on 127.0.0.1.

Two workers of one task per step each equal one device accumulating two tasks per step
(make_optimizer.tasks_per_step = 2) over the same tasks: history and final weights to float
tolerance. Only the chief writes train_dir; the other worker writes to a scratch folder it
removes. Killing a worker stops the job with a clear error; re-running both resumes.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import REPO_ROOT, first_line

TRAIN = os.path.join(REPO_ROOT, 'bin', 'train.py')
BINDINGS = ['--gin_config=' + os.path.join(REPO_ROOT, 'gin', 'demo_protonets.gin'),
            '--gin_bindings=run_training.valid_episodes=2',
            '--gin_bindings=run_training.test_episodes=2',
            '--gin_bindings=run_training.steps_per_log=4',
            # SGD: Adam's normalisation would magnify round-off in near-zero gradients.
            "--gin_bindings=make_optimizer.algorithm='sgd'",
            '--gin_bindings=make_optimizer.learning_rate=0.05',
            # Recomputation in its default mode ('loop') inside each worker's replica.
            '--gin_bindings=lite.recompute_batch=2']
TIMEOUT = 300


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(('127.0.0.1', 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


class Cluster:
  """Two bin/train.py workers with a loopback TF_CONFIG (ports chosen free at start), each
  with its own TMPDIR (to see what the non-chief leaves behind); always killed on exit."""

  def __init__(self, train_dir, tmp_path, extra):
    ports = _free_ports(2)
    self.procs, self.logs, self.tmpdirs = [], [], []
    for index in range(2):
      tmpdir = tmp_path / f'tmp{index}_{time.monotonic_ns()}'
      tmpdir.mkdir()
      env = dict(os.environ, TMPDIR=str(tmpdir), PYTHONPATH=os.pathsep.join(
          [os.path.dirname(__file__), os.environ.get('PYTHONPATH', '')]), TF_CONFIG=json.dumps({
          'cluster': {'worker': [f'127.0.0.1:{p}' for p in ports]},
          'task': {'type': 'worker', 'index': index}}))
      log = open(tmpdir.parent / f'{tmpdir.name}.log', 'w+')  # pylint: disable=consider-using-with
      self.procs.append(subprocess.Popen(  # pylint: disable=consider-using-with
          [sys.executable, TRAIN, f'--train_dir={train_dir}', '--distribution=multi_worker',
           *BINDINGS, *extra], env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT))
      self.logs.append(log)
      self.tmpdirs.append(tmpdir)

  def wait(self):
    deadline = time.monotonic() + TIMEOUT
    for p in self.procs:
      p.wait(timeout=max(1, deadline - time.monotonic()))
    return [p.returncode for p in self.procs]

  def output(self, index):
    self.logs[index].seek(0)
    return self.logs[index].read()

  def kill(self):
    for p in self.procs:
      if p.poll() is None:
        p.kill()
        p.wait()


@pytest.fixture
def cluster(tmp_path):
  made = []

  def start(train_dir, *extra):
    made.append(Cluster(train_dir, tmp_path, extra))
    return made[-1]
  yield start
  for c in made:
    c.kill()


def _weights(path):
  arrays = {}
  with h5py.File(path, 'r') as f:
    f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()])
                 if isinstance(obj, h5py.Dataset) else None)
  return arrays


def _history(train_dir):
  with open(os.path.join(train_dir, 'history.jsonl')) as f:
    return [json.loads(line) for line in f]


def _single_device(train_dir, num_steps):
  return subprocess.Popen(  # pylint: disable=consider-using-with
      [sys.executable, TRAIN, f'--train_dir={train_dir}', *BINDINGS,
       f'--gin_bindings=run_training.num_steps={num_steps}',
       '--gin_bindings=make_optimizer.tasks_per_step=2'],
      cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _assert_same_training(train_dir, reference_dir, epochs):
  """Same history and weights to float32 round-off: the all-reduce sums the two tasks'
  gradients in another order than the accumulation on one device."""
  ours, theirs = _history(train_dir), _history(reference_dir)
  assert [r['step'] for r in ours] == [r['step'] for r in theirs] == [
      4 * (e + 1) for e in range(epochs)]
  for a, b in zip(ours, theirs):
    for key in ('loss', 'accuracy', 'val_loss', 'val_accuracy'):
      assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (key, a, b)
  ours, theirs = (_weights(os.path.join(d, 'learner.weights.h5'))
                  for d in (train_dir, reference_dir))
  assert sorted(ours) == sorted(theirs) and ours
  for k in ours:
    np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-5, atol=1e-6, err_msg=k)


def _assert_only_the_chief_wrote(c, train_dir):
  assert sorted(os.listdir(train_dir)) == sorted([
      'best', 'checkpoints', 'history.jsonl', 'learner.weights.h5', 'operative_config.gin',
      'tensorboard', 'test_results.json'])
  assert 'held-out-class accuracy' in c.output(0)
  assert 'held-out-class accuracy' not in c.output(1)
  assert 'training done on this worker' in c.output(1)
  assert os.listdir(c.tmpdirs[1]) == []  # its scratch folder is gone
  # Each worker's pipeline decodes its own share of the episodes only.
  assert 'replica pipeline 0 of 2: episodes 0 + 0 + 2 k' in c.output(0)
  assert 'replica pipeline 1 of 2: episodes 0 + 1 + 2 k' in c.output(1)


def test_two_workers_equal_one_device_accumulating_two_tasks(tmp_path, cluster):
  train_dir, reference_dir = str(tmp_path / 'multi'), str(tmp_path / 'single')
  c = cluster(train_dir, '--gin_bindings=run_training.num_steps=8')
  single = _single_device(reference_dir, 8)
  _, err = single.communicate(timeout=TIMEOUT)
  assert single.returncode == 0, err[-3000:]
  assert c.wait() == [0, 0], c.output(0)[-3000:] + c.output(1)[-3000:]
  _assert_only_the_chief_wrote(c, train_dir)
  _assert_same_training(train_dir, reference_dir, epochs=2)


@pytest.mark.slow
def test_a_killed_worker_stops_the_job_and_both_resume_exactly(tmp_path, cluster):
  train_dir, reference_dir = str(tmp_path / 'multi'), str(tmp_path / 'single')
  single = _single_device(reference_dir, 16)
  c = cluster(train_dir, '--gin_bindings=run_training.num_steps=16')
  index = os.path.join(train_dir, 'checkpoints', 'checkpoint')  # the first checkpoint is done
  deadline = time.monotonic() + TIMEOUT
  while not os.path.exists(index):
    assert time.monotonic() < deadline and c.procs[0].poll() is None, c.output(0)[-3000:]
    time.sleep(0.05)
  c.procs[1].kill()
  started = time.monotonic()
  assert c.procs[0].wait(timeout=120) != 0
  assert time.monotonic() - started < 60  # stopped, not hung
  message = first_line('\n'.join(line for line in c.output(0).splitlines()
                                 if line.startswith('error:')))
  assert message.startswith('error: the multi-worker job lost a peer (worker 1'), message
  assert 'resume from the last checkpoint' in message
  assert len(_history(train_dir)) < 4  # interrupted before the end
  # TensorFlow's gRPC detail is kept in the native log, named after the error, not printed.
  chief = c.output(0)
  assert 'GRPC' not in chief and not re.search(r'^[IWEF]\d{4} .*\.cc:\d+\] ', chief, re.M), chief
  native = re.search(r"^\(TensorFlow's own log of this run: (.+)\)$", chief, re.M)
  assert native, chief[-2000:]
  with open(native.group(1), encoding='utf-8') as f:
    assert re.search(r'^E\d{4} .*UNAVAILABLE', f.read(), re.M)

  resumed = cluster(train_dir, '--gin_bindings=run_training.num_steps=16')
  assert resumed.wait() == [0, 0], resumed.output(0)[-3000:] + resumed.output(1)[-3000:]
  _, err = single.communicate(timeout=TIMEOUT)
  assert single.returncode == 0, err[-3000:]
  for worker in (0, 1):  # both from the chief's checkpoint in train_dir
    assert 'resuming from ' + os.path.join(train_dir, 'checkpoints') in resumed.output(worker)
  _assert_same_training(train_dir, reference_dir, epochs=4)


@pytest.mark.parametrize('policy', [pytest.param('mixed_bfloat16', marks=pytest.mark.slow),
                                    'mixed_float16'])
def test_a_multi_worker_run_takes_mixed_precision(tmp_path, policy):
  """The precision's checks run before the strategy configures TF's runtime only if they leave
  it unstarted (a MultiWorkerMirroredStrategy must configure it: 'Collective ops must be
  configured at program startup'); float16's device probe runs ops, so bin/train.py runs it
  after the strategy. One worker on a loopback port, two tasks."""
  port, = _free_ports(1)
  env = dict(os.environ, TF_CONFIG=json.dumps({
      'cluster': {'worker': [f'127.0.0.1:{port}']}, 'task': {'type': 'worker', 'index': 0}}))
  proc = subprocess.run(
      [sys.executable, TRAIN, f'--train_dir={tmp_path / "run"}', '--distribution=multi_worker',
       *BINDINGS, f"--gin_bindings=precision.policy='{policy}'",
       '--gin_bindings=run_training.num_steps=2', '--gin_bindings=run_training.steps_per_log=2',
       '--gin_bindings=run_training.valid_episodes=0'],
      cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert [r['step'] for r in _history(tmp_path / 'run')] == [2]
  with open(tmp_path / 'run' / 'operative_config.gin') as f:
    assert policy in f.read()


@pytest.mark.slow
def test_ctrl_c_on_one_worker_stops_both_after_the_same_task_and_both_resume_exactly(
    tmp_path, cluster):
  """The workers agree after every step whether one of them was signalled: both stop after
  the same task, both save (the chief into train_dir) and the resumed cluster trains as one
  uninterrupted device does."""
  train_dir, reference_dir = str(tmp_path / 'multi'), str(tmp_path / 'single')
  single = _single_device(reference_dir, 16)
  gin_file = tmp_path / 'signal.gin'  # SIGINT to worker 1 only, after its 6th task
  gin_file.write_text('import signal_at\nrun_training.callbacks = [@SignalAt()]\n'
                      f"SignalAt.task = 6\nSignalAt.only_worker = 1\n"
                      f"SignalAt.once_file = '{tmp_path / 'fired'}'\n")
  c = cluster(train_dir, '--gin_bindings=run_training.num_steps=16', f'--gin_config={gin_file}')
  assert c.wait() == [130, 130], c.output(0)[-3000:] + c.output(1)[-3000:]
  chief, peer = c.output(0), c.output(1)
  step = 6
  assert (f'SIGINT: interrupted at step {step}; checkpoint saved in '
          f'{os.path.join(train_dir, "checkpoints")}') in peer, peer[-3000:]
  assert (f'another worker was interrupted: interrupted at step {step}; checkpoint saved in '
          f'{os.path.join(train_dir, "checkpoints")}') in chief, chief[-3000:]
  assert 'Traceback' not in chief + peer
  assert os.path.exists(os.path.join(train_dir, 'checkpoints', f'ckpt-{step}.index'))

  resumed = cluster(train_dir, '--gin_bindings=run_training.num_steps=16',
                    f'--gin_config={gin_file}')
  assert resumed.wait() == [0, 0], resumed.output(0)[-3000:] + resumed.output(1)[-3000:]
  for worker in (0, 1):
    assert f'ckpt-{step} at task {step}' in resumed.output(worker)
  _, err = single.communicate(timeout=TIMEOUT)
  assert single.returncode == 0, err[-3000:]
  _assert_same_training(train_dir, reference_dir, epochs=4)

