"""Supervised pre-training of a backbone, for learners that keep it frozen (CNAPs, Simple CNAPs).

  python bin/pretrain.py --gin_config=gin/pretrain_demo.gin --output=/tmp/conv4_glyphs.h5
  python bin/pretrain.py --gin_config=gin/pretrain_records.gin --output=weights/resnet18.h5 \
      --gin_bindings="labelled_batches.records_dir = '/data/records/ilsvrc_2012'"

Then: --gin_bindings="BACKBONE_WEIGHTS = '/tmp/conv4_glyphs.h5'" for bin/train.py.
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from lite_tf import binary
from lite_tf import config

FLAGS = flags.FLAGS
binary.define_gin_flags()
flags.adopt_module_key_flags(binary)
flags.DEFINE_string('output', None, 'Backbone weights to write (.h5, .weights.h5 or a TF '
                    'checkpoint prefix).')
flags.mark_flag_as_required('output')


def main(argv):
  del argv
  try:
    if not FLAGS.gin_config:
      raise config.ConfigError('--gin_config: give at least one gin file, e.g. '
                               '--gin_config=gin/pretrain_demo.gin')
    config.parse(FLAGS.gin_config, FLAGS.gin_bindings)
    from lite_tf.training import pretrain  # pylint: disable=g-import-not-at-top
    result = pretrain.run_pretraining(FLAGS.output)
  except config.USER_ERRORS as e:
    print(f'error: {binary.describe(e)}', file=sys.stderr)
    sys.exit(1)
  print(f"pretrained backbone saved to {result['output']} ({result['num_classes']} classes, "
        f"final training accuracy {100 * result['accuracy']:.1f}%)")


if __name__ == '__main__':
  app.run(binary.exits_on_error(main))
