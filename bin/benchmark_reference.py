"""lite_tf against the PyTorch reference (cambridge-mlg/LITE), side by side: Simple CNAPs + LITE
with FiLM EfficientNet-B0 on the same random task, random weights, CPU.

For each row S:N (image size, support size) the reference's own step runs in a fresh process of
--torch_python (torch is never a lite_tf dependency), then lite_tf's in a fresh process of this
Python, and so on row after row. Writes every raw row to --output (JSON) and the table beside it
(.md), and prints the table; one progress line per run on stderr.

  python bin/benchmark_reference.py --reference_dir=../LITE \
      --torch_python=/path/to/venv/bin/python --rows=84:100,84:500,224:100 \
      --output=docs/benchmarks/reference_simple_cnaps_effb0.json

The reference's checkout needs no weights (models/*.pt): both sides start from random weights.
"""

import os
import sys
import time

from lite_tf import quiet  # pylint: disable=g-import-not-at-top
quiet.start()  # before TensorFlow loads: its native log stays out of the terminal

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from lite_tf import binary
from lite_tf.benchmarks import step_flags

FLAGS = flags.FLAGS
flags.DEFINE_string('reference_dir', None, 'A checkout of cambridge-mlg/LITE (the folder with '
                    'src/run.py).')
flags.DEFINE_string('reference_commit', None, 'The reference\'s commit, recorded in the JSON '
                    'where --reference_dir is not a git work tree (a `git archive` extract).')
flags.DEFINE_string('torch_python', None, 'A Python interpreter that imports torch and numpy; '
                    'runs the reference.')
flags.DEFINE_list('rows', ['84:100', '84:500', '224:100'], 'Rows S:N, image size and support '
                  'size; each runs the reference, then lite_tf.')
flags.DEFINE_integer('num_backprop', 40, '|H|, support images back-propagated (the '
                     'reference\'s --h).', lower_bound=1)
flags.DEFINE_integer('batch_size', 40, 'Chunk of the gradient-free pass and query batch: one '
                     'size for both, as the reference\'s --batch_size.', lower_bound=1)
flags.DEFINE_integer('num_query', None, 'Query set size (default: one query batch).',
                     lower_bound=1)
flags.DEFINE_integer('way', 10, 'Classes per task.', lower_bound=1)
flags.DEFINE_integer('steps', 3, 'Timed steps after one warm-up step (median reported).',
                     lower_bound=1)
flags.DEFINE_integer('threads', 2, 'Threads of each side: torch.set_num_threads; TF\'s intra- '
                     'and inter-op thread pools.', lower_bound=1)
flags.DEFINE_bool('flush_denormal', True, 'torch.set_flush_denormal in the reference: with '
                  'random weights its steps take about 10x longer without it.')
flags.DEFINE_enum('image_dtype', 'uint8', step_flags.IMAGE_DTYPES, 'How the task holds its '
                  'images on lite_tf\'s side: uint8 pixels (what lite_tf\'s ORBIT, VTAB and '
                  'in-memory sources hold) or float32; the reference always gets float32 in '
                  '[-1, 1], as its readers yield.')
step_flags.define_child_flags(True)
flags.adopt_module_key_flags(step_flags)
flags.DEFINE_string('output', None, 'Write the raw rows here (JSON, atomically, after every '
                    'run); the table goes beside it (.md).')
flags.DEFINE_integer('child_image_size', None, 'Internal: run lite_tf\'s step in this process.')
flags.DEFINE_integer('child_support_size', None, 'Internal.')

# lite_tf's step as it ships (LiteModel's and the learners' defaults; bin/benchmark_memory.py
# takes these as flags): this benchmark compares the defaults, so it has no flags for them.
SHIPPED = {'precision': 'float32', 'recompute_batch': 'auto', 'recompute_mode': 'loop',
           'set_encoder_size': None}


def _sizing():
  return {'num_backprop': FLAGS.num_backprop, 'batch_size': FLAGS.batch_size,
          'num_query': FLAGS.num_query or FLAGS.batch_size, 'way': FLAGS.way,
          'steps': FLAGS.steps, 'threads': FLAGS.threads, 'image_dtype': FLAGS.image_dtype,
          'flush_denormal': FLAGS.flush_denormal}


def _run_lite_tf_child():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from lite_tf.benchmarks import memory  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
  tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
  result = memory.run(
      mode='lite', backbone='efficientnet_b0', learner='simple_cnaps',
      image_size=FLAGS.child_image_size, support_size=FLAGS.child_support_size,
      num_backprop=FLAGS.num_backprop, chunk_size=FLAGS.batch_size,
      query_batch_size=FLAGS.batch_size, num_query=FLAGS.num_query or FLAGS.batch_size,
      way=FLAGS.way, steps=FLAGS.steps, image_dtype=FLAGS.image_dtype, time_parts=False,
      policy=SHIPPED['precision'], recompute_batch=SHIPPED['recompute_batch'],
      recompute_mode=SHIPPED['recompute_mode'], set_encoder_size=SHIPPED['set_encoder_size'])
  result.update(threads=tf.config.threading.get_intra_op_parallelism_threads(),
                interop_threads=tf.config.threading.get_inter_op_parallelism_threads(),
                tensorflow=tf.__version__)
  import json  # pylint: disable=g-import-not-at-top
  print('RESULT ' + json.dumps(result), flush=True)


def _run(row, side):
  from lite_tf.benchmarks import reference  # pylint: disable=g-import-not-at-top
  image_size, support_size = row
  base = {'side': side, 'image_size': image_size, 'support_size': support_size}
  if side == 'reference':
    command = reference.reference_command(FLAGS.torch_python, FLAGS.reference_dir, image_size,
                                          support_size, _sizing())
  else:
    command = [sys.executable, os.path.abspath(__file__),
               f'--child_image_size={image_size}', f'--child_support_size={support_size}',
               f'--num_backprop={FLAGS.num_backprop}', f'--batch_size={FLAGS.batch_size}',
               f'--num_query={FLAGS.num_query or FLAGS.batch_size}', f'--way={FLAGS.way}',
               f'--steps={FLAGS.steps}', f'--threads={FLAGS.threads}',
               f'--image_dtype={FLAGS.image_dtype}']
  start = time.monotonic()
  result = reference.run_watched(command, reference.child_env(side, FLAGS.malloc, FLAGS.bfc),
                                 FLAGS.memory_limit_gb, base)
  result['wall_seconds'] = time.monotonic() - start
  return result


def main(argv):
  del argv
  if FLAGS.child_image_size:
    _run_lite_tf_child()
    return
  from lite_tf.benchmarks import process  # pylint: disable=g-import-not-at-top
  from lite_tf.benchmarks import reference  # pylint: disable=g-import-not-at-top
  error = reference.check_reference_dir(FLAGS.reference_dir)
  if error:
    sys.exit(error)
  error, torch_version = reference.check_torch_python(FLAGS.torch_python)
  if error:
    sys.exit(error)
  if not FLAGS.output:
    sys.exit('error: --output is required: the JSON file of the raw rows (the table is written '
             'beside it, .md)')
  try:
    rows = reference.parse_rows(FLAGS.rows)
  except ValueError as e:
    sys.exit(f'error: {e}')
  sizing = _sizing()
  payload = {
      'command': reference.command_line(),
      'flags': {k: FLAGS[k].value for k in (
          'reference_dir', 'torch_python', 'rows', 'num_backprop', 'batch_size', 'num_query',
          'way', 'steps', 'threads', 'flush_denormal', 'image_dtype', 'malloc', 'bfc',
          'memory_limit_gb')},
      'sizing': sizing,
      'lite_tf_step': dict(SHIPPED, learner='simple_cnaps', backbone='efficientnet_b0',
                           mode='lite'),
      'reference': {'dir': os.path.abspath(FLAGS.reference_dir),
                    'commit': (reference.reference_commit(FLAGS.reference_dir)
                               or FLAGS.reference_commit),
                    'torch': torch_version},
      'results': [],
      'machine': dict(process.machine_info(), cpu_flags_all=reference.cpu_flags()),
  }
  order = reference.run_order(rows)
  for i, (row, side) in enumerate(order, 1):
    print(reference.progress_line(i, len(order), row, side), file=sys.stderr, flush=True)
    result = _run(row, side)
    payload['results'].append(result)
    print(reference.progress_line(i, len(order), row, side, result), file=sys.stderr,
          flush=True)
    process.write_json(FLAGS.output, payload)
  table = reference.markdown_table(payload['results'], sizing)
  payload['table'] = table
  process.write_json(FLAGS.output, payload)
  from lite_tf import atomic  # pylint: disable=g-import-not-at-top
  machine = payload['machine']
  atomic.write_text(reference.table_path(FLAGS.output), (
      f'Simple CNAPs + LITE, FiLM EfficientNet-B0, random weights, CPU ({machine["cpu_model"]}, '
      f'{FLAGS.threads} threads each side); reference cambridge-mlg/LITE '
      f'{payload["reference"]["commit"] or "(commit unknown)"}, torch {torch_version}; lite_tf '
      f'TensorFlow {machine["tensorflow"]}, {FLAGS.image_dtype} task images. Memory: '
      'whole-process peak RSS from process start (VmHWM); s/step: median of '
      f'{FLAGS.steps} steps after the first. Raw rows: {os.path.basename(FLAGS.output)}.\n\n'
      + table))
  print(table, end='', flush=True)


if __name__ == '__main__':
  app.run(binary.exits_on_error(main))
