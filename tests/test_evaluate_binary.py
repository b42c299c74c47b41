"""bin/evaluate.py: per-dataset accuracy with 95% CI and test-time cost, as JSON/CSV/markdown."""

import csv
import json

import keras

from conftest import run_binary
from lite_tf.benchmarks.memory import random_episode
from lite_tf.learners.protonets import ProtoNets
from lite_tf.lite import model as lite_model
from lite_tf.training import evaluate


def test_evaluate_writes_tables_with_confidence_intervals_for_each_dataset(trained_demo_dir,
                                                                          tmp_path):
  extra = tmp_path / 'two_datasets.gin'
  extra.write_text("run_evaluation.datasets = {'glyphs': @glyph_episodes, "
                   "'glyphs_3way': @three_way/glyph_episodes}\n"
                   'three_way/glyph_episodes.way = 3\n')
  out = tmp_path / 'eval'
  result = run_binary('evaluate.py', f'--train_dir={trained_demo_dir}', f'--gin_config={extra}',
                '--num_episodes=12', f'--output_dir={out}')
  assert result.returncode == 0, result.stderr[-3000:]
  rows = json.loads((out / 'results.json').read_text())['results']
  assert [r['dataset'] for r in rows] == ['glyphs', 'glyphs_3way']
  for r in rows:
    assert r['episodes'] == 12 and 0 <= r['accuracy'] <= 1 and r['ci95'] > 0
    assert r['forward_passes'] == 1 and r['forward_backward_steps'] == 0
    assert r['adapt_macs'] > 0 and r['parameters'] > r['trainable_parameters'] > 0
  # 3-way tasks have 15 support images to the 5-way tasks' 25: fewer MACs to adapt.
  assert rows[1]['adapt_macs'] < rows[0]['adapt_macs']
  with open(out / 'results.csv') as f:
    assert [r['dataset'] for r in csv.DictReader(f)] == ['glyphs', 'glyphs_3way']
  table = (out / 'results.md').read_text()
  assert '| glyphs_3way |' in table and '95% CI' in table
  assert '| glyphs |' in result.stdout


def test_adaptation_macs_match_the_conv4_arithmetic():
  """Conv-4 at 28x28: sum over layers of H*W*9*C_in*64 per image, for 25 support images and
  one query image (pooling, BatchNorm and the distances add under 2%)."""
  keras.utils.set_random_seed(0)
  learner = ProtoNets(backbone='conv4', image_size=28)
  episode = random_episode(25, 4, 28, 5)
  learner(episode.to_dict())
  per_image, size, channels = 0, 28, 3
  for _ in range(4):
    per_image += size * size * 9 * channels * 64
    size, channels = size // 2, 64
  macs = evaluate.macs_for_model(lite_model.make_lite_model(learner), episode)
  assert 26 * per_image <= macs <= 1.02 * 26 * per_image, (macs, 26 * per_image)
