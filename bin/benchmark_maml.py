"""MAML memory / time / meta-gradient fidelity against the multi-step window m.

  python bin/benchmark_maml.py --image_sizes=84,224 --num_inner_steps=10 --windows=1,2,5,10

Each (image size, window) runs in a fresh process; `first_order` is added as the floor.
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
flags.DEFINE_list('image_sizes', ['84', '224'], 'Image sides.')
flags.DEFINE_integer('num_inner_steps', 10, 'K.')
flags.DEFINE_list('windows', ['1', '2', '5', '10'], 'Window sizes m.')
flags.DEFINE_integer('steps', 2, 'Timed meta-steps after one warm-up.')
step_flags.define_child_flags(None, {'malloc': 'glibc malloc mode.',
                                     'memory_limit_gb': 'Kill a run whose RSS passes this.'})
flags.adopt_module_key_flags(step_flags)
flags.DEFINE_string('output', None, 'JSON results path.')
flags.DEFINE_bool('literal', True, 'Also run the literal variant (the anchor gradient value '
                  'reused inside a window) for every m > 1.')
flags.DEFINE_list('fidelity_lrs', ['0.01', '0.1'], 'Inner learning rates of the cosine to '
                  'exact MAML (time and memory at the first).')
flags.DEFINE_string('child', None, 'Internal: "size,window,first_order,literal".')


def cos_text(cosine):
  return '-' if cosine is None else f'{cosine:.3f}'


def main(argv):
  del argv
  if FLAGS.child:
    from lite_tf.benchmarks import maml  # pylint: disable=g-import-not-at-top
    size, window, first_order, literal = FLAGS.child.split(',')
    lrs = tuple(float(x) for x in FLAGS.fidelity_lrs)
    maml.main_child(image_size=int(size), num_inner_steps=FLAGS.num_inner_steps,
                    window_size=int(window), first_order=first_order == '1', steps=FLAGS.steps,
                    literal_window=literal == '1', inner_lr=lrs[0], fidelity_lrs=lrs)
    return
  from lite_tf.benchmarks import process  # pylint: disable=g-import-not-at-top
  if any(int(w) < 1 for w in FLAGS.windows):
    sys.exit('error: --windows must be >= 1')
  results = []
  lrs = [str(float(x)) for x in FLAGS.fidelity_lrs]
  print(f'{"S":>4} {"mode":>18} {"TF peak GB":>11} {"RSS+ GB":>8} {"RSS GB":>7} {"s/step":>7} '
        + ' '.join(f'{"cos@" + lr:>9}' for lr in lrs), flush=True)
  configs = [(int(w), 0, 0) for w in FLAGS.windows]
  if FLAGS.literal:
    configs += [(int(w), 0, 1) for w in FLAGS.windows if int(w) > 1]
  configs.append((1, 1, 0))
  for size in (int(s) for s in FLAGS.image_sizes):
    for window, first_order, literal in configs:
      r = process.run_child(
          os.path.abspath(__file__),
          [f'--child={size},{window},{first_order},{literal}',
           f'--num_inner_steps={FLAGS.num_inner_steps}', f'--steps={FLAGS.steps}',
           f'--fidelity_lrs={",".join(FLAGS.fidelity_lrs)}'], FLAGS.memory_limit_gb,
          FLAGS.malloc, base={'image_size': size, 'window_size': window,
                              'first_order': bool(first_order), 'literal_window': bool(literal)})
      results.append(r)
      mode = ('first order' if first_order
              else f'm={window}' + (' literal' if literal else ''))
      if 'error' in r:
        print(f'{size:4} {mode:>18} {r["error"]}', flush=True)
        continue
      gb = lambda x: f'{x / 1024 ** 3:.3f}' if x is not None else '-'
      cosines = r.get('cosine_by_inner_lr') or {}
      print(f'{size:4} {mode:>18} {gb(r["allocator_peak_bytes"]):>11} '
            f'{gb(r["peak_rss_above_start_bytes"]):>8} {gb(r.get("process_peak_rss_bytes")):>7} '
            f'{r["step_seconds"]:7.2f} '
            + ' '.join(f'{cos_text(cosines.get(lr)):>9}' for lr in lrs), flush=True)
  if FLAGS.output:
    process.write_json(FLAGS.output, {'num_inner_steps': FLAGS.num_inner_steps,
                                      'malloc': FLAGS.malloc, 'results': results})


if __name__ == '__main__':
  app.run(binary.exits_on_error(main))
