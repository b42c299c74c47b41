"""Resumable training: SIGKILL at any moment, re-run the same command, same losses."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

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


@pytest.mark.slow  # ~60 s; test_interrupt's signal tests resume exactly in the default suite
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


def test_a_run_saved_before_the_set_encoder_default_changed_resumes_only_as_it_trained():
  """set_encoder_norm's default became 'task'; runs saved before it trained with 'batch',
  bound in their operative config (gin records defaults) or, older still, not there at all.
  Either way, resuming under today's default is a change (refused, naming the binding); with
  'batch' bound it is the same run."""
  from lite_tf.learners import cnaps  # pylint: disable=g-import-not-at-top,unused-import
  from lite_tf.learners import simple_cnaps  # pylint: disable=g-import-not-at-top,unused-import
  from lite_tf.training import train  # pylint: disable=g-import-not-at-top
  now_default = "cnaps.set_encoder_norm = 'task'\ncnaps.image_size = 16\n"
  now_batch = "cnaps.set_encoder_norm = 'batch'\ncnaps.image_size = 16\n"
  saved_bound = "cnaps.set_encoder_norm = 'batch'\ncnaps.image_size = 16\n"
  saved_unbound = 'cnaps.image_size = 16\n'
  for saved in (saved_bound, saved_unbound):
    assert train.run_changes(saved, now_default) == [('cnaps.set_encoder_norm', 'batch',
                                                      'task')]
    assert train.run_changes(saved, now_batch) == []
  # Scoped, and Simple CNAPs' too.
  assert train.run_changes('', "train/simple_cnaps.set_encoder_norm = 'task'\n") == [
      ('train/simple_cnaps.set_encoder_norm', 'batch', 'task')]
  # set_encoder_pooling was added with the reference's 'floor'; runs before it pooled 'same'.
  assert train.run_changes('', "cnaps.set_encoder_pooling = 'floor'\n") == [
      ('cnaps.set_encoder_pooling', 'same', 'floor')]
  assert train.run_changes('', "cnaps.set_encoder_pooling = 'same'\n") == []
  # A setting added since a run, at its default, is still no change.
  assert train.run_changes('', 'cnaps.film_architecture = "reference"\n') == []


def test_pretraining_compares_its_run_as_training_does(tmp_path, monkeypatch):
  """bin/pretrain.py's resume check is config.run_changes too: a setting added to lite_tf since
  the saved run, at its default, is no change (it was refused as one before); a changed value
  is refused."""
  import gin  # pylint: disable=g-import-not-at-top
  from lite_tf.learners import cnaps  # pylint: disable=g-import-not-at-top,unused-import
  from lite_tf.training import pretrain  # pylint: disable=g-import-not-at-top
  checkpoints = tmp_path / 'w.h5.checkpoints'
  checkpoints.mkdir()
  (checkpoints / 'operative_config.gin').write_text('run_pretraining.learning_rate = 0.001\n')
  now = 'run_pretraining.learning_rate = 0.001\ncnaps.film_architecture = "reference"\n'
  monkeypatch.setattr(gin, 'operative_config_str', lambda: now)
  assert pretrain._check_same_run(str(tmp_path / 'w.h5'), str(checkpoints)) is None  # pylint: disable=protected-access
  monkeypatch.setattr(gin, 'operative_config_str', lambda: now.replace('0.001', '0.01'))
  with pytest.raises(ValueError, match='holds a pre-training with another configuration'):
    pretrain._check_same_run(str(tmp_path / 'w.h5'), str(checkpoints))  # pylint: disable=protected-access


@pytest.mark.slow  # the rule itself: test_run_changes..., above, in the default suite
def test_resuming_a_batch_norm_simple_cnaps_run_under_the_task_default_is_refused(tmp_path,
                                                                                 glyph_cache):
  """A Simple CNAPs run saved as runs before the default change were (its operative config
  binds set_encoder_norm = 'batch', pooling absent): resuming it under today's defaults is
  refused, naming both bindings, and nothing is written; binding the run's values resumes."""
  run_dir = tmp_path / 'run'
  gin_file = os.path.join(REPO_ROOT, 'gin', 'demo_simple_cnaps.gin')
  short = ['run_training.num_steps=2', 'run_training.steps_per_log=2',
           'run_training.valid_episodes=1', 'run_training.test_episodes=1', 'IMAGE_SIZE=16',
           'lite.num_backprop=5']

  def command(*extra):
    return ([sys.executable, os.path.join(REPO_ROOT, 'bin', 'train.py'),
             f'--train_dir={run_dir}', f'--gin_config={gin_file}'] +
            [f'--gin_bindings={b}' for b in short + list(extra)])

  first = subprocess.run(command("simple_cnaps.set_encoder_norm='batch'",
                                 "simple_cnaps.set_encoder_pooling='same'"),
                         capture_output=True, text=True, timeout=900)
  assert first.returncode == 0, first.stderr[-3000:]
  config_path = run_dir / 'operative_config.gin'
  saved = config_path.read_text()
  assert "simple_cnaps.set_encoder_pooling = 'same'" in saved
  # As a run saved before set_encoder_pooling existed.
  config_path.write_text('\n'.join(l for l in saved.splitlines()
                                   if 'set_encoder_pooling' not in l) + '\n')
  before = _digest(run_dir / 'checkpoints')
  again = subprocess.run(command('run_training.num_steps=4'), capture_output=True, text=True,
                         timeout=900)
  assert again.returncode != 0 and 'Traceback' not in again.stderr
  assert ("simple_cnaps.set_encoder_norm = 'batch' in the run, 'task' now" in again.stderr
          and "simple_cnaps.set_encoder_pooling = 'same' in the run, 'floor' now"
          in again.stderr), again.stderr[-3000:]
  assert 'the default changed since that run' in again.stderr
  assert _digest(run_dir / 'checkpoints') == before
  resumed = subprocess.run(command('run_training.num_steps=4',
                                   "simple_cnaps.set_encoder_norm='batch'",
                                   "simple_cnaps.set_encoder_pooling='same'"),
                           capture_output=True, text=True, timeout=900)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'resuming from' in resumed.stderr


def test_the_recompute_mode_default_change_matters_only_to_runs_that_recompute():
  """recompute_mode's default became 'loop'. A run that recomputed with 'unrolled' resumes
  only with that binding (the loop's gradient differs by round-off); a run without
  recomputation (no recompute_batch, no memory budget) resumes under the new default."""
  from lite_tf.lite import model  # pylint: disable=g-import-not-at-top,unused-import
  from lite_tf.training import train  # pylint: disable=g-import-not-at-top
  plain_old = "lite.recompute_batch = None\nlite.recompute_mode = 'unrolled'\n"
  plain_now = "lite.recompute_batch = None\nlite.recompute_mode = 'loop'\n"
  assert train.run_changes(plain_old, plain_now) == []
  recomputing_old = "lite.recompute_batch = 8\nlite.recompute_mode = 'unrolled'\n"
  recomputing_now = "lite.recompute_batch = 8\nlite.recompute_mode = 'loop'\n"
  assert train.run_changes(recomputing_old, recomputing_now) == [
      ('lite.recompute_mode', 'unrolled', 'loop')]
  assert train.run_changes('lite.recompute_batch = 8\n', recomputing_now) == [
      ('lite.recompute_mode', 'unrolled', 'loop')]
  budget_now = "lite.memory_budget_mb = 2048\nlite.recompute_mode = 'loop'\n"
  assert train.run_changes("lite.memory_budget_mb = 2048\nlite.recompute_mode = 'unrolled'\n",
                           budget_now) == [('lite.recompute_mode', 'unrolled', 'loop')]


def test_runs_from_before_auto_recomputation_resume_only_as_they_trained():
  """lite.recompute_batch's default became 'auto'. A run that trained without recomputation
  (None in its operative config, or no binding at all: EARLIER_DEFAULTS) is refused on
  resume under 'auto', naming the binding (its gradient would change by round-off from the
  step on), and resumes with lite.recompute_batch = None bound."""
  from lite_tf.lite import model  # pylint: disable=g-import-not-at-top,unused-import
  from lite_tf.training import train  # pylint: disable=g-import-not-at-top
  now = "lite.recompute_batch = 'auto'\nlite.recompute_mode = 'loop'\n"
  change = [('lite.recompute_batch', None, 'auto')]
  assert train.run_changes("lite.recompute_batch = None\nlite.recompute_mode = 'loop'\n",
                           now) == change
  assert train.run_changes("lite.recompute_mode = 'loop'\n", now) == change
  assert train.run_changes("lite.recompute_batch = None\nlite.recompute_mode = 'unrolled'\n",
                           "lite.recompute_batch = None\nlite.recompute_mode = 'loop'\n") == []
