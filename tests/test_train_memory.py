"""bin/benchmark_train_memory.py: bin/train.py in a watched child over records it writes."""

import json
import os
import subprocess
import sys

from conftest import REPO_ROOT

BINARY = os.path.join(REPO_ROOT, 'bin', 'benchmark_train_memory.py')


def test_watcher_sees_a_child_allocation():
  """process.Watcher reads the child's peak from outside: a child that touches 300 MiB, frees
  it and sleeps is seen above 300 MiB though its resident set at exit is far lower."""
  from lite_tf.benchmarks import process  # pylint: disable=g-import-not-at-top
  code = ('import time, numpy as np\n'
          'a = np.ones(300 * 2**20, np.uint8); del a\n'
          'time.sleep(0.3)\n')
  proc = subprocess.Popen([sys.executable, '-c', code])
  watcher = process.Watcher(proc, memory_limit_gb=8)
  proc.wait(timeout=60)
  watcher.join()
  assert proc.returncode == 0 and not watcher.oom
  assert watcher.max_seen > 300 * 2**20, watcher.max_seen


def test_watcher_kills_a_child_over_its_limit():
  from lite_tf.benchmarks import process  # pylint: disable=g-import-not-at-top
  code = 'import time, numpy as np\na = np.ones(400 * 2**20, np.uint8)\ntime.sleep(30)\n'
  proc = subprocess.Popen([sys.executable, '-c', code])
  watcher = process.Watcher(proc, memory_limit_gb=0.2)
  proc.wait(timeout=60)
  watcher.join()
  assert watcher.oom and proc.returncode != 0


def test_glyph_records_have_the_requested_classes(tmp_path):
  """The records: 3 disjoint splits of classes_per_split classes, 16 fonts x jitters images
  each, decoding to the requested size."""
  from lite_tf.benchmarks import train_memory  # pylint: disable=g-import-not-at-top
  from lite_tf.data.meta_dataset import records  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  spec = train_memory.write_glyph_records(str(tmp_path / 'r'), 40, 3, 1)
  ids = {s: set(spec.class_ids(s)) for s in ('train', 'valid', 'test')}
  assert [len(v) for v in ids.values()] == [3, 3, 3]
  assert not (ids['train'] & ids['valid']) and not (ids['train'] & ids['test'])
  assert set(spec.images_per_class.values()) == {16}
  first = next(iter(tf.data.TFRecordDataset(spec.class_file(0))))
  image, label = records.decode_example(first, 40)
  assert image.shape == (40, 40, 3) and int(label) == 0
  # Kept as it is on a second call (its spec is there).
  mtime = os.path.getmtime(tmp_path / 'r' / 'dataset_spec.json')
  train_memory.write_glyph_records(str(tmp_path / 'r'), 40, 3, 1)
  assert os.path.getmtime(tmp_path / 'r' / 'dataset_spec.json') == mtime


def test_benchmark_trains_fixed_size_tasks_through_the_binary(tmp_path):
  """k tasks of N = way * shot go through bin/train.py: one history line each, with that
  support size and way, then the test evaluation; the JSON has the whole-process peak and a
  time per history line."""
  out = tmp_path / 'tm.json'
  proc = subprocess.run(
      [sys.executable, BINARY, '--gin_config=gin/records_protonets.gin', '--image_size=28',
       '--way=3', '--shot=4', '--query_shot=2', '--num_steps=3', f'--work_dir={tmp_path}',
       f'--output={out}'], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  payload = json.loads(out.read_text())
  result = payload['result']
  assert payload['support_size'] == 12
  assert [r['support_size'] for r in result['history']] == [12.0] * 3
  assert [r['way'] for r in result['history']] == [3.0] * 3
  assert len(result['history_line_seconds']) == 3
  assert result['history_line_seconds'] == sorted(result['history_line_seconds'])
  assert result['test_results']['num_test_episodes'] == 1
  # Python with TensorFlow imported holds well above 100 MB; the peak is from process start.
  assert result['process_peak_rss_bytes'] > 100 * 2**20
  assert result['peak_rss_during_training_bytes'] <= result['process_peak_rss_bytes']
  assert 'whole-process peak RSS' in proc.stdout


def test_benchmark_rejects_tasks_larger_than_its_classes(tmp_path):
  proc = subprocess.run(
      [sys.executable, BINARY, '--shot=100', '--query_shot=20', '--jitters_per_font=2',
       f'--work_dir={tmp_path}'], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
  assert proc.returncode == 1
  assert '--jitters_per_font=2 gives 32 images per class' in proc.stderr
  assert not os.listdir(tmp_path)


def test_benchmark_reports_a_failing_training_run(tmp_path):
  """bin/train.py's own error comes back, with a non-zero exit and the JSON written."""
  out = tmp_path / 'tm.json'
  proc = subprocess.run(
      [sys.executable, BINARY, '--gin_config=gin/records_protonets.gin', '--image_size=28',
       '--way=2', '--shot=2', '--query_shot=1', '--num_steps=1', f'--work_dir={tmp_path}',
       "--gin_bindings=precision.policy = 'float8'", f'--output={out}'],
      capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
  assert proc.returncode == 1
  assert 'bin/train.py exited with 1' in proc.stderr
  assert 'precision.policy' in proc.stderr and 'float8' in proc.stderr
  assert json.loads(out.read_text())['result']['exit_code'] == 1
