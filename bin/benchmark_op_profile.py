"""Seconds per TF op type of one Simple CNAPs / CNAPs / ProtoNets + LITE step, per precision.

  python bin/benchmark_op_profile.py --learner=simple_cnaps --backbone=efficientnet_b0 \
      --image_size=84 --support_size=100 --precisions=float32,mixed_bfloat16 \
      --output=docs/benchmarks/op_profile_simple_cnaps_effb0_s84.json

Each precision runs in this process one after the other (the dtype policy is set before its
learner is built): a warm-up step (tracing), then `--runs` profiled steps. Prints the op types
whose time differs most between the first precision and each other one.
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
step_flags.define_sizing_flags('simple_cnaps', 'efficientnet_b0', 84, {
    'num_backprop': '|H|.',
    'chunk_size': 'Chunk size of the gradient-free pass.',
    'query_batch_size': 'Query batch size (one query batch).'})
flags.adopt_module_key_flags(step_flags)
flags.DEFINE_integer('support_size', 100, 'Support set size N.')
flags.DEFINE_integer('runs', 2, 'Profiled steps after the warm-up.')
flags.DEFINE_list('precisions', ['float32', 'mixed_bfloat16'], 'lite_tf.precision policies.')
flags.DEFINE_integer('top', 15, 'Op types printed per comparison.')
flags.DEFINE_string('output', None, 'Write {precision: {op type: seconds}} as JSON here.')


def main(argv):
  del argv
  import keras  # pylint: disable=g-import-not-at-top
  from lite_tf import precision  # pylint: disable=g-import-not-at-top
  from lite_tf.benchmarks import memory  # pylint: disable=g-import-not-at-top
  from lite_tf.benchmarks import op_profile  # pylint: disable=g-import-not-at-top
  from lite_tf.benchmarks import process  # pylint: disable=g-import-not-at-top
  from lite_tf.lite import model as lite_model  # pylint: disable=g-import-not-at-top
  unknown = [p for p in FLAGS.precisions if p not in precision.POLICIES]
  if unknown:  # fails before any work
    sys.exit(f'error: --precisions has unknown entries {unknown}; expected some of '
             f'{list(precision.POLICIES)}')
  for flag in ('runs', 'support_size', 'num_backprop'):
    if FLAGS[flag].value <= 0:
      sys.exit(f'error: --{flag} must be positive; got {FLAGS[flag].value}')
  profiles = {}
  for name in FLAGS.precisions:
    precision.apply(name)
    keras.utils.set_random_seed(0)
    learner = memory.LEARNERS[FLAGS.learner](backbone=FLAGS.backbone,
                                             image_size=FLAGS.image_size)
    episode = memory.random_episode(FLAGS.support_size, FLAGS.query_batch_size,
                                    FLAGS.image_size, FLAGS.way)
    learner(memory.random_episode(2, 1, FLAGS.image_size, 2).to_dict())
    optimizer = lite_model.make_optimizer(1e-3)
    optimizer.build(learner.trainable_variables)
    step = memory._train_step_fn(learner, optimizer, episode, FLAGS.num_backprop,  # pylint: disable=protected-access
                                 FLAGS.chunk_size, FLAGS.query_batch_size)
    step()
    profiles[name] = op_profile.op_seconds(step, FLAGS.runs)
    print(f'{name}: {sum(profiles[name].values()):.3f} s of op kernels per step', flush=True)
  base = FLAGS.precisions[0]
  for name in FLAGS.precisions[1:]:
    a, b = profiles[base], profiles[name]
    keys = sorted(set(a) | set(b), key=lambda k: -abs(b.get(k, 0) - a.get(k, 0)))
    print(f'\nop type (largest differences)                         {base:>15} {name:>15}  (ms)')
    for k in keys[:FLAGS.top]:
      print(f'{k[:52]:52s} {a.get(k, 0) * 1e3:15.1f} {b.get(k, 0) * 1e3:15.1f}')
  if FLAGS.output:
    process.write_json(FLAGS.output, {'flags': {k: FLAGS[k].value for k in (
        'learner', 'backbone', 'image_size', 'support_size', 'num_backprop', 'chunk_size',
        'query_batch_size', 'way', 'runs', 'precisions')}, 'op_seconds_per_step': profiles})


if __name__ == '__main__':
  app.run(binary.exits_on_error(main))
