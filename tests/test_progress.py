"""lite_tf.progress: a bar redrawn in place on a terminal, a line per tenth elsewhere, silence
for work that ends quickly."""

import io

import numpy as np
import pytest

from lite_tf import progress


class _Clock:

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


class _Terminal(io.StringIO):

  def isatty(self):
    return True


@pytest.fixture
def clock(monkeypatch):
  fake = _Clock()
  monkeypatch.setattr(progress.time, 'monotonic', fake)
  return fake


def test_off_a_terminal_a_line_per_tenth_with_an_eta(clock):
  out = io.StringIO()
  with progress.Progress(600, 'test episodes', 'episodes', stream=out) as shown:
    for done in range(1, 601):
      clock.now += 0.1
      shown.update(done)
  lines = out.getvalue().splitlines()
  assert len(lines) == 11, lines  # the first once the work has taken quiet_s (2 s)
  assert lines[0] == 'test episodes: 21/600 episodes, 2 s, ETA 58 s'
  assert lines[1] == 'test episodes: 60/600 episodes, 6 s, ETA 54 s'
  assert lines[5] == 'test episodes: 300/600 episodes, 30 s, ETA 30 s'
  assert lines[-1] == 'test episodes: 600/600 episodes, 1:00'


def test_off_a_terminal_slow_work_gets_a_line_every_every_s(clock):
  out = io.StringIO()
  shown = progress.Progress(1000, 'slow', stream=out, every_s=30)
  for done in range(1, 21):
    clock.now += 10
    shown.update(done)
  assert len(out.getvalue().splitlines()) == 200 // 30 + 1  # 2% of the work, a line per 30 s


def test_work_that_ends_within_quiet_s_prints_nothing(clock):
  out = io.StringIO()
  with progress.Progress(50, 'quick', stream=out) as shown:
    for done in range(1, 51):
      clock.now += 0.01
      shown.update(done)
  assert out.getvalue() == ''


def test_on_a_terminal_one_line_redrawn_in_place(clock):
  out = _Terminal()
  with progress.Progress(40, 'ORBIT test tasks', 'tasks', stream=out) as shown:
    for done in range(1, 41):
      clock.now += 1
      shown.update(done)
  text = out.getvalue()
  assert text.count('\n') == 1 and text.endswith('\n')
  frames = [f for f in text.rstrip('\n').split('\r') if f]
  assert frames[-1] == 'ORBIT test tasks: [====================] 40/40 tasks, 40 s\x1b[K'
  assert frames[8] == 'ORBIT test tasks: [=====>              ] 10/40 tasks, 10 s, ETA 30 s\x1b[K'


def test_a_count_without_a_total(clock):
  out = io.StringIO()
  with progress.Progress(None, 'VTAB dtd', 'test examples', stream=out) as shown:
    for done in np.arange(1, 5) * 500:
      clock.now += 40
      shown.update(int(done))
  assert out.getvalue().splitlines()[-1] == 'VTAB dtd: 2000 test examples, 2:40'


def test_evaluation_shows_its_progress(monkeypatch):
  """evaluate_episodes reports through lite_tf.progress: with a clock that moves a second a
  call, 20 episodes give a line per tenth."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from conftest import small_episode  # pylint: disable=g-import-not-at-top
  from lite_tf.training import evaluate  # pylint: disable=g-import-not-at-top
  clock = _Clock()

  def tick():
    clock.now += 1
    return clock.now
  monkeypatch.setattr(progress.time, 'monotonic', tick)
  out = io.StringIO()
  monkeypatch.setattr(progress.sys, 'stdout', out)
  episode = small_episode().to_dict()
  evaluate.evaluate_episodes(lambda e: tf.zeros([tf.shape(e.query_labels)[0], 3]),
                             [episode] * 20, 20, label='test episodes')
  lines = out.getvalue().splitlines()
  assert lines[-1].startswith('test episodes: 20/20 episodes, '), lines
  assert len(lines) == 10, lines
