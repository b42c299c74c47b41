"""The memory planner (lite_tf.lite.memory_plan): its choices on given costs, its predictions
against measured TF allocator peaks of real LITE steps, and its errors for budgets that cannot
work."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from conftest import first_line
from conftest import run_binary
from lite_tf.lite import memory_plan

MB = memory_plan.MB
DEMO_GIN = os.path.join(REPO_ROOT, 'gin', 'demo_protonets.gin')


def synthetic_costs(**overrides):
  """Costs in MB-sized units: 100 MB fixed, 10 MB per back-propagated image, 5 per query
  image, 1 per chunk image; recomputation 2 MB per row."""
  values = dict(device='test', base=100 * MB, image_bytes=0.1 * MB, per_support_row=0.01 * MB,
                step_fixed=20 * MB, per_backprop_image=10 * MB, per_query_image=5 * MB,
                chunk_fixed=5 * MB, per_chunk_image=1 * MB, recompute_batch=8,
                recompute_fixed=60 * MB, per_recomputed_row=2 * MB)
  values.update(overrides)
  return memory_plan.MemoryCosts(**values)


def test_prediction_is_the_larger_phase_above_what_is_fixed():
  costs = synthetic_costs()
  # N = 100, Q = 50: fixed 100 + 150 * 0.1 + 100 * 0.01 = 116 MB; backprop 20 + 10 * 10 +
  # 5 * 20 = 220 MB; chunk 5 + 30 = 35 MB.
  assert costs.predict(100, 50, 10, 30, 20) / MB == pytest.approx(116 + 220)
  # A chunk of 400 outweighs the backprop phase: 5 + 400 = 405 MB (chunks hold at most N - H).
  assert costs.predict(1000, 50, 10, 400, 20) / MB == pytest.approx(
      100 + 105 + 10 + 405)
  assert costs.predict(100, 50, 10, 30, 20, recompute=True) / MB == pytest.approx(
      116 + 60 + 2 * 30)
  # |H| >= N: no chunk phase; the images held by three tasks count three times.
  assert costs.predict(10, 10, 40, 40, 10, tasks_held=3) / MB == pytest.approx(
      100 + 6 + 0.1 + 20 + 100 + 50)


def test_plan_takes_the_largest_backprop_then_chunk_then_query_batch():
  costs = synthetic_costs(recompute_fixed=None, per_recomputed_row=None, recompute_batch=None)
  # Budget 600 MB, N = 500, Q = 100: fixed 100 + 60 + 5 = 165; phase room 435.
  plan = memory_plan.plan(costs, 600, 500, 100, num_backprop=100, chunk_size=200,
                          query_batch_size=64, margin=0.0)
  # |H| = 40: 20 + 400 + 5 (query 1) = 425 <= 435; |H| = 48 would need 505.
  assert plan.num_backprop == 40 and plan.recompute_batch is None
  assert plan.chunk_size == 200  # 5 + 200 = 205: the chunk phase stays below the backprop one
  assert plan.query_batch_size == 3  # 20 + 400 + 5 q <= 435 -> q <= 3
  assert plan.predicted_peak_bytes <= 600 * MB
  larger = costs.predict(500, 100, 48, 1, 1)
  assert larger > 600 * MB


def test_plan_turns_recomputation_on_only_when_it_must():
  costs = synthetic_costs()
  # Without recomputation |H| = 40 (query 1) needs 165 + 425 = 590 MB; with it 165 + 60 +
  # 2 * 41 = 307 MB.
  roomy = memory_plan.plan(costs, 700, 500, 100, 40, 40, 40, margin=0.0)
  assert (roomy.num_backprop, roomy.recompute_batch) == (40, None)
  tight = memory_plan.plan(costs, 400, 500, 100, 40, 40, 40, margin=0.0)
  assert (tight.num_backprop, tight.recompute_batch) == (40, 8)
  assert tight.predicted_peak_bytes <= 400 * MB


@pytest.mark.parametrize('budget', [-5, 0, 150, 'lots', True])
def test_budgets_that_cannot_work_name_the_binding_and_the_smallest_budget(budget):
  costs = synthetic_costs()
  # Smallest step: |H| = 1, chunk 1, query 1; without recomputation 20 + 10 + 5 = 35 MB of
  # phase (recomputed: 64), above 165 MB fixed: 200 MB.
  with pytest.raises(memory_plan.MemoryBudgetError,
                     match=r'lite\.memory_budget_mb.*lite\.memory_budget_mb = 200$'):
    memory_plan.plan(costs, budget, 500, 100, 40, 40, 40, margin=0.0)


def test_the_margin_is_left_free():
  costs = synthetic_costs(recompute_fixed=None, per_recomputed_row=None, recompute_batch=None)
  # With 20% kept free, 600 MB leaves 480 MB to plan in: 315 MB of phase room, |H| = 24
  # (20 + 240 + 5 = 265; 32 would need 345).
  plan = memory_plan.plan(costs, 600, 500, 100, 100, 200, 64, margin=0.2)
  assert plan.num_backprop == 24 and plan.predicted_peak_bytes <= 480 * MB
  with pytest.raises(memory_plan.MemoryBudgetError, match=r'lite\.memory_budget_mb = 250$'):
    memory_plan.plan(costs, 220, 500, 100, 100, 200, 64, margin=0.2)  # 200 / 0.8


BUDGET_MB = 80


@pytest.fixture(scope='module')
def measured():
  env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPU_ALLOCATOR_USE_BFC='true')
  proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'tests', 'memory_plan_probe.py'),
                         str(BUDGET_MB)], capture_output=True, text=True, env=env, timeout=600,
                        check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
  assert proc.returncode == 0 and lines, proc.stderr[-3000:]
  return json.loads(lines[-1][len('RESULT '):])


def _nearest(value, measured):
  return min(measured, key=lambda m: abs(m - value))


# Slow, with the other tests on `measured`: its probe process measures every step five times
# (about 100 s on 2 cores); the default suite plans through the binary
# (test_train_binary_prints_and_keeps_its_plan) and checks the planner's logic above.
@pytest.mark.slow
def test_predictions_of_unmeasured_steps_against_measured_ones(measured):
  """Steps far from the calibration's probes (|H| 60, chunks of 100, recomputation), each
  measured five times at its full size (the probe runs one inter-op thread, so a step's peak
  does not depend on timing). The planner's prediction (one step of the configuration on a
  small task, |H| + two chunks, extrapolated to N) within 15% of them. The linear model alone,
  from the probes, only within a factor of two: on some CPUs the kernels' scratch differs
  between the small probes and larger steps, which is why a plan is always checked by a
  measured step (fit_plan, below)."""
  for row in measured['rows']:
    assert row['from_small_task'] == pytest.approx(
        _nearest(row['from_small_task'], row['measured']), rel=0.15), row
    assert 0.5 * max(row['measured']) <= row['model'] <= 2.0 * max(row['measured']), row


@pytest.mark.slow  # the `measured` probe (above)
def test_fitted_plan_stays_within_its_budget_and_leaves_training_untouched(measured):
  budget = BUDGET_MB * MB  # the plan keeps 10% of it free (lite.memory_plan_margin)
  h, chunk, query_batch, _ = measured['plan']
  assert 1 <= h <= 40 and chunk >= 1 and query_batch >= 1
  for n, peaks in measured['measured_at_plan'].items():
    assert max(peaks) <= budget, (n, [p / MB for p in peaks])
  assert measured['predicted_peak'] <= 0.9 * budget
  # Calibration runs optimizer steps and undoes them.
  assert measured['weights_unchanged'] and measured['steps_at_start'] == 0


# Slow: with the other test process busy on the second core, the calibration's small-task
# steps once peaked lower (67.3 MB predicted against 77.0 MB measured five times alike), so
# the 10% bound is checked on a quiet machine (make test-all) and the budget above by default.
@pytest.mark.slow
def test_fitted_plan_predicts_its_peak_within_ten_percent(measured):
  # The prediction the plan prints (the largest of three steps on a small task, extrapolated
  # to N = 200) against five steps measured at N = 200: within 10%.
  again = measured['measured_at_plan']['200']
  assert measured['predicted_peak'] == pytest.approx(
      _nearest(measured['predicted_peak'], again), rel=0.10), again


@pytest.mark.slow  # ~27 s; the planner's refusal itself is tested without the binary
def test_train_binary_refuses_a_budget_below_the_fixed_overhead(tmp_path, glyph_cache):
  proc = run_binary('train.py', f'--gin_config={DEMO_GIN}',
                    f'--train_dir={tmp_path}/run',
                    f"--gin_bindings=glyph_episodes.cache_dir='{glyph_cache}'",
                    '--gin_bindings=lite.memory_budget_mb=0.5',
                    '--gin_bindings=lite.memory_plan_support_size=100',
                    '--gin_bindings=lite.memory_plan_query_size=50')
  assert proc.returncode == 1
  message = first_line(proc.stderr)
  assert 'lite.memory_budget_mb=0.5 MB does not fit' in message
  assert 'the smallest budget that works is lite.memory_budget_mb = ' in message
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints' / 'checkpoint')


@pytest.mark.slow  # the same check as test_budgets_that_cannot_work_..., through the binary
def test_plan_binary_refuses_a_negative_budget():
  proc = run_binary('plan_memory.py', f'--gin_config={DEMO_GIN}',
                    '--budgets_mb=-100', '--support_size=50', '--query_size=20')
  # Refused where the flag is parsed, before TensorFlow runs (binary.require_int_list); a
  # budget that is positive but too small is named with the smallest one that works (below).
  assert proc.returncode == 1
  message = first_line(proc.stderr)
  assert message == ("FATAL Flags parsing error: flag --budgets_mb=['-100']: --budgets_mb must "
                     'be comma-separated integers >= 1'), message


def test_train_binary_prints_and_keeps_its_plan(tmp_path, glyph_cache):
  args = [f'--gin_config={DEMO_GIN}', f'--train_dir={tmp_path}/run',
          f"--gin_bindings=glyph_episodes.cache_dir='{glyph_cache}'",
          '--gin_bindings=lite.memory_budget_mb=150',
          '--gin_bindings=lite.memory_plan_support_size=100',
          '--gin_bindings=lite.memory_plan_query_size=50',
          '--gin_bindings=run_training.num_steps=2', '--gin_bindings=run_training.steps_per_log=2',
          '--gin_bindings=run_training.valid_episodes=0',
          '--gin_bindings=run_training.test_episodes=2']
  proc = run_binary('train.py', *args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = next(l for l in proc.stdout.splitlines() if l.startswith('memory plan: '))
  assert 'predicted TF allocator peak' in line and 'of the 150 MB budget' in line
  with open(tmp_path / 'run' / 'memory_plan.json', encoding='utf-8') as f:
    kept = json.load(f)
  assert kept['plan']['num_backprop'] <= 10 and kept['key']['budget_mb'] == 150
  # The demo asks for |H| = 10, chunk 16, query batch 25: they fit 150 MB at 28x28.
  assert kept['plan']['predicted_peak_bytes'] <= 0.9 * 150 * MB
  again = run_binary('train.py', *args)
  assert again.returncode == 0, again.stderr[-3000:]
  assert f'(kept from {tmp_path}/run/memory_plan.json)' in again.stdout
