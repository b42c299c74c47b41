"""Error of LITE's meta-gradient against |H|, beside sub-sampled tasks (the LITE paper's Fig. 4).

  python bin/gradient_study.py --gin_config=gin/gradient_study.gin --output_dir=/tmp/grad
  python bin/gradient_study.py --gin_config=gin/gradient_study.gin --output_dir=/tmp/grad_sc \
      --gin_bindings="gradient_study.learner = @simple_cnaps()" \
      --gin_bindings="gradient_study.context_subset = 'shared'"

Writes gradient_study.json, gradient_study.csv and gradient_study.png to --output_dir.
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
binary.define_gin_flags(bindings_help='gin bindings, e.g. "gradient_study.draws=20".')
flags.adopt_module_key_flags(binary)
flags.DEFINE_string('output_dir', None, 'Where the JSON, CSV and PNG go.')
flags.DEFINE_integer('seed', 0, 'Seeds weight initialisation (keras.utils.set_random_seed).')
flags.DEFINE_bool('from_grams', False, 'Recompute the statistics of the study already in '
                  '--output_dir from its gradient_study_grams.npz, drawing nothing again.')
flags.mark_flag_as_required('output_dir')


def main(argv):
  del argv
  try:
    if FLAGS.from_grams:
      from lite_tf.studies import gradient_study  # pylint: disable=g-import-not-at-top
      rows = gradient_study.resummarize(FLAGS.output_dir)
    else:
      if not FLAGS.gin_config:
        raise config.ConfigError('--gin_config: give at least one gin file, e.g. '
                                 '--gin_config=gin/gradient_study.gin')
      config.parse(FLAGS.gin_config, FLAGS.gin_bindings)
      import keras  # pylint: disable=g-import-not-at-top
      from lite_tf.studies import gradient_study  # pylint: disable=g-import-not-at-top
      keras.utils.set_random_seed(FLAGS.seed)  # before gin builds the learner
      rows = gradient_study.run_gradient_study(FLAGS.output_dir)
  except config.USER_ERRORS as e:
    print(f'error: {binary.describe(e)}', file=sys.stderr)
    sys.exit(1)
  print(f'{"estimator":12} {"|H|":>4} {"rel. RMSE":>10} {"rel. bias":>10} {"noise floor":>11} '
        f'{"bias ~ 0":>8}')
  for r in rows:
    if r['group'] == 'all':
      print(f"{r['estimator']:12} {r['subset_size']:4d} {r['relative_rmse']:10.4f} "
            f"{r['relative_bias']:10.4f} {r['relative_bias_noise_floor']:11.4f} "
            f"{str(r.get('bias_consistent_with_zero', '-')):>8}")
  print(f'wrote {FLAGS.output_dir}/gradient_study.{{json,csv,png}}')


if __name__ == '__main__':
  app.run(binary.exits_on_error(main))
