"""Progress of a long loop (evaluation episodes, ORBIT or VTAB tasks, conversion, studies).

On a terminal: one line redrawn in place, `label: [=====>    ] 60/600 episodes, 12 s, ETA 1:48`.
Elsewhere (CI, a log file): a plain line at every tenth of the work and at least every
`every_s` seconds. Nothing at all for work that ends within `quiet_s` seconds. It writes to
stdout, beside Keras' epoch lines, so that the first line of stderr stays a failing binary's
`error:` line.
"""

import sys
import time


def _clock(seconds):
  seconds = int(round(seconds))
  if seconds < 60:
    return f'{seconds} s'
  minutes, seconds = divmod(seconds, 60)
  if minutes < 60:
    return f'{minutes}:{seconds:02d}'
  hours, minutes = divmod(minutes, 60)
  return f'{hours}:{minutes:02d}:{seconds:02d}'


class Progress:
  """`with Progress(600, 'test episodes') as p: ... p.update(done)`.

  Args:
    total: items in all (0 or None: a count without a bar or ETA).
    label: what is counted, e.g. 'evaluating 600 test episodes'.
    unit: the items' name in the count.
    stream: where to write (default sys.stdout); a bar when it is a terminal.
    quiet_s: print nothing before this many seconds have passed.
    every_s: off a terminal, a line at least this often.
  """

  def __init__(self, total, label, unit='', stream=None, quiet_s=2.0, every_s=30.0):
    self.total, self.label, self.unit = total or 0, label, unit
    self.stream = stream or sys.stdout
    try:
      self.terminal = self.stream.isatty()
    except (AttributeError, ValueError):
      self.terminal = False
    self.quiet_s, self.every_s = quiet_s, every_s
    self.start = time.monotonic()
    self.done, self.shown, self.last_time, self.next_tenth = 0, False, 0.0, 1

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close(finished=exc[0] is None)
    return False

  def _text(self, now):
    elapsed = now - self.start
    count = f'{self.done}/{self.total}' if self.total else f'{self.done}'
    text = f'{self.label}: {count}{" " + self.unit if self.unit else ""}, {_clock(elapsed)}'
    if self.total and 0 < self.done < self.total:
      text += f', ETA {_clock(elapsed * (self.total - self.done) / self.done)}'
    return text

  def update(self, done):
    """`done` items are finished."""
    self.done = done
    now = time.monotonic()
    if now - self.start < self.quiet_s:
      return
    if self.terminal:
      if now - self.last_time < 0.1 and done < self.total:
        return
      bar = ''
      if self.total:
        filled = int(20 * done / self.total)
        bar = '[' + '=' * filled + ('>' if filled < 20 else '') + ' ' * (19 - filled) + '] '
      text = self._text(now).replace(': ', ': ' + bar, 1)
      self.stream.write('\r' + text + '\x1b[K')
    else:
      tenth = self.total and done * 10 >= self.next_tenth * self.total
      if not tenth and now - self.last_time < self.every_s:
        return
      if self.total:
        self.next_tenth = done * 10 // self.total + 1
      self.stream.write(self._text(now) + '\n')
    self.stream.flush()
    self.shown, self.last_time = True, now

  def close(self, finished=True):
    """Ends the bar's line (a terminal) or writes the final count, if anything was shown."""
    if not self.shown:
      return
    if self.terminal:
      self.stream.write('\n')
    elif finished and self.done != self.total:
      self.stream.write(self._text(time.monotonic()) + '\n')
    self.stream.flush()
    self.shown = False
