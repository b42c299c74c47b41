"""What every binary in bin/ shares: it exits, with a non-zero status, as soon as it fails.

  if __name__ == '__main__':
    app.run(binary.exits_on_error(main))

Why not a plain sys.exit: after an error inside `model.fit`, the interpreter's shutdown
garbage-collects tf.data iterators whose `from_generator` threads are still running, and that
can deadlock (a training run on Meta-Dataset records hung in 4 of 5 runs after printing its
error). A failing binary therefore flushes its output and leaves with os._exit, which skips the
shutdown. Files are never left half-written by this: lite_tf writes them atomically.
"""

import functools
import os
import sys
import traceback

from absl import logging


def hard_exit(code):
  """Flushes stdout, stderr and absl's log, then ends the process at once with `code`."""
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass
  try:
    logging.flush()
  except Exception:  # pylint: disable=broad-except
    pass
  os._exit(code)  # pylint: disable=protected-access


def exits_on_error(main):
  """Wraps an absl main(argv): an exception or a non-zero sys.exit ends the process within
  moments (hard_exit) instead of going through an interpreter shutdown that may hang.

  A `sys.exit('message')` prints the message to stderr and exits 1; an unexpected exception
  prints its traceback and exits 1; Ctrl-C exits 130. A normal return (or sys.exit(0)) is left
  to absl and Python as usual.
  """

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except SystemExit as e:
      if e.code is None or e.code == 0:
        raise
      if isinstance(e.code, int):
        hard_exit(e.code)
      print(e.code, file=sys.stderr)
      hard_exit(1)
    except KeyboardInterrupt:
      print('interrupted', file=sys.stderr)
      hard_exit(130)
    except BaseException:  # pylint: disable=broad-except
      traceback.print_exc()
      hard_exit(1)
  return wrapped
