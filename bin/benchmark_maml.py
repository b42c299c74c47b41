"""MAML memory / time / meta-gradient fidelity against the multi-step window m.

  python bin/benchmark_maml.py --image_sizes=84,224 --num_inner_steps=10 --windows=1,2,5,10

Each (image size, window) runs in a fresh process; `first_order` is added as the floor.
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from lite_tf import binary

FLAGS = flags.FLAGS
flags.DEFINE_list('image_sizes', ['84', '224'], 'Image sides.')
flags.DEFINE_integer('num_inner_steps', 10, 'K.')
flags.DEFINE_list('windows', ['1', '2', '5', '10'], 'Window sizes m.')
flags.DEFINE_integer('steps', 2, 'Timed meta-steps after one warm-up.')
flags.DEFINE_float('memory_limit_gb', 18.0, 'Kill a run whose RSS passes this.')
flags.DEFINE_enum('malloc', 'default', ['default', 'no_mmap'], 'glibc malloc mode.')
flags.DEFINE_string('output', None, 'JSON results path.')
flags.DEFINE_string('child', None, 'Internal: "size,window,first_order".')


def cos_text(cosine):
  return '-' if cosine is None else f'{cosine:.3f}'


def main(argv):
  del argv
  if FLAGS.child:
    from lite_tf.benchmarks import maml  # pylint: disable=g-import-not-at-top
    size, window, first_order = FLAGS.child.split(',')
    maml.main_child(image_size=int(size), num_inner_steps=FLAGS.num_inner_steps,
                    window_size=int(window), first_order=first_order == '1', steps=FLAGS.steps)
    return
  from lite_tf.benchmarks import process  # pylint: disable=g-import-not-at-top
  if any(int(w) < 1 for w in FLAGS.windows):
    sys.exit('error: --windows must be >= 1')
  results = []
  print(f'{"S":>4} {"mode":>12} {"TF peak GB":>11} {"RSS+ GB":>8} {"s/step":>7} {"cos":>6}',
        flush=True)
  for size in (int(s) for s in FLAGS.image_sizes):
    for window, first_order in [(int(w), 0) for w in FLAGS.windows] + [(1, 1)]:
      r = process.run_child(
          os.path.abspath(__file__),
          [f'--child={size},{window},{first_order}', f'--num_inner_steps={FLAGS.num_inner_steps}',
           f'--steps={FLAGS.steps}'], FLAGS.memory_limit_gb, FLAGS.malloc,
          base={'image_size': size, 'window_size': window, 'first_order': bool(first_order)})
      results.append(r)
      mode = 'first order' if first_order else f'm={window}'
      if 'error' in r:
        print(f'{size:4} {mode:>12} {r["error"]}', flush=True)
        continue
      gb = lambda x: f'{x / 1024 ** 3:.3f}' if x is not None else '-'
      print(f'{size:4} {mode:>12} {gb(r["allocator_peak_bytes"]):>11} '
            f'{gb(r["peak_rss_above_start_bytes"]):>8} {r["step_seconds"]:7.2f} '
            f'{cos_text(r["cosine_to_exact_maml"]):>6}', flush=True)
  if FLAGS.output:
    process.write_json(FLAGS.output, {'num_inner_steps': FLAGS.num_inner_steps,
                                      'malloc': FLAGS.malloc, 'results': results})


if __name__ == '__main__':
  app.run(binary.exits_on_error(main))
