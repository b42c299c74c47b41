"""Memory figures from /proc/<pid>/status."""

import os
import subprocess
import sys

import numpy as np
import pytest

from lite_tf import proc_status

pytestmark = pytest.mark.skipif(not os.path.exists('/proc/self/status'), reason='needs Linux /proc')


def test_rss_and_peak_follow_an_allocation():
  rss_before = proc_status.status_kib('VmRSS')
  block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB, touched
  rss_after = proc_status.status_kib('VmRSS')
  assert rss_after - rss_before >= 60 * 1024
  assert proc_status.status_kib('VmHWM') >= rss_after
  del block


def test_other_process_and_missing_process():
  child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])
  try:
    assert proc_status.status_kib('VmRSS', child.pid) > 0
  finally:
    child.kill()
    child.wait()
  assert proc_status.status_kib('VmRSS', child.pid) is None  # reaped: gone from /proc
  assert proc_status.status_kib('NoSuchField') is None
