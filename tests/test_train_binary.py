"""bin/train.py end to end: the demo job learns, and bad input fails with a clear message."""

import os
import re
import subprocess
import sys

import pytest

from conftest import first_line
from conftest import REPO_ROOT

DEMO_GIN = os.path.join(REPO_ROOT, 'gin', 'demo_protonets.gin')


def _train(train_dir, *bindings, gin_configs=(DEMO_GIN,), env=None):
  cmd = [sys.executable, os.path.join(REPO_ROOT, 'bin', 'train.py'), f'--train_dir={train_dir}']
  cmd += [f'--gin_config={c}' for c in gin_configs]
  cmd += [f'--gin_bindings={b}' for b in bindings]
  return subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                        env=dict(os.environ, **(env or {})))


def test_short_demo_run_beats_chance_on_held_out_classes(tmp_path, glyph_cache):
  result = _train(tmp_path / 'run', 'run_training.num_steps=150', 'run_training.steps_per_log=50',
                  'run_training.valid_episodes=10', 'run_training.test_episodes=100')
  assert result.returncode == 0, result.stderr[-3000:]
  match = re.search(r'held-out-class accuracy: ([\d.]+)% \+/- ([\d.]+)% \(95% CI over 100',
                    result.stdout)
  assert match, result.stdout[-2000:]
  accuracy, half_width = float(match.group(1)), float(match.group(2))
  assert accuracy > 50.0, f'5-way chance is 20%; got {accuracy}%'
  assert 0 < half_width < 10
  assert (tmp_path / 'run' / 'operative_config.gin').exists()
  assert (tmp_path / 'run' / 'learner.weights.h5').exists()
  assert 'lite.num_backprop = 10' in (tmp_path / 'run' / 'operative_config.gin').read_text()
  assert ('test-time cost per task: 1 forward pass(es) and 0 forward-backward step(s)'
          in result.stdout)
  # Quiet by default (lite_tf.quiet): no TensorFlow start-up, native or Python INFO lines.
  for noise in ('oneDNN custom operations', 'InitializeLog', 'Sharding callback duration',
                'cpu_feature_guard', 'INFO:tensorflow'):
    assert noise not in result.stderr + result.stdout, noise
  assert not re.search(r'^[IWE]\d{4} .*\.cc:\d+\] ', result.stderr, re.M), result.stderr


def test_query_label_absent_from_support(tmp_path, glyph_cache):
  gin_file = tmp_path / 'bad_data.gin'
  gin_file.write_text(f"include '{DEMO_GIN}'\nimport bad_episode_source\n"
                      'run_training.episode_source = @missing_class_episodes\n')
  result = _train(tmp_path / 'run', gin_configs=(str(gin_file),),
                  env={'PYTHONPATH': os.path.dirname(__file__)})
  assert result.returncode != 0
  assert 'query labels [2] do not occur in the support set' in result.stderr, result.stderr[-3000:]


def test_a_source_without_the_interface_is_named(tmp_path):
  gin_file = tmp_path / 'source.gin'
  gin_file.write_text(f"include '{DEMO_GIN}'\nimport bad_episode_source\n"
                      'run_training.episode_source = @episode_only_episodes\n')
  result = _train(tmp_path / 'run', gin_configs=(str(gin_file),),
                  env={'PYTHONPATH': os.path.dirname(__file__)})
  assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
  assert ("run_training.episode_source=episode_only_episodes('train') returned a _EpisodeOnly, "
          'which lacks episodes and as_dataset: an episode source needs') in first_line(
              result.stderr), result.stderr[-3000:]


@pytest.mark.slow  # tests/test_binary_exit.py trains on the same records by default
def test_training_on_meta_dataset_records(tmp_path):
  fixture = os.path.join(REPO_ROOT, '..', 'shared', 'fixtures', 'meta_dataset', 'glyphs_dtd')
  if not os.path.exists(os.path.join(fixture, 'dataset_spec.json')):
    pytest.skip(f'Meta-Dataset fixture not found at {fixture}')
  result = _train(tmp_path / 'run', f"records_episodes.records_dir='{fixture}'",
                  'run_training.num_steps=3', 'run_training.steps_per_log=3',
                  'run_training.valid_episodes=2', 'run_training.test_episodes=3',
                  'records_episodes.image_size=32', 'protonets.image_size=32',
                  gin_configs=(os.path.join(REPO_ROOT, 'gin', 'records_protonets.gin'),))
  assert result.returncode == 0, result.stderr[-3000:]
  assert '(95% CI over 3 test episodes)' in result.stdout


@pytest.mark.parametrize('gin_name,bindings,steps', [
    ('demo_maml.gin', ['maml.num_inner_steps=1', 'maml.test_num_inner_steps=2',
                       'maml.window_size=1'], 2),
    ('demo_finetuner.gin', ['finetuner.num_steps=5'], 5),
])
def test_maml_and_finetuner_run_through_the_same_binary(tmp_path, glyph_cache, gin_name,
                                                        bindings, steps):
  result = _train(tmp_path / 'run', 'run_training.num_steps=2', 'run_training.steps_per_log=2',
                  'run_training.valid_episodes=0', 'run_training.test_episodes=5', *bindings,
                  gin_configs=(os.path.join(REPO_ROOT, 'gin', gin_name),))
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'and {steps} forward-backward step(s)' in result.stdout


def _pretrain(output, *bindings):
  cmd = [sys.executable, os.path.join(REPO_ROOT, 'bin', 'pretrain.py'), f'--output={output}',
         f"--gin_config={os.path.join(REPO_ROOT, 'gin', 'pretrain_demo.gin')}"]
  cmd += [f'--gin_bindings={b}' for b in bindings]
  return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


@pytest.mark.slow  # tests/test_accuracy_study.py pre-trains and trains Simple CNAPs by default
def test_pretrained_simple_cnaps_beats_chance_and_adapts_in_one_forward_pass(tmp_path,
                                                                              glyph_cache):
  weights = tmp_path / 'conv4.h5'
  result = _pretrain(weights, 'run_pretraining.num_steps=100', 'run_pretraining.steps_per_log=50')
  assert result.returncode == 0, result.stderr[-3000:]
  assert weights.exists() and 'pretrained backbone saved' in result.stdout
  result = _train(tmp_path / 'run', f"BACKBONE_WEIGHTS='{weights}'", 'run_training.num_steps=60',
                  'run_training.steps_per_log=30', 'run_training.valid_episodes=5',
                  'run_training.test_episodes=100',
                  gin_configs=(os.path.join(REPO_ROOT, 'gin', 'demo_simple_cnaps.gin'),))
  assert result.returncode == 0, result.stderr[-3000:]
  match = re.search(r'held-out-class accuracy: ([\d.]+)% \+/- ([\d.]+)%', result.stdout)
  assert match and float(match.group(1)) > 50.0, result.stdout[-2000:]  # 5-way chance: 20%
  assert ('test-time cost per task: 1 forward pass(es) and 0 forward-backward step(s)'
          in result.stdout)


def test_weights_of_another_architecture_fail_clearly(tmp_path, glyph_cache):
  weights = tmp_path / 'conv4.h5'
  result = _pretrain(weights, 'run_pretraining.num_steps=1', 'run_pretraining.steps_per_log=1')
  assert result.returncode == 0, result.stderr[-3000:]
  result = _train(tmp_path / 'run', f"BACKBONE_WEIGHTS='{weights}'", "BACKBONE='resnet18'",
                  gin_configs=(os.path.join(REPO_ROOT, 'gin', 'demo_simple_cnaps.gin'),))
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert 'does not fit the backbone; mismatched layers' in result.stderr
  assert 'stem_conv' in result.stderr, result.stderr[-3000:]
