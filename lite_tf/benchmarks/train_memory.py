"""Whole-process peak memory and time of bin/train.py itself on large fixed-size tasks.

bin/benchmark_memory.py measures one LITE step in a process of its own; this runs the training
binary a user runs, with its input pipeline (records decoded by tf.data, two tasks
prefetched), checkpoints after every task and the final test evaluation, on Meta-Dataset
records that it writes first: glyph classes (lite_tf.data.glyphs) rendered at the image size,
`jitters_per_font` jittered copies per font (16 fonts), stored as JPEG like ImageNet's
records. Tasks are fixed-way, fixed-shot (EpisodeDescriptionConfig.num_ways / num_support /
num_query), so that every task has N = way * shot support images.

The binary runs in a child process watched from outside (lite_tf.benchmarks.process.Watcher:
VmHWM, the peak from process start); `run_training.steps_per_log = 1` makes it write one line
of history.jsonl per task, and the watcher notes when each line appears: the first from
process start (imports, records, model, tracing, the first task), the others one task each
(plus its checkpoint).
"""

import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata

from PIL import Image

from lite_tf import atomic
from lite_tf.benchmarks import process
from lite_tf.data import glyphs

# Characters that every one of glyphs.FONT_FILES draws: 52 classes at most.
CHARS = (glyphs.ALPHABETS['latin_upper'] + glyphs.ALPHABETS['digits']
         + glyphs.ALPHABETS['latin_lower'])
SPLITS = ('train', 'valid', 'test')
JPEG_QUALITY = 90


def class_name(char):
  return unicodedata.name(char).lower().replace(' ', '_').replace('-', '_')


def records_name(image_size, classes_per_split, jitters_per_font, seed):
  return f'glyphs_s{image_size}_c{classes_per_split}_j{jitters_per_font}_seed{seed}'


def write_glyph_records(output_dir, image_size, classes_per_split, jitters_per_font, seed=0):
  """Renders 3 * classes_per_split glyph classes (train, valid, test) at image_size and
  converts them to records in output_dir (lite_tf.data.meta_dataset.convert); returns the spec. An
  existing complete output_dir (its dataset_spec.json written last) is kept as it is."""
  from lite_tf.data.meta_dataset import convert  # pylint: disable=g-import-not-at-top
  from lite_tf.data.meta_dataset import dataset_spec  # pylint: disable=g-import-not-at-top
  if os.path.exists(os.path.join(output_dir, 'dataset_spec.json')):
    return dataset_spec.load(output_dir)
  num_classes = 3 * classes_per_split
  if num_classes > len(CHARS):
    raise ValueError(f'classes_per_split={classes_per_split}: at most {len(CHARS) // 3} '
                     f'(3 splits of the {len(CHARS)} characters every font draws)')
  chars = CHARS[:num_classes]
  with tempfile.TemporaryDirectory(prefix='glyph_images_') as tmp:
    images_dir = os.path.join(tmp, 'images')
    for char, images in glyphs.iter_char_images(chars, image_size, jitters_per_font, seed):
      folder = os.path.join(images_dir, class_name(char))
      os.makedirs(folder)
      for i, image in enumerate(images):
        out = io.BytesIO()
        Image.fromarray(image).save(out, format='JPEG', quality=JPEG_QUALITY)
        with open(os.path.join(folder, f'{i:04d}.jpg'), 'wb') as f:
          f.write(out.getvalue())
    splits = {s: [class_name(c) for c in chars[k * classes_per_split:(k + 1) * classes_per_split]]
              for k, s in enumerate(SPLITS)}
    splits_json = os.path.join(tmp, 'splits.json')
    atomic.write_json(splits_json, splits)
    report = convert.convert(images_dir, output_dir, os.path.basename(output_dir.rstrip('/')),
                             splits_json=splits_json, overwrite=True)
  return report.spec


def gin_bindings(records_dir, image_size, way, shot, query_shot, num_steps, precision,
                 recompute_batch, recompute_mode, set_encoder_size, image_dtype, test_episodes):
  """The bindings that make bin/train.py (over gin/records_*.gin) train num_steps fixed-size
  tasks with one history line per task and evaluate test_episodes tasks."""
  bindings = [
      f'records_episodes.records_dir = {records_dir!r}',
      f'IMAGE_SIZE = {image_size}',
      f'records_episodes.image_dtype = {image_dtype!r}',
      f'EpisodeDescriptionConfig.num_ways = {way}',
      # Meta-Dataset's sampler checks min_ways against the split's classes, even with fixed ways.
      f'EpisodeDescriptionConfig.min_ways = {min(way, 5)}',
      f'EpisodeDescriptionConfig.num_support = {shot}',
      f'EpisodeDescriptionConfig.num_query = {query_shot}',
      f'precision.policy = {precision!r}',
      f'run_training.num_steps = {num_steps}',
      'run_training.steps_per_log = 1',
      'run_training.valid_episodes = 0',
      f'run_training.test_episodes = {test_episodes}',
  ]
  if recompute_batch:
    bindings += [f'lite.recompute_batch = {recompute_batch}',
                 f'lite.recompute_mode = {recompute_mode!r}']
  elif recompute_batch == 0:  # none, whatever the default ('auto') would choose
    bindings.append('lite.recompute_batch = None')
  if set_encoder_size is not None:
    bindings += [f'simple_cnaps.set_encoder_size = {set_encoder_size}',
                 f'cnaps.set_encoder_size = {set_encoder_size}']
  return bindings


class _HistoryClock:
  """Notes the time (from `start`) at which each line of a history.jsonl first appears."""

  def __init__(self, path, start):
    self.path = path
    self.start = start
    self.times = []
    self.peaks = []  # the watcher's peak so far at each line

  def poll(self, watcher):
    try:
      with open(self.path, 'rb') as f:
        lines = f.read().count(b'\n')
    except OSError:
      return
    while len(self.times) < lines:
      self.times.append(time.monotonic() - self.start)
      self.peaks.append(watcher.max_seen)


def _history(path):
  """history.jsonl's records (step, loss, support_size, way, ...), or [] if there is none."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def run_train(train_args, train_dir, memory_limit_gb, bfc=False, malloc='default',
              timeout_s=None):
  """Runs `python bin/train.py train_args --train_dir=train_dir` (a fresh train_dir) in a
  watched child; returns a dict of its whole-process peak RSS and task times, or with
  'error' (and the end of its stderr) if it failed or passed memory_limit_gb."""
  script = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))), 'bin', 'train.py')
  if os.path.exists(train_dir):
    shutil.rmtree(train_dir)
  start = time.monotonic()
  proc = subprocess.Popen([sys.executable, script, *train_args, f'--train_dir={train_dir}'],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=process.child_env(malloc, bfc))
  clock = _HistoryClock(os.path.join(train_dir, 'history.jsonl'), start)
  timed_out = False
  try:
    watcher = process.Watcher(proc, memory_limit_gb, on_poll=clock.poll)
    try:
      out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
      timed_out = True
      proc.kill()
      out, err = proc.communicate()
    watcher.join()
  finally:  # an exception or signal here must not leave the child training
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  clock.poll(watcher)
  total = time.monotonic() - start
  result = {
      'exit_code': proc.returncode,
      'process_peak_rss_bytes': watcher.max_seen,
      'peak_rss_during_training_bytes': clock.peaks[-1] if clock.peaks else None,
      'history_line_seconds': clock.times,
      'first_task_seconds_from_start': clock.times[0] if clock.times else None,
      'seconds_per_task': (statistics.mean(b - a for a, b in zip(clock.times, clock.times[1:]))
                           if len(clock.times) > 1 else None),
      'total_seconds': total,
      'bfc': bfc,
      'malloc': malloc,
  }
  if watcher.oom:
    result['error'] = f'did not fit: RSS passed {memory_limit_gb:g} GB'
  elif timed_out:
    result['error'] = f'timed out after {timeout_s} s'
  elif proc.returncode != 0:
    result['error'] = f'bin/train.py exited with {proc.returncode}'
  if 'error' in result:
    result['stderr_tail'] = err.strip().splitlines()[-15:]
  result['history'] = _history(os.path.join(train_dir, 'history.jsonl'))
  test_results = os.path.join(train_dir, 'test_results.json')
  if os.path.exists(test_results):
    with open(test_results) as f:
      result['test_results'] = json.load(f)
  result['stdout_lines'] = len(out.splitlines())
  return result
