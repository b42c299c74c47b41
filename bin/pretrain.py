"""Supervised pre-training of a backbone, for learners that keep it frozen (CNAPs, Simple CNAPs).

  python bin/pretrain.py --gin_config=gin/pretrain_demo.gin --output=/tmp/conv4_glyphs.h5
  python bin/pretrain.py --gin_config=gin/pretrain_records.gin --output=weights/resnet18.h5 \
      --gin_bindings="labelled_batches.records_dir = '/data/records/ilsvrc_2012'"

Then: --gin_bindings="BACKBONE_WEIGHTS = '/tmp/conv4_glyphs.h5'" for bin/train.py.

Checkpoints go to <output>.checkpoints/: after Ctrl-C (or SIGTERM) the same command resumes,
and on a finished run it does nothing.
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
binary.define_gin_flags()
flags.adopt_module_key_flags(binary)
flags.DEFINE_string('output', None, 'Backbone weights to write (.h5, .weights.h5 or a TF '
                    'checkpoint prefix).')
flags.DEFINE_integer('seed', 0, 'Seeds weight initialisation (keras.utils.set_random_seed).')
flags.mark_flag_as_required('output')


def main(argv):
  del argv
  try:
    if not FLAGS.gin_config:
      raise config.ConfigError('--gin_config: give at least one gin file, e.g. '
                               '--gin_config=gin/pretrain_demo.gin')
    config.parse(FLAGS.gin_config, FLAGS.gin_bindings)
    import keras  # pylint: disable=g-import-not-at-top
    from lite_tf.training import pretrain  # pylint: disable=g-import-not-at-top
    keras.utils.set_random_seed(FLAGS.seed)
    result = pretrain.run_pretraining(FLAGS.output)
  except config.USER_ERRORS as e:
    print(f'error: {binary.describe(e)}', file=sys.stderr)
    sys.exit(1)
  done = ('already pretrained: nothing to do; backbone' if result['resumed'] == 'finished'
          else 'pretrained backbone saved to')
  accuracy = ('' if result['accuracy'] is None
              else f", final training accuracy {100 * result['accuracy']:.1f}%")
  print(f"{done} {result['output']} ({result['num_classes']} classes{accuracy})")


if __name__ == '__main__':
  app.run(binary.exits_on_error(main))
