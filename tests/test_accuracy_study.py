"""bin/accuracy_study.py on a tiny grid: every run trains through bin/train.py, the table and
plot are written, a second invocation reuses the finished runs, and bad grids are refused."""

import json
import os

import pytest

from conftest import first_line
from conftest import run_binary


def _study(out, glyph_cache, *extra):
  return run_binary('accuracy_study.py', f'--output_dir={out}',
                    '--learners=protonets,simple_cnaps', '--image_sizes=16',
                    '--protonets_subsets=0,all', '--simple_cnaps_subsets=1', '--seeds=0',
                    f"--gin_bindings=glyph_variable_episodes.cache_dir='{glyph_cache}'",
                    f"--gin_bindings=glyph_batches.cache_dir='{glyph_cache}'",
                    '--gin_bindings=run_training.num_steps=4',
                    '--gin_bindings=run_training.steps_per_log=2',
                    '--gin_bindings=run_training.test_episodes=5',
                    '--gin_bindings=run_pretraining.num_steps=4',
                    '--gin_bindings=run_pretraining.steps_per_log=2', *extra)


@pytest.mark.slow  # trains 4 runs end to end (about a minute); bindings: below
def test_tiny_grid_trains_every_run_and_writes_the_table(tmp_path, glyph_cache):
  out = tmp_path / 'study'
  proc = _study(out, glyph_cache)
  assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
  with open(out / 'accuracy_study.json', encoding='utf-8') as f:
    result = json.load(f)
  cells = {(r['learner'], r['subset_size']) for r in result['table']}
  assert cells == {('protonets', '0'), ('protonets', 'all'), ('simple_cnaps', '1')}
  for r in result['table']:
    assert 0.0 <= r['accuracy'] <= 1.0 and r['ci95'] > 0 and r['seeds'] == 1
  # Each run is a bin/train.py train_dir; 'all' is exact back-propagation.
  config = (out / 'runs' / 'protonets_s16_hall_seed0' / 'operative_config.gin').read_text()
  assert "train_method.method = 'no_lite'" in config
  config = (out / 'runs' / 'protonets_s16_h0_seed0' / 'operative_config.gin').read_text()
  assert 'lite.num_backprop = 0' in config
  assert (out / 'pretrained' / 'conv4_s16.weights.h5').exists()
  assert '| protonets | 16 | 0 |' in (out / 'accuracy_study.md').read_text()
  assert (out / 'accuracy_study.png').stat().st_size > 5_000

  # Re-running finds every run done: nothing is trained again.
  again = _study(out, glyph_cache)
  assert again.returncode == 0 and 'training ' not in again.stdout
  with open(out / 'accuracy_study.json', encoding='utf-8') as f:
    assert json.load(f)['table'] == result['table']


def test_zero_backprop_for_simple_cnaps_is_refused(tmp_path):
  proc = run_binary('accuracy_study.py', f'--output_dir={tmp_path}', '--learners=simple_cnaps',
                    '--simple_cnaps_subsets=0,10')
  assert proc.returncode == 1
  assert 'the smallest |H| for Simple CNAPs and CNAPs is 1' in first_line(proc.stderr)


def test_a_cells_interval_includes_the_seeds_variance():
  """Three seeds on shared test episodes: the episode part is the runs' RMS half-width (it
  does not shrink with seeds), the seed part Student's t(2) = 4.303 times std / sqrt(3), in
  quadrature; one seed has no seed part, and says so."""
  from lite_tf.studies import accuracy_study  # pylint: disable=g-import-not-at-top
  ci, episode, seed, includes = accuracy_study.cell_interval([0.90, 0.92, 0.94],
                                                             [0.01, 0.01, 0.01])
  assert includes and episode == pytest.approx(0.01)
  assert seed == pytest.approx(4.303 * 0.02 / 3 ** 0.5)
  assert ci == pytest.approx((0.01 ** 2 + seed ** 2) ** 0.5)
  assert accuracy_study.cell_interval([0.9], [0.02]) == (0.02, 0.02, None, False)
  assert accuracy_study.t_quantile_975(1) == 12.706
  assert accuracy_study.t_quantile_975(60) == pytest.approx(2.000, abs=0.002)
  rows = [{'learner': 'protonets', 'image_size': 28, 'subset_size': '10', 'seed': s,
           'test_accuracy': a, 'test_ci95': 0.01} for s, a in enumerate([0.90, 0.92, 0.94])]
  (cell,) = accuracy_study.aggregate(rows)
  assert cell['ci95'] == pytest.approx(ci) and cell['seeds'] == 3
  assert '| protonets | 28 | 10 | 92.00 | 5.07 | 1.00 | 4.97 | 2.00 | 3 |' in (
      accuracy_study.markdown_table([cell]))
