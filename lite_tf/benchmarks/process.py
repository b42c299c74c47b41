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


class Watcher:
  """Watches a child process from outside, every 50 ms until it exits: the largest of its
  VmHWM (its peak since start) and VmRSS seen, a lower bound of the whole process's peak;
  kills it when its resident set passes `memory_limit_gb`. `on_poll(watcher)` (optional) runs
  at each poll, in the watching thread."""

  def __init__(self, proc, memory_limit_gb, on_poll=None):
    self.proc = proc
    self.limit = memory_limit_gb * 1024 ** 3
    self.on_poll = on_poll
    self.oom = False
    self.max_seen = 0
    self._thread = threading.Thread(target=self._watch, daemon=True)
    self._thread.start()

  def _watch(self):
    while self.proc.poll() is None:
      rss = _rss_bytes(self.proc.pid)
      hwm = (proc_status.status_kib('VmHWM', self.proc.pid) or 0) * 1024
      self.max_seen = max(self.max_seen, rss, hwm)
      if self.on_poll is not None:
        try:
          self.on_poll(self)
        except Exception:  # pylint: disable=broad-except
          pass  # a failing extra must not end the watch (and with it the memory limit)
      if rss > self.limit:
        self.oom = True
        self.proc.kill()
        return
      time.sleep(0.05)

  def join(self):
    self._thread.join()


def run_child(script, args, memory_limit_gb, malloc='default', base=None, bfc=True):
  """Runs `python script args...`; returns the dict after its 'RESULT ' line, or an error dict.

  A watchdog kills the child when its resident set passes memory_limit_gb.
  """
  proc = subprocess.Popen([sys.executable, script, *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=child_env(malloc, bfc))
  watcher = Watcher(proc, memory_limit_gb)
  out, err = proc.communicate()
  watcher.join()
  base = dict(base or {})
  results = [json.loads(line[len('RESULT '):]) for line in out.splitlines()
             if line.startswith('RESULT ')]
  if results:  # the last one is the most complete; a child may be killed after reporting
    result = results[-1]
    result['watcher_peak_rss_bytes'] = watcher.max_seen
    if watcher.oom:
      result['note'] = f'killed after this report: RSS passed {memory_limit_gb:g} GB'
    return result
  if watcher.oom:
    return dict(base, error=f'did not fit: RSS passed {memory_limit_gb:g} GB')
  if proc.returncode in (-9, 137):
    return dict(base, error='killed (out of memory?)')
  return dict(base, error=f'exit {proc.returncode}: {err.strip().splitlines()[-1:]}')


def machine_info():
  """What a benchmark figure depends on: CPU model, logical cores, the vector and bfloat16
  flags, TensorFlow's version and the GPUs seen. Recorded in the benchmarks' JSON."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from lite_tf import precision  # pylint: disable=g-import-not-at-top
  model = None
  try:
    with open('/proc/cpuinfo') as f:
      model = next((l.split(':', 1)[1].strip() for l in f if l.startswith('model name')), None)
  except OSError:
    pass
  flags = precision.cpu_flags()
  shown = ('avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_bf16', 'amx_tile')
  return {
      'cpu_model': model,
      'cpu_count': os.cpu_count(),
      'cpu_flags': None if flags is None else sorted(f for f in shown if f in flags),
      'native_bfloat16': precision.cpu_has_native_bfloat16(),
      'tensorflow': tf.__version__,
      'gpus': [d.name for d in tf.config.list_physical_devices('GPU')],
  }


def write_json(path, payload):
  """Atomic JSON write (lite_tf.atomic), with machine_info() under 'machine' unless the payload
  has one."""
  if isinstance(payload, dict) and 'machine' not in payload:
    payload = dict(payload, machine=machine_info())
  atomic.write_json(path, payload, indent=1)
