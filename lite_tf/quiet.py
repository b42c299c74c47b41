"""A binary's terminal shows lite_tf's own lines: TensorFlow's native log stays in a file.

TensorFlow's C++ runtime writes its log straight to file descriptor 2: start-up lines on every
run (`oneDNN custom operations are on ...`, `All log messages before absl::InitializeLog() ...`,
twice on TF 2.21, where TF_CPP_MIN_LOG_LEVEL no longer hides them) and, when something fails,
several lines of gRPC or runtime detail before the Python error that says what happened. Every
binary in bin/ calls `start()` before TensorFlow loads:

- fd 2 becomes a pipe read by a small forked process, which keeps what TensorFlow's native code
  writes out of the terminal: in a file, `native_log_path()`, named on stderr after an error
  line when the binary fails, and removed when it succeeds. A native FATAL line and everything
  after it (a crash report) still reaches the terminal.
- Python's own stderr (`sys.stderr`: lite_tf's lines, absl logging, tracebacks) stays on the
  terminal, unfiltered, so the first line of a failing binary is its `error:` line.
- `quiet_python_logs()` (called once flags are parsed) drops the INFO lines of TensorFlow's
  and Keras' Python code, keeping lite_tf's own and every warning and error.

`--verbosity` (`-v`) on the command line, or LITE_TF_NATIVE_LOG=show, turns all of this off:
everything is printed as TensorFlow prints it. The forked reader ignores SIGINT and SIGTERM and
ends when the binary's last copy of fd 2 closes, so it never outlives the binary's output.
"""

import atexit
import os
import re
import signal
import sys
import tempfile
import time

_state = {'pid': None, 'path': None, 'terminal': None, 'verbose': False}

# A native log record: `E0000 00:00:1796651937.302579   31899 ring_alg.cc:291] ...`.
_NATIVE = re.compile(rb'^([IWEF])\d{4} [\d:.]+ +\d+ [^ \]]+\] ')
# Printed on every start and meaningless to a user: dropped, not even kept in the file.
_STARTUP = (b'WARNING: All log messages before absl::InitializeLog() is called',
            b'oneDNN custom operations are on')


def verbose_requested(argv):
  """Whether the command line asks for absl's verbosity (--verbosity, -v, --v)."""
  return any(re.match(r'^--?(verbosity|v)(=|$)', a) for a in argv[1:])


def start(argv=None):
  """Routes the native log (fd 2) into a file; a no-op when verbosity is asked for, on
  platforms without fork, or when already started."""
  argv = sys.argv if argv is None else argv
  if (_state['pid'] is not None or not hasattr(os, 'fork')
      or os.environ.get('LITE_TF_NATIVE_LOG') == 'show' or verbose_requested(argv)):
    _state['verbose'] = _state['pid'] is None
    return
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  name = os.path.splitext(os.path.basename(argv[0] or 'python'))[0]
  path = os.path.join(tempfile.gettempdir(), 'lite_tf_logs',
                      f'{name}-{time.strftime("%Y%m%d-%H%M%S")}-{os.getpid()}.log')
  sys.stderr.flush()
  terminal = os.dup(2)
  read_end, write_end = os.pipe()
  pid = os.fork()
  if pid == 0:  # the reader
    os.close(write_end)
    _read(read_end, terminal, path)
    os._exit(0)  # pylint: disable=protected-access
  os.close(read_end)
  os.dup2(write_end, 2)
  os.close(write_end)
  os.set_inheritable(terminal, False)
  # Python's stderr writes to the terminal itself: its lines are not the native log's.
  sys.stderr = os.fdopen(terminal, 'w', buffering=1, encoding=sys.stderr.encoding,
                         errors=sys.stderr.errors, closefd=False)
  _state.update(pid=pid, path=path, terminal=terminal)
  atexit.register(finish, 0)


def _read(read_end, terminal, path):
  """The reader process: native lines into `path` (made when the first one comes), a FATAL
  record and all after it to the terminal."""
  for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(signum, signal.SIG_IGN)
  log, fatal, pending = None, False, b''
  while True:
    try:
      chunk = os.read(read_end, 65536)
    except InterruptedError:
      continue
    if not chunk:
      break
    lines = (pending + chunk).split(b'\n')
    pending = lines.pop()
    for line in lines:
      match = _NATIVE.match(line)
      fatal = fatal or bool(match and match.group(1) == b'F')
      if fatal:
        os.write(terminal, line + b'\n')
      elif not any(startup in line for startup in _STARTUP):
        if log is None:
          os.makedirs(os.path.dirname(path), exist_ok=True)
          log = open(path, 'ab', buffering=0)  # pylint: disable=consider-using-with
        log.write(line + b'\n')
  if pending and fatal:
    os.write(terminal, pending)
  elif pending:
    log = log or open(path, 'ab', buffering=0)  # pylint: disable=consider-using-with
    log.write(pending)
  if log is not None:
    log.close()


def native_log_path():
  """Where the native log of this process goes (None when it goes to the terminal)."""
  return _state['path']


def stderr_is_terminal():
  """Whether this binary's stderr is a terminal (fd 2 itself is the reader's pipe)."""
  fd = _state['terminal'] if _state['terminal'] is not None else 2
  try:
    return os.isatty(fd)
  except OSError:
    return False


def finish(code):
  """Closes the native log: waits (briefly) for the reader to write what it was given; on
  success removes the file, on failure names it on stderr if TensorFlow wrote anything."""
  pid = _state['pid']
  if pid is None:
    return
  _state['pid'] = None
  try:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # the reader sees the end of its pipe
    os.close(devnull)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0):
      time.sleep(0.01)
  except OSError:
    pass
  path = _state['path']
  if not os.path.exists(path):
    return
  if code == 0:
    os.remove(path)
    try:
      os.rmdir(os.path.dirname(path))  # when no other run's log is there
    except OSError:
      pass
  else:
    print(f"(TensorFlow's own log of this run: {path})", file=sys.stderr, flush=True)


def quiet_python_logs():
  """Drops INFO records of Python code outside lite_tf (TensorFlow's `Sharding callback
  duration`, `Collective all_reduce tensors`, ...) unless --verbosity was given."""
  if _state['verbose']:
    return
  import logging  # pylint: disable=g-import-not-at-top
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  package = os.path.dirname(os.path.abspath(__file__))
  binaries = os.path.join(os.path.dirname(package), 'bin')

  def keep(record):
    return (record.levelno > logging.INFO
            or os.path.abspath(record.pathname).startswith((package, binaries)))

  absl_logging.get_absl_handler().addFilter(keep)
  # TensorFlow's logger also prints through a handler of its own ('INFO:tensorflow:...').
  logging.getLogger('tensorflow').setLevel(logging.WARNING)
