"""tf.distribute: one step on two replicas equals the single-device step over the same tasks.

Two logical CPU devices must be configured before TensorFlow starts, so the check runs in a
fresh process (tests/distribute_check.py)."""

import os
import subprocess
import sys


def test_two_replicas_equal_two_accumulated_tasks_on_one_device():
  script = os.path.join(os.path.dirname(__file__), 'distribute_check.py')
  result = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = dict(line.split(' ', 1) for line in result.stdout.splitlines() if ' ' in line)
  assert lines['replicas'] == '2'
  assert lines['tasks'] == '4 4'
  assert float(lines['moved']) > 1e-3  # the weights did change
  assert float(lines['difference']) < 1e-6
  assert float(lines['difference_unsharded']) < 1e-6
  # 'loop' recomputation (the default mode) on two replicas equals it on one device, and
  # equals the step without recomputation up to round-off (which Adam's normalisation magnifies
  # in near-zero gradients: 6e-5 seen, against 2e-2 moved by the two steps).
  assert float(lines['difference_recomputed']) < 1e-6
  assert float(lines['recomputed_vs_plain']) < 1e-3
  assert lines['shards'] == '[(2, 0), (2, 1)]'  # each replica decodes only its share
  assert lines['tasks_per_step'].startswith(
      'make_optimizer.tasks_per_step=3 accumulates tasks on one device; with --distribution '
      'the 2 replicas are the accumulation'), lines['tasks_per_step']
