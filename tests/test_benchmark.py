"""bin/benchmark_memory.py runs every mode in fresh processes; LITE's memory stays near the floor."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT


# The two subprocess benchmarks below take ~80 s each on 2 cores: `make test-all` runs them.
@pytest.mark.slow
def test_benchmark_reports_lite_flat_and_full_growing(tmp_path):
  out = tmp_path / 'bench.json'
  result = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, 'bin', 'benchmark_memory.py'), '--backbone=conv4',
       '--image_size=64', '--support_sizes=40,160', '--num_backprop=8', '--chunk_size=8',
       '--query_batch_size=8', '--way=4', '--steps=1', f'--output={out}'],
      capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = {(r['mode'], r['support_size']): r for r in json.loads(out.read_text())['results']}
  floor = rows[('floor', 8)]['allocator_peak_bytes']
  assert floor and rows[('floor', 8)]['peak_rss_above_start_bytes'] is not None
  lite = [rows[('lite', n)]['allocator_peak_bytes'] for n in (40, 160)]
  full = [rows[('full', n)]['allocator_peak_bytes'] for n in (40, 160)]
  assert full[1] > 2.5 * full[0], 'exact back-propagation grows with N'
  assert lite[1] < 1.5 * lite[0], 'LITE stays nearly flat in N'
  assert lite[1] < full[1] / 2
  assert rows[('lite', 160)]['parts_sum_seconds'] > 0


def test_benchmark_rejects_bad_flags():
  result = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, 'bin', 'benchmark_memory.py'), '--num_backprop=0'],
      capture_output=True, text=True, timeout=120)
  assert result.returncode != 0 and '--num_backprop must be positive' in result.stderr


def test_pipeline_benchmark_reports_throughput(tmp_path):
  out = tmp_path / 'pipeline.json'
  result = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, 'bin', 'benchmark_pipeline.py'), '--classes=6',
       '--images_per_class=20', '--episodes=2', '--image_size=32', f'--output={out}'],
      capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(out.read_text())
  assert report['episodes_per_second'] > 0 and report['mean_support_size'] >= 5


@pytest.mark.slow
def test_maml_benchmark_memory_falls_with_window(tmp_path):
  out = tmp_path / 'maml.json'
  result = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, 'bin', 'benchmark_maml.py'), '--image_sizes=28',
       '--num_inner_steps=4', '--windows=1,4', '--steps=1', f'--output={out}'],
      capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = json.loads(out.read_text())['results']
  exact, windowed, literal, first = rows
  assert literal['literal_window'] and not windowed['literal_window']
  for lr in ('0.01', '0.1'):
    assert abs(exact['cosine_by_inner_lr'][lr] - 1.0) < 1e-4
    assert -1 <= literal['cosine_by_inner_lr'][lr] <= 1
  assert windowed['allocator_peak_bytes'] < exact['allocator_peak_bytes']
  assert first['allocator_peak_bytes'] < windowed['allocator_peak_bytes']
  assert all(r['process_peak_rss_bytes'] >= r['peak_rss_above_start_bytes'] for r in rows)


def test_op_profile_sums_kernel_time_by_op_type():
  """lite_tf.benchmarks.op_profile: a traced matmul and convolution show up under their op
  types with positive seconds; the convolution, 30x the work, takes longer."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from lite_tf.benchmarks import op_profile  # pylint: disable=g-import-not-at-top
  x = tf.random.normal([64, 256])
  images = tf.random.normal([16, 64, 64, 32])
  kernel = tf.random.normal([3, 3, 32, 32])

  @tf.function
  def fn():
    return tf.matmul(x, x, transpose_b=True), tf.nn.conv2d(images, kernel, 1, 'SAME')

  fn()
  seconds = op_profile.op_seconds(fn, runs=2)
  conv = sum(v for k, v in seconds.items() if 'Conv2D' in k)
  matmul = sum(v for k, v in seconds.items() if 'MatMul' in k)
  assert conv > 0 and matmul > 0, seconds
  assert conv > matmul, seconds


def test_op_profile_benchmark_rejects_bad_flags():
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, 'bin', 'benchmark_op_profile.py'),
       '--precisions=float32,float8'], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1
  assert '--precisions' in proc.stderr and 'float8' in proc.stderr
