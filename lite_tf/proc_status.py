"""Process memory figures from Linux's /proc/<pid>/status (VmRSS: resident now, VmHWM: peak)."""


def status_kib(field, pid='self'):
  """The value in KiB of `field` ('VmRSS', 'VmHWM', ...) of process `pid`, or None where
  /proc is not readable (not Linux, or the process has exited)."""
  try:
    with open(f'/proc/{pid}/status') as f:
      for line in f:
        if line.startswith(field + ':'):
          return int(line.split()[1])
  except OSError:
    pass
  return None
