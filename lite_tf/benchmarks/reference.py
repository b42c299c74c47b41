"""lite_tf against the PyTorch reference (cambridge-mlg/LITE): the same Simple CNAPs + LITE step
with FiLM EfficientNet-B0 on the same random task, each in a fresh process, interleaved.

bin/benchmark_reference.py runs, for each row (image size S, support size N), the reference's
own step (lite_tf/benchmarks/reference_step.py, under a Python with torch) and then lite_tf's
(lite_tf.benchmarks.memory.run, mode 'lite', in a fresh process of this Python), and writes
every raw row and a markdown table. Memory is the whole process's peak resident set from its
start (VmHWM: imports, model, task, first step, every step); time is the first step (tracing
included for lite_tf) and the median step after it.

Nothing here imports TensorFlow or torch: the binary's flag errors come at once.
"""

import os
import shlex
import subprocess
import sys

from lite_tf.benchmarks import process

SIDES = ('reference', 'lite_tf')
STEP_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'reference_step.py')
# Files of a cambridge-mlg/LITE checkout that the reference's step imports.
REFERENCE_FILES = ('src/run.py', 'src/model.py', 'src/efficientnet.py', 'src/features.py',
                   'src/mahalanonbis.py', 'src/set_encoder.py')
_MIB = 1024 ** 2


def parse_rows(specs):
  """['84:100', '224:100'] -> [(84, 100), (224, 100)]: (image size S, support size N).
  Raises ValueError naming the first entry that is not two positive integers."""
  rows = []
  for spec in specs:
    parts = spec.split(':')
    try:
      values = [int(p) for p in parts]
    except ValueError:
      values = []
    if len(values) != 2 or min(values) < 1:
      raise ValueError(f'--rows entries must be S:N, an image size and a support size (positive '
                       f'integers); got {spec!r}')
    rows.append(tuple(values))
  return rows


def run_order(rows):
  """The runs in the order they are made: each row's reference, then its lite_tf, row after
  row, so that a drift of the machine over the minutes falls on both sides alike."""
  return [(row, side) for row in rows for side in SIDES]


def check_reference_dir(path):
  """None, or the error for --reference_dir: not a cambridge-mlg/LITE checkout."""
  if not path:
    return ('error: --reference_dir is required: a checkout of cambridge-mlg/LITE (the folder '
            'with src/run.py)')
  missing = [f for f in REFERENCE_FILES if not os.path.isfile(os.path.join(path, f))]
  if missing:
    return (f'error: --reference_dir={path!r} is not a checkout of cambridge-mlg/LITE: expected '
            f'{", ".join(missing)} in it')
  return None


def check_torch_python(path, timeout=120):
  """(None, torch version), or (the error for --torch_python, None): not a Python that
  imports torch and numpy."""
  if not path:
    return ('error: --torch_python is required: a Python interpreter that can import torch '
            'and numpy (torch is not a lite_tf dependency)'), None
  if not (os.path.isfile(path) and os.access(path, os.X_OK)):
    return (f'error: --torch_python={path!r} is not an executable file; expected a Python '
            'interpreter that can import torch and numpy'), None
  try:
    result = subprocess.run([path, '-c', 'import numpy, torch; print(torch.__version__)'],
                            capture_output=True, text=True, timeout=timeout,
                            env=dict(os.environ, CUDA_VISIBLE_DEVICES=''))
  except (OSError, subprocess.TimeoutExpired) as e:
    return (f'error: --torch_python={path!r} did not run: {e}; expected a Python interpreter '
            'that can import torch and numpy'), None
  if result.returncode != 0:
    last = (result.stderr.strip().splitlines() or ['no output'])[-1]
    return (f'error: --torch_python={path!r} cannot import torch and numpy ({last}); expected '
            'a Python interpreter with torch installed'), None
  return None, result.stdout.strip().splitlines()[-1]


def reference_commit(path):
  """The checkout's commit (with '-dirty' if it has local changes), or None where it is not a
  git work tree (a `git archive` extract: give --reference_commit)."""
  try:
    commit = subprocess.run(['git', '-C', path, 'rev-parse', 'HEAD'], capture_output=True,
                            text=True, timeout=30)
    if commit.returncode != 0:
      return None
    dirty = subprocess.run(['git', '-C', path, 'status', '--porcelain', '--', 'src'],
                           capture_output=True, text=True, timeout=30)
  except (OSError, subprocess.TimeoutExpired):
    return None
  return commit.stdout.strip() + ('-dirty' if dirty.stdout.strip() else '')


def child_env(side, malloc='default', bfc=True):
  """Both children: CPU only (CUDA_VISIBLE_DEVICES=''), the same glibc malloc mode; lite_tf's
  with TF's BFC allocator on CPU as bin/benchmark_memory.py runs it (process.child_env)."""
  env = process.child_env(malloc, bfc and side == 'lite_tf')
  env['CUDA_VISIBLE_DEVICES'] = ''
  return env


def reference_command(torch_python, reference_dir, image_size, support_size, sizing):
  """The reference child's command line. sizing: num_query, num_backprop, batch_size, way,
  steps, threads, image_dtype, flush_denormal."""
  return [torch_python, STEP_SCRIPT, f'--reference_dir={os.path.abspath(reference_dir)}',
          f'--image_size={image_size}', f'--support_size={support_size}',
          f'--num_query={sizing["num_query"]}', f'--num_backprop={sizing["num_backprop"]}',
          f'--batch_size={sizing["batch_size"]}', f'--way={sizing["way"]}',
          f'--steps={sizing["steps"]}', f'--threads={sizing["threads"]}',
          f'--image_dtype={sizing["image_dtype"]}',
          f'--flush_denormal={int(sizing["flush_denormal"])}']


def run_watched(command, env, memory_limit_gb, base):
  """Runs `command`, watched (process.Watcher: its peak seen from outside, killed past
  memory_limit_gb); returns the dict after its last 'RESULT ' line with `base` and
  watcher_peak_rss_bytes added, or `base` with an error."""
  import json  # pylint: disable=g-import-not-at-top
  proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env)
  watcher = process.Watcher(proc, memory_limit_gb)
  out, err = proc.communicate()
  watcher.join()
  results = [json.loads(line[len('RESULT '):]) for line in out.splitlines()
             if line.startswith('RESULT ')]
  if results:
    return dict(results[-1], **base, watcher_peak_rss_bytes=watcher.max_seen)
  if watcher.oom:
    return dict(base, error=f'did not fit: RSS passed {memory_limit_gb:g} GB')
  if proc.returncode in (-9, 137):
    return dict(base, error='killed (out of memory?)')
  return dict(base, error=f'exit {proc.returncode}: {err.strip().splitlines()[-1:]}')


def pairs(results):
  """Raw rows (in any order) -> [{'image_size', 'support_size', 'reference', 'lite_tf'}] in
  the order of their first run; a side not run yet is None."""
  by_row = {}
  for r in results:
    key = (r['image_size'], r['support_size'])
    by_row.setdefault(key, {'image_size': key[0], 'support_size': key[1], 'reference': None,
                            'lite_tf': None})[r['side']] = r
  return list(by_row.values())


def _ok(r):
  return r is not None and 'error' not in r


def ratios(reference, lite_tf):
  """lite_tf / reference for the whole-process peak and the median step, the first steps of
  both (s); None where either side failed."""
  if not (_ok(reference) and _ok(lite_tf)):
    return {'memory_ratio': None, 'time_ratio': None}
  return {'memory_ratio': lite_tf['process_peak_rss_bytes'] / reference['process_peak_rss_bytes'],
          'time_ratio': lite_tf['step_seconds'] / reference['step_seconds']}


def config_text(sizing):
  return (f'H {sizing["num_backprop"]}, chunk {sizing["batch_size"]}, query batch '
          f'{sizing["batch_size"]} ({sizing["num_query"]} query), {sizing["way"]}-way, set '
          f'encoder at S')


def _side_text(r):
  if r is None:
    return 'not run'
  if 'error' in r:
    return r['error']
  return f'{r["process_peak_rss_bytes"] / _MIB:.0f} MiB, {r["step_seconds"]:.2f} s/step'


def markdown_table(results, sizing):
  """The table of the issue: S | N | config | reference | lite_tf | memory ratio |
  time-per-step ratio | first step ref / lite_tf. MiB are whole-process peak RSS from start;
  ratios are lite_tf / reference."""
  lines = ['| S | N | config | reference | lite_tf | memory ratio (lite_tf / ref) | '
           'time-per-step ratio (lite_tf / ref) | first step ref / lite_tf (s) |',
           '| ---: | ---: | --- | --- | --- | ---: | ---: | ---: |']
  for pair in pairs(results):
    ref, ours = pair['reference'], pair['lite_tf']
    r = ratios(ref, ours)
    memory = f'{r["memory_ratio"]:.2f}x' if r['memory_ratio'] is not None else '-'
    time_ratio = f'{r["time_ratio"]:.2f}x' if r['time_ratio'] is not None else '-'
    first = ' / '.join(f'{x["first_step_seconds"]:.1f}' if _ok(x) else '-' for x in (ref, ours))
    lines.append(f'| {pair["image_size"]} | {pair["support_size"]} | {config_text(sizing)} | '
                 f'{_side_text(ref)} | {_side_text(ours)} | {memory} | {time_ratio} | {first} |')
  return '\n'.join(lines) + '\n'


def progress_line(index, total, row, side, result=None):
  """One stderr line per run: before it (result None) and after it."""
  head = f'[{index}/{total}] S={row[0]} N={row[1]} {side}'
  if result is None:
    return f'{head}: running'
  if 'error' in result:
    return f'{head}: {result["error"]}'
  return (f'{head}: {result["process_peak_rss_bytes"] / _MIB:.0f} MiB whole-process peak, '
          f'first step {result["first_step_seconds"]:.1f} s, {result["step_seconds"]:.2f} s/step')


def table_path(output):
  """Where the markdown table goes: beside the JSON, .md for .json."""
  root, ext = os.path.splitext(output)
  return (root if ext == '.json' else output) + '.md'


def cpu_flags(cpuinfo='/proc/cpuinfo'):
  """Every flag of the first processor in /proc/cpuinfo, sorted, or None where not readable
  (process.machine_info records the few that a figure depends on)."""
  try:
    with open(cpuinfo) as f:
      line = next((l for l in f if l.startswith('flags')), None)
  except OSError:
    return None
  return sorted(line.split(':', 1)[1].split()) if line else None


def command_line(argv=None):
  return ' '.join(shlex.quote(a) for a in (sys.argv if argv is None else argv))
