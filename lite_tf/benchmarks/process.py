"""Runs one benchmark configuration in a fresh Python process, with a memory watchdog."""

import json
import os
import subprocess
import sys
import threading
import time

from lite_tf import atomic
from lite_tf import proc_status


def child_env(malloc='default', bfc=True):
  """TF's BFC allocator on CPU (so get_memory_info works; bfc=False keeps TF's default CPU
  allocator, what users run, for RSS-only figures) and the chosen glibc malloc mode."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  env.pop('TF_CPU_ALLOCATOR_USE_BFC', None)
  if bfc:
    env['TF_CPU_ALLOCATOR_USE_BFC'] = 'true'
  if malloc == 'no_mmap':
    env.update(MALLOC_MMAP_MAX_='0', MALLOC_TRIM_THRESHOLD_=str(64 * 1024 ** 3))
  return env


def _rss_bytes(pid):
  return (proc_status.status_kib('VmRSS', pid) or 0) * 1024


def run_child(script, args, memory_limit_gb, malloc='default', base=None, bfc=True):
  """Runs `python script args...`; returns the dict after its 'RESULT ' line, or an error dict.

  A watchdog kills the child when its resident set passes memory_limit_gb.
  """
  proc = subprocess.Popen([sys.executable, script, *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=child_env(malloc, bfc))
  state = {'oom': False, 'max_seen': 0}
  limit = memory_limit_gb * 1024 ** 3

  def watch():
    while proc.poll() is None:
      # The child's VmHWM (its peak since start or its last reset) and VmRSS, as seen from
      # outside: their maximum is a lower bound of the whole process's peak.
      rss = _rss_bytes(proc.pid)
      hwm = (proc_status.status_kib('VmHWM', proc.pid) or 0) * 1024
      state['max_seen'] = max(state['max_seen'], rss, hwm)
      if rss > limit:
        state['oom'] = True
        proc.kill()
        return
      time.sleep(0.05)

  watcher = threading.Thread(target=watch, daemon=True)
  watcher.start()
  out, err = proc.communicate()
  watcher.join()
  base = dict(base or {})
  results = [json.loads(line[len('RESULT '):]) for line in out.splitlines()
             if line.startswith('RESULT ')]
  if results:  # the last one is the most complete; a child may be killed after reporting
    result = results[-1]
    result['watcher_peak_rss_bytes'] = state['max_seen']
    if state['oom']:
      result['note'] = f'killed after this report: RSS passed {memory_limit_gb:g} GB'
    return result
  if state['oom']:
    return dict(base, error=f'did not fit: RSS passed {memory_limit_gb:g} GB')
  if proc.returncode in (-9, 137):
    return dict(base, error='killed (out of memory?)')
  return dict(base, error=f'exit {proc.returncode}: {err.strip().splitlines()[-1:]}')


def write_json(path, payload):
  """Atomic JSON write (lite_tf.atomic)."""
  atomic.write_json(path, payload, indent=1)
