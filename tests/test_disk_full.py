"""A full disk, on a small tmpfs: a clear error naming what could not be written, nothing
half-written, and the same command finishes the run once there is room again.

Needs permission to mount a tmpfs (root with CAP_SYS_ADMIN, as on CI); skipped otherwise.
"""

import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from conftest import first_line

ARGS = ['--gin_config=' + os.path.join(REPO_ROOT, 'gin', 'demo_protonets.gin'),
        '--gin_bindings=run_training.num_steps=2', '--gin_bindings=run_training.steps_per_log=2',
        '--gin_bindings=run_training.valid_episodes=1',
        '--gin_bindings=run_training.test_episodes=1']


@pytest.fixture()
def tmpfs(tmp_path):
  mount_point = tmp_path / 'small_disk'
  mount_point.mkdir()
  result = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(mount_point)],
                          capture_output=True, text=True, check=False)
  if result.returncode:
    pytest.skip(f'cannot mount a tmpfs here ({result.stderr.strip() or "mount failed"}); the '
                'disk-full tests need root with CAP_SYS_ADMIN')
  yield mount_point
  subprocess.run(['umount', '-l', str(mount_point)], check=False)


def _fill(mount_point, leave_kib):
  free = os.statvfs(mount_point).f_bavail * os.statvfs(mount_point).f_frsize
  with open(mount_point / 'filler', 'wb') as f:
    f.write(b'\0' * max(0, free - leave_kib * 1024))


def _train(train_dir):
  return subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'bin', 'train.py'),
                         f'--train_dir={train_dir}', *ARGS], capture_output=True, text=True,
                        timeout=600)


def _leftovers(train_dir):
  return [os.path.join(d, n) for d, dirs, files in os.walk(train_dir) for n in dirs + files
          if n.startswith('.tmp-') or n.endswith('_temp')]


@pytest.mark.parametrize('leave_kib,culprit', [
    (0, 'operative_config.gin'),  # full before anything is written
    # Room for the config, not for the weights (slow: it trains until the first write).
    pytest.param(700, 'for the best learner weights', marks=pytest.mark.slow),
])
def test_full_disk_is_a_clear_error_and_the_run_finishes_when_there_is_room(
    tmpfs, glyph_cache, leave_kib, culprit):
  _fill(tmpfs, leave_kib)
  train_dir = tmpfs / 'run'
  result = _train(train_dir)
  assert result.returncode == 1, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  line = first_line(result.stderr)
  assert line.startswith('error: [Errno 28]') and culprit in line, result.stderr[-3000:]
  assert not _leftovers(train_dir)
  assert not (train_dir / 'learner.weights.h5').exists()

  subprocess.run(['mount', '-o', 'remount,size=64m', str(tmpfs)], check=True)
  resumed = _train(train_dir)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert (train_dir / 'learner.weights.h5').exists() and not _leftovers(train_dir)
