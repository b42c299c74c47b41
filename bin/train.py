"""Meta-trains a learner with LITE and reports held-out-class accuracy with a 95% CI.

  python bin/train.py --gin_config=gin/demo_protonets.gin --train_dir=/tmp/lite_demo
  python bin/train.py --gin_config=gin/demo_protonets.gin --train_dir=/tmp/x \
      --gin_bindings="lite.num_backprop=10"
"""

import os
import sys

from lite_tf import quiet  # pylint: disable=g-import-not-at-top
quiet.start()  # before TensorFlow loads: its native log stays out of the terminal

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from lite_tf import binary
from lite_tf import config

FLAGS = flags.FLAGS
binary.define_gin_flags(bindings_help='gin bindings, e.g. "lite.num_backprop=10".')
flags.adopt_module_key_flags(binary)
flags.DEFINE_string('train_dir', None, 'Directory for the operative config and weights.')
flags.DEFINE_integer('seed', 0, 'Seeds weight initialisation (keras.utils.set_random_seed).')
flags.DEFINE_enum('distribution', 'default', ['default', 'mirrored', 'multi_worker'],
                  'tf.distribute strategy: one device, all local devices (MirroredStrategy), '
                  'or the cluster in TF_CONFIG (MultiWorkerMirroredStrategy). With R replicas '
                  'a step takes R tasks.')
flags.mark_flag_as_required('train_dir')


def main(argv):
  del argv
  try:
    if not FLAGS.gin_config:
      raise config.ConfigError('--gin_config: give at least one gin file, e.g. '
                               '--gin_config=gin/demo_protonets.gin')
    # Also sets BFC and the precision; the precision's device probe waits for the strategy
    # (a MultiWorkerMirroredStrategy configures TF's runtime, which the probe would start).
    config.parse(FLAGS.gin_config, FLAGS.gin_bindings, check_precision_device=False)
    import keras  # pylint: disable=g-import-not-at-top
    from lite_tf import precision  # pylint: disable=g-import-not-at-top
    from lite_tf.training import train  # pylint: disable=g-import-not-at-top
    from lite_tf.training import distribute  # pylint: disable=g-import-not-at-top
    keras.utils.set_random_seed(FLAGS.seed)  # before gin builds the learner
    strategy = distribute.make_strategy(FLAGS.distribution)
    precision.check_device_runs(precision.current())
    with strategy.scope():  # variables made in scope
      result = train.run_training(FLAGS.train_dir)
  except config.USER_ERRORS as e:
    print(f'error: {binary.describe(e)}', file=sys.stderr)
    sys.exit(1)
  if not result['chief']:
    print('training done on this worker; the chief writes the weights and the test results',
          flush=True)
    return
  print(f"held-out-class accuracy: {100 * result['test_accuracy']:.2f}% "
        f"+/- {100 * result['test_ci95']:.2f}% (95% CI over {result['num_test_episodes']} "
        'test episodes)')
  cost = result['test_time_cost']
  print(f"test-time cost per task: {cost['forward_passes']} forward pass(es) and "
        f"{cost['forward_backward_steps']} forward-backward step(s) on the support set, "
        f"{cost['seconds_per_task']:.3f} s (median)")


if __name__ == '__main__':
  app.run(binary.exits_on_error(main))
