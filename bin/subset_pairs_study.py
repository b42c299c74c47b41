"""LITE's forward value and bias over every subset pair (H, H_c), per set-encoder norm.

  python bin/subset_pairs_study.py    # Conv-4, 16x16, N = 6, |H| = 2, chunk 3: ~2 minutes

Prints a markdown table (docs/STUDIES.md): for CNAPs and Simple CNAPs and each
set_encoder_norm, the full-set loss, LITE's loss over all 15 x 15 pairs, and the relative bias
of LITE's gradient averaged over them (lite_tf.studies.subset_pairs).
"""

from lite_tf import quiet  # pylint: disable=g-import-not-at-top
quiet.start()  # before TensorFlow loads: its native log stays out of the terminal

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from lite_tf.learners import cnaps
from lite_tf.learners import set_encoder
from lite_tf.learners import simple_cnaps
from lite_tf.studies import subset_pairs

flags.DEFINE_integer('image_size', 16, 'image side')
flags.DEFINE_integer('num_support', 6, 'N')
flags.DEFINE_integer('num_backprop', 2, '|H| = |H_c|')
flags.DEFINE_integer('chunk_size', 3, "LITE's gradient-free chunk size")
flags.DEFINE_float('regularizer_stddev', 0.5, 'FiLM regularizer vectors drawn with this '
                   'stddev, so the set encoder matters to the loss (0: the initial FiLM)')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  size = FLAGS.image_size
  learners = {
      'Simple CNAPs': lambda norm: simple_cnaps.SimpleCnaps(backbone='conv4', image_size=size,
                                                            set_encoder_norm=norm),
      'CNAPs': lambda norm: cnaps.Cnaps(backbone='conv4', image_size=size, set_encoder_norm=norm),
  }
  episode = subset_pairs.small_task(FLAGS.num_support, image_size=size)
  print(subset_pairs.norm_table(learners, set_encoder.NORMS, episode, FLAGS.num_backprop,
                                FLAGS.chunk_size, FLAGS.regularizer_stddev))


if __name__ == '__main__':
  app.run(main)
