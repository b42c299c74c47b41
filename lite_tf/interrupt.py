"""Clean stops on SIGINT (Ctrl-C) and SIGTERM (what schedulers send).

Every binary installs the handlers (lite_tf.binary.exits_on_error). Outside a `deferred()`
region a signal stops the binary at once, as Ctrl-C does in Python (`Interrupted` is raised
where the main thread is; nothing is left half-written: lite_tf writes files atomically).
Inside one, where stopping at an arbitrary instruction would lose work or leave threads
waiting (model.fit, evaluation loops), the first signal is only recorded: the work stops at
its next safe point (`check`: training after the task in progress, with a checkpoint of it;
evaluation between episodes) and says where it stopped and how to resume. A second signal
ends the process at once. The binary exits 130 after SIGINT and 143 after SIGTERM, with one
line on stderr and no traceback.

Why not Python's own KeyboardInterrupt: raised wherever the main thread happened to be (in
Keras' fit loop, a tf.data generator, a checkpoint write), it was swallowed there or left
threads waiting, so training ignored Ctrl-C, ran all its epochs and then hung.
"""

import contextlib
import os
import signal
import sys
import threading

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
_state = {'signal': None, 'deferred': 0}


class Interrupted(BaseException):  # pylint: disable=g-bad-exception-name
  """A stop asked for by a signal (a BaseException, as KeyboardInterrupt: `except Exception`
  does not swallow it); exits_on_error prints it and exits with `code`."""

  def __init__(self, message, code=130):
    super().__init__(message)
    self.code = code


def _name(signum):
  return signal.Signals(signum).name


def _handler(signum, frame):
  del frame
  if _state['deferred'] == 0:
    raise Interrupted(f'{_name(signum)}: stopped', EXIT_CODES.get(signum, 1))
  if _state['signal'] is None:
    _state['signal'] = signum
    print(f'\n{_name(signum)}: stopping after the step in progress (send it again to stop at '
          'once)', file=sys.stderr, flush=True)
    return
  print(f'{_name(signum)} again: stopping now', file=sys.stderr, flush=True)
  os._exit(EXIT_CODES.get(signum, 1))  # pylint: disable=protected-access


def install():
  """Installs the handlers for SIGINT and SIGTERM (from the main thread; elsewhere a no-op)."""
  if threading.current_thread() is not threading.main_thread():
    return
  for signum in EXIT_CODES:
    signal.signal(signum, _handler)


@contextlib.contextmanager
def deferred():
  """A region whose work stops at its own safe points (`check`, `requested`)."""
  _state['deferred'] += 1
  try:
    yield
  finally:
    _state['deferred'] -= 1


def requested():
  """The signal received inside a deferred region, or None."""
  return _state['signal']


def check(message):
  """Raises Interrupted if a signal came: `message` says what stopped and how to resume."""
  signum = _state['signal']
  if signum is not None:
    raise Interrupted(f'{_name(signum)}: {message}', EXIT_CODES.get(signum, 1))


def reset():
  """Forgets a received signal (tests)."""
  _state['signal'] = None
