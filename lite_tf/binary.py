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
import re
import sys
import traceback

from absl import logging


def define_gin_flags(config_help='gin config files (repeatable).',
                     bindings_help='gin bindings (repeatable).', config_default=()):
  """Defines --gin_config and --gin_bindings, the repeatable gin files and bindings a
  gin-configured binary passes to lite_tf.config.parse. The binary then makes them its own, so
  that its --help lists them: flags.adopt_module_key_flags(binary)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_multi_string('gin_config', list(config_default), config_help)
  flags.DEFINE_multi_string('gin_bindings', [], bindings_help)


def require_int_list(name, low=1):
  """Registers an absl validator: flag --name is a comma-separated list of integers >= low
  (absl then refuses it by name before main runs)."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  def valid(values):
    try:
      return values is None or all(int(v) >= low for v in values)
    except (TypeError, ValueError):
      return False
  flags.register_validator(name, valid,
                           message=f'--{name} must be comma-separated integers >= {low}')


def require_existing_dir(name):
  """Registers an absl validator: flag --name, when given, is an existing folder."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.register_validator(name, lambda v: v is None or os.path.isdir(v),
                           message=f'--{name} must be an existing folder')


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
  from lite_tf import quiet  # pylint: disable=g-import-not-at-top
  quiet.finish(code)
  os._exit(code)  # pylint: disable=protected-access


def user_error(e):
  """The message to print for an exception that comes from the user's data or machine rather
  than from a bug, or None. An error raised inside an episode source reaches the binary
  wrapped by tf.data in an OpError with a graph dump: the source's own exception is reported.
  A full disk or an unwritable path (OSError) is reported as it is."""
  if isinstance(e, OSError):
    return f'{e}'
  if isinstance(e, RuntimeError) and str(e).startswith('Required bindings for'):
    return f'gin: {e} (set them in a --gin_config file or with --gin_bindings)'
  if 'tensorflow' not in sys.modules:
    return None
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if isinstance(e, tf.errors.OpError):
    from lite_tf import episode  # pylint: disable=g-import-not-at-top
    source = episode.source_error()
    # Only the source's own error (its message is inside the OpError's), and only an error
    # about the data (ValueError: bad records, specs, episodes; OSError): a bug keeps its
    # traceback.
    if (isinstance(source, (ValueError, OSError)) and str(source)
        and str(source).splitlines()[0] in e.message):
      return f'{source}'
    if 'No space left on device' in e.message:
      return f'no space left on the device: {e.message.splitlines()[0]}'
    lost = _lost_worker(e)
    if lost:
      return lost
  return None


def _lost_worker(e):
  """The message for a multi-worker job whose collectives were aborted because a peer
  stopped (killed, crashed, preempted), or None."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if not isinstance(e, (tf.errors.UnavailableError, tf.errors.AbortedError,
                        tf.errors.DeadlineExceededError)):
    return None
  message = e.message
  if not any(s in message for s in ('Collective ops is aborted', 'unhealthy', 'heartbeat',
                                    'cluster check alive failed')):
    return None
  peers = sorted(set(re.findall(r'/job:(\w+)/replica:\d+/task:(\d+)', message.split(':', 1)[-1])))
  names = ', '.join(f'{job} {task}' for job, task in peers) or 'a worker'
  return (f'the multi-worker job lost a peer ({names} stopped answering): training stopped. '
          'Re-run every worker with the same command and TF_CONFIG to resume from the last '
          'checkpoint in --train_dir')


def describe(e):
  """One message for an error a binary reports: user_error's, else str(e)."""
  return user_error(e) or f'{e}'


def exits_on_error(main):
  """Wraps an absl main(argv): an exception or a non-zero sys.exit ends the process within
  moments (hard_exit) instead of going through an interpreter shutdown that may hang.

  A `sys.exit('message')` prints the message to stderr and exits 1; an error of the user's
  data or machine (user_error) prints one `error:` line and exits 1; any other exception
  prints its traceback and exits 1; SIGINT (Ctrl-C) and SIGTERM stop it as lite_tf.interrupt
  describes, with one line naming the signal and what was kept, exit 130 or 143. A normal
  return (or sys.exit(0)) is left to absl and Python as usual.
  """

  @functools.wraps(main)
  def wrapped(argv):
    from lite_tf import interrupt  # pylint: disable=g-import-not-at-top
    from lite_tf import quiet  # pylint: disable=g-import-not-at-top
    interrupt.install()
    quiet.quiet_python_logs()
    try:
      return main(argv)
    except interrupt.Interrupted as e:
      print(f'{e}', file=sys.stderr)
      hard_exit(e.code)
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
    except BaseException as e:  # pylint: disable=broad-except
      message = user_error(e) if isinstance(e, Exception) else None
      if message is None:
        traceback.print_exc()
      else:
        print(f'error: {message}', file=sys.stderr)
      hard_exit(1)
  return wrapped
