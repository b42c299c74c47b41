"""Peak memory and seconds per step of LITE against exact back-propagation.

Every (mode, support size) runs in a fresh process; a watchdog kills a process whose resident
set passes --memory_limit_gb and reports that configuration as not fitting.

  python bin/benchmark_memory.py --learner=simple_cnaps --backbone=efficientnet_b0 \
      --image_size=224 --support_sizes=100,250,500,1000 --num_backprop=40 --chunk_size=40 \
      --query_batch_size=40 --modes=floor,lite,full --malloc=default --image_dtype=uint8
  python bin/benchmark_memory.py --backbone=resnet18 --image_size=224 \
      --support_sizes=100,250,500,1000 --num_backprop=40 --chunk_size=40 \
      --query_batch_size=40 --modes=floor,lite,full --malloc=default \
      --output=docs/benchmarks/resnet18_224_default.json
"""

import os
import sys

from lite_tf import quiet  # pylint: disable=g-import-not-at-top
quiet.start()  # before TensorFlow loads: its native log stays out of the terminal

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from lite_tf import binary
from lite_tf.benchmarks import step_flags

FLAGS = flags.FLAGS
step_flags.define_sizing_flags('protonets', 'resnet18', 224)
step_flags.define_step_flags('float32')
step_flags.define_child_flags(True)
flags.adopt_module_key_flags(step_flags)
flags.DEFINE_list('support_sizes', ['100', '250', '500', '1000'], 'Support set sizes N.')
binary.require_int_list('support_sizes')
flags.DEFINE_integer('num_query', None, 'Query set size (default: one query batch).')
flags.DEFINE_bool('time_parts', True, 'In lite mode, also time the step\'s parts separately.')
flags.DEFINE_integer('steps', 2, 'Timed steps after one warm-up step.')
flags.DEFINE_list('modes', ['floor', 'lite', 'full'], 'Which of floor, lite, full to run.')
flags.DEFINE_bool('grappler', True, 'Let TF\'s graph optimiser (Grappler) run on the traced '
                  'step (--nograppler: measure what it costs the first step).')
flags.DEFINE_string('output', None, 'Write the results as JSON here (atomically).')
flags.DEFINE_string('child_mode', None, 'Internal: run one configuration in this process.')
flags.DEFINE_integer('child_support_size', None, 'Internal.')


def _run_child(mode, support_size):
  from lite_tf.benchmarks import process  # pylint: disable=g-import-not-at-top
  args = [f'--child_mode={mode}', f'--child_support_size={support_size}',
          f'--backbone={FLAGS.backbone}', f'--image_size={FLAGS.image_size}',
          f'--num_backprop={FLAGS.num_backprop}', f'--chunk_size={FLAGS.chunk_size}',
          f'--query_batch_size={FLAGS.query_batch_size}', f'--way={FLAGS.way}',
          f'--steps={FLAGS.steps}', f'--malloc={FLAGS.malloc}',
          f'--image_dtype={FLAGS.image_dtype}', f'--learner={FLAGS.learner}',
          f'--time_parts={FLAGS.time_parts}', f'--precision={FLAGS.precision}',
          f'--grappler={FLAGS.grappler}']
  if FLAGS.num_query:
    args.append(f'--num_query={FLAGS.num_query}')
  if FLAGS.recompute_batch:
    args.append(f'--recompute_batch={FLAGS.recompute_batch}')
    args.append(f'--recompute_mode={FLAGS.recompute_mode}')
  if FLAGS.set_encoder_size:
    args.append(f'--set_encoder_size={FLAGS.set_encoder_size}')
  return process.run_child(os.path.abspath(__file__), args, FLAGS.memory_limit_gb,
                           FLAGS.malloc, bfc=FLAGS.bfc,
                           base={'mode': mode, 'support_size': support_size})


def _gb(x):
  return f'{x / 1024 ** 3:.2f}' if x is not None else '-'


def main(argv):
  del argv
  if FLAGS.child_mode:
    from lite_tf.benchmarks import memory  # pylint: disable=g-import-not-at-top
    memory.main_child(mode=FLAGS.child_mode, backbone=FLAGS.backbone,
                      image_size=FLAGS.image_size, support_size=FLAGS.child_support_size,
                      num_backprop=FLAGS.num_backprop, chunk_size=FLAGS.chunk_size,
                      query_batch_size=FLAGS.query_batch_size, way=FLAGS.way, steps=FLAGS.steps,
                      image_dtype=FLAGS.image_dtype, learner=FLAGS.learner,
                      num_query=FLAGS.num_query, recompute_batch=FLAGS.recompute_batch,
                      time_parts=FLAGS.time_parts, policy=FLAGS.precision,
                      grappler=FLAGS.grappler, recompute_mode=FLAGS.recompute_mode,
                      set_encoder_size=FLAGS.set_encoder_size)
    return
  if FLAGS.num_backprop <= 0:
    sys.exit(f'error: --num_backprop must be positive; got {FLAGS.num_backprop}')
  from lite_tf import backbones  # pylint: disable=g-import-not-at-top
  if FLAGS.backbone not in backbones.names():
    sys.exit(f'error: --backbone={FLAGS.backbone!r} is not a lite_tf backbone; expected one of '
             f'{backbones.names()}')
  if FLAGS.set_encoder_size is not None and (FLAGS.learner == 'protonets'
                                             or FLAGS.set_encoder_size <= 0):
    sys.exit(f'error: --set_encoder_size must be a positive size, for --learner=cnaps or '
             f'simple_cnaps; got {FLAGS.set_encoder_size} with --learner={FLAGS.learner}')
  unknown = set(FLAGS.modes) - {'floor', 'lite', 'full'}
  if unknown:
    sys.exit(f'error: --modes has unknown entries {sorted(unknown)}; expected floor, lite, full')
  sizes = [int(s) for s in FLAGS.support_sizes]
  results, floor, full_failed = [], None, False
  print(f'{"mode":6} {"N":>5} {"TF peak GB":>11} {"RSS+ GB":>8} {"steady RSS+":>11} '
        f'{"process GB":>10} {"1st s":>7} {"s/step":>7} {"peak/floor":>10} '
        f'{"step/parts":>10}', flush=True)
  runs = [('floor', FLAGS.num_backprop)] if 'floor' in FLAGS.modes else []
  runs += [(m, n) for n in sizes for m in ('lite', 'full') if m in FLAGS.modes]
  for mode, n in runs:
    if mode == 'full' and full_failed:
      results.append({'mode': mode, 'support_size': n,
                      'error': 'skipped: a smaller N did not fit'})
      print(f'{mode:6} {n:5} skipped (a smaller N did not fit)', flush=True)
      continue
    r = _run_child(mode, n)
    results.append(r)
    if 'error' in r:
      full_failed |= mode == 'full'
      print(f'{mode:6} {n:5} {r["error"]}', flush=True)
      continue
    if mode == 'floor':
      floor = r
    ratio = (f'{r["allocator_peak_bytes"] / floor["allocator_peak_bytes"]:.3f}'
             if floor and r['allocator_peak_bytes'] else '-')
    parts = f'{r["step_over_parts"]:.3f}' if 'step_over_parts' in r else '-'
    print(f'{mode:6} {n:5} {_gb(r["allocator_peak_bytes"]):>11} '
          f'{_gb(r["peak_rss_above_start_bytes"]):>8} '
          f'{_gb(r.get("steady_peak_rss_above_pre_step_bytes")):>11} '
          f'{_gb(r.get("process_peak_rss_bytes")):>10} {r["first_step_seconds"]:7.1f} '
          f'{r["step_seconds"]:7.2f} {ratio:>10} '
          f'{parts:>10}', flush=True)
  if FLAGS.output:
    from lite_tf.benchmarks import process  # pylint: disable=g-import-not-at-top
    process.write_json(FLAGS.output, {'flags': {k: FLAGS[k].value for k in (
        'learner', 'backbone', 'image_size', 'support_sizes', 'num_backprop', 'chunk_size',
        'query_batch_size', 'num_query', 'recompute_batch', 'recompute_mode', 'way', 'steps',
        'malloc', 'image_dtype', 'set_encoder_size', 'bfc', 'memory_limit_gb', 'precision',
        'grappler')},
                                      'results': results})


if __name__ == '__main__':
  app.run(binary.exits_on_error(main))
