"""Resumable training: SIGKILL at any moment, re-run the same command, same losses."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

from conftest import REPO_ROOT

DEMO_GIN = os.path.join(REPO_ROOT, 'gin', 'demo_protonets.gin')
BINDINGS = ['run_training.num_steps=40', 'run_training.steps_per_log=10',
            'run_training.valid_episodes=2', 'run_training.test_episodes=3',
            'lite.num_backprop=5']


def _command(train_dir, *extra):
  return ([sys.executable, os.path.join(REPO_ROOT, 'bin', 'train.py'), f'--train_dir={train_dir}',
           f'--gin_config={DEMO_GIN}'] + [f'--gin_bindings={b}' for b in BINDINGS + list(extra)])


def _history(train_dir):
  with open(os.path.join(train_dir, 'history.jsonl')) as f:
    records = [json.loads(line) for line in f if line.strip()]
  return {r['step']: r for r in records}


def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path, glyph_cache):
  reference = subprocess.run(_command(tmp_path / 'reference'), capture_output=True, text=True,
                             timeout=900)
  assert reference.returncode == 0, reference.stderr[-3000:]

  run_dir = tmp_path / 'killed'
  proc = subprocess.Popen(_command(run_dir), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  first_checkpoint = run_dir / 'checkpoints' / 'ckpt-10.index'
  deadline = time.time() + 600
  while not first_checkpoint.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  time.sleep(1.0)  # into the next interval: work after the checkpoint is lost and redone
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, 'the run ended before it could be killed'
  assert not (run_dir / 'learner.weights.h5').exists()

  resumed = subprocess.run(_command(run_dir), capture_output=True, text=True, timeout=900)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'resuming from' in resumed.stderr
  expected, got = _history(tmp_path / 'reference'), _history(run_dir)
  assert sorted(got) == sorted(expected) == [10, 20, 30, 40]
  for step in expected:
    for key in ('loss', 'accuracy', 'val_loss'):
      assert abs(got[step][key] - expected[step][key]) <= 1e-5 * max(1, abs(expected[step][key])), (
          step, key, got[step][key], expected[step][key])
  assert (run_dir / 'learner.weights.h5').exists()
  assert json.loads((run_dir / 'best' / 'best.json').read_text())['step'] in (10, 20, 30, 40)


def _digest(directory):
  h = hashlib.sha1()
  for name in sorted(os.listdir(directory)):
    h.update(name.encode())
    h.update((directory / name).read_bytes())
  return h.hexdigest()


def test_checkpoint_of_another_learner_is_refused_and_left_intact(tmp_path, glyph_cache):
  run_dir = tmp_path / 'run'
  first = subprocess.run(_command(run_dir, 'run_training.num_steps=10'), capture_output=True,
                         text=True, timeout=900)
  assert first.returncode == 0, first.stderr[-3000:]
  before = _digest(run_dir / 'checkpoints')
  other = subprocess.run(_command(run_dir, "BACKBONE='resnet18'"), capture_output=True,
                         text=True, timeout=900)
  assert other.returncode != 0 and 'Traceback' not in other.stderr
  assert ("holds a run trained with another configuration (BACKBONE = 'conv4' in the run, "
          "'resnet18' now") in other.stderr, other.stderr[-3000:]
  assert _digest(run_dir / 'checkpoints') == before
