"""Evaluates a trained learner: accuracy with a 95% CI and test-time cost per dataset.

  python bin/evaluate.py --train_dir=runs/demo
  python bin/evaluate.py --train_dir=runs/md --gin_config=gin/eval_datasets.gin \
      --num_episodes=600 --weights=final

By default the run's own operative_config.gin rebuilds the learner and its episode source
(test split); --gin_config / --gin_bindings add to it, e.g. `run_evaluation.datasets` to
evaluate on several records datasets. Writes results.json, results.csv and results.md to
--output_dir (default: <train_dir>/eval) and prints the table. A run trained on ORBIT
(`run_training.episode_source = @orbit_episodes`) gets the LITE paper's Table 1 columns
instead (lite_tf.training.orbit_evaluation; --num_episodes: tasks per mode). With
--gin_config=gin/vtab_md.gin it evaluates on every present MD-v2 and VTAB-v2 task and writes
the LITE paper's VTAB+MD table and chart (lite_tf.training.vtab_md_evaluation;
--num_episodes: MD episodes per dataset).
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
flags.DEFINE_string('train_dir', None, 'Training directory (operative_config.gin, weights).')
binary.define_gin_flags(config_help='Extra gin config files (repeatable).',
                        bindings_help='Extra gin bindings (repeatable).')
flags.adopt_module_key_flags(binary)
flags.DEFINE_string('output_dir', None, 'Where the tables go (default: <train_dir>/eval).')
flags.DEFINE_integer('num_episodes', None, 'Episodes per dataset (default 600, or the '
                     'run_evaluation.num_episodes binding).')
flags.DEFINE_enum('weights', 'best', ['best', 'final'], 'Best-validation or final weights.')
flags.mark_flag_as_required('train_dir')


def main(argv):
  del argv
  try:
    operative = os.path.join(FLAGS.train_dir, 'operative_config.gin')
    if not os.path.exists(operative):
      raise FileNotFoundError(f'--train_dir={FLAGS.train_dir!r}: no operative_config.gin; '
                              'is this a bin/train.py training directory?')
    bindings = list(FLAGS.gin_bindings)
    if FLAGS.num_episodes is not None and FLAGS.num_episodes < 1:
      raise ValueError(f'--num_episodes must be at least 1; got {FLAGS.num_episodes}')
    output_dir = FLAGS.output_dir or os.path.join(FLAGS.train_dir, 'eval')
    from lite_tf.training import train  # pylint: disable=g-import-not-at-top
    train.check_writable_dir(output_dir, '--output_dir')  # before the evaluation, not after
    if FLAGS.num_episodes is not None:
      bindings.append(f'run_evaluation.num_episodes = {FLAGS.num_episodes}')
    config.parse([operative] + list(FLAGS.gin_config), bindings)
    import gin  # pylint: disable=g-import-not-at-top
    from lite_tf.training import evaluation_report  # pylint: disable=g-import-not-at-top
    from lite_tf.training import orbit_evaluation  # pylint: disable=g-import-not-at-top
    from lite_tf.training import vtab_md_evaluation  # pylint: disable=g-import-not-at-top
    learner = gin.query_parameter('run_training.learner').scoped_configurable_fn()
    weights = evaluation_report.find_weights(FLAGS.train_dir, FLAGS.weights)
    model_name = os.path.basename(os.path.normpath(FLAGS.train_dir))
    if vtab_md_evaluation.is_vtab_md_run():  # VTAB+MD: the paper's Fig. 3 / Table 2
      if FLAGS.num_episodes is not None:
        bindings.append(f'run_vtab_md_evaluation.md_episodes = {FLAGS.num_episodes}')
        config.parse([operative] + list(FLAGS.gin_config), bindings)
        learner = gin.query_parameter('run_training.learner').scoped_configurable_fn()
      rows, missing = vtab_md_evaluation.run_vtab_md_evaluation(learner, weights)
      vtab_md_evaluation.write_report(rows, missing, output_dir, model_name)
      table = vtab_md_evaluation.markdown_table(rows, missing)
      written = 'vtab_md_results.json, vtab_md_table.{csv,md}, vtab_md_chart.png'
    elif orbit_evaluation.is_orbit_run():  # ORBIT: the paper's Table 1 columns
      if FLAGS.num_episodes is not None:
        bindings.append(f'run_orbit_evaluation.num_tasks = {FLAGS.num_episodes}')
        config.parse([operative] + list(FLAGS.gin_config), bindings)
        learner = gin.query_parameter('run_training.learner').scoped_configurable_fn()
      row, summaries, results = orbit_evaluation.run_orbit_evaluation(
          learner, weights, model_name=model_name)
      orbit_evaluation.write_report(row, summaries, results, output_dir)
      table = orbit_evaluation.markdown_table(row)
      written = ('orbit_results.json, orbit_table.{csv,md,png}, predictions_'
                 f'{{{",".join(results)}}}.json')
    else:
      rows = evaluation_report.run_evaluation(learner, weights)
      evaluation_report.write_report(rows, output_dir)
      table = evaluation_report.markdown_table(rows)
      written = 'results.{json,csv,md}'
  except config.USER_ERRORS as e:
    print(f'error: {binary.describe(e)}', file=sys.stderr)
    sys.exit(1)
  print(f'weights: {weights}')
  print(table, end='')
  print(f'written to {output_dir}/{written}')


if __name__ == '__main__':
  app.run(binary.exits_on_error(main))
