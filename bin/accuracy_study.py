"""Held-out accuracy against |H| and image size (the shape of the LITE paper's Table 2, small
scale): meta-trains and evaluates every (learner, image size, |H|, seed) through bin/train.py,
then writes a table (markdown, CSV, JSON) and a plot to --output_dir. Re-running skips the runs
already done, so an interrupted study resumes.

  python bin/accuracy_study.py --output_dir=/tmp/accuracy_study
  python bin/accuracy_study.py --output_dir=/tmp/acc --learners=protonets --image_sizes=28 \
      --protonets_subsets=0,10,all --seeds=0 --gin_bindings="run_training.num_steps=200"
"""

import os
import sys

from lite_tf import quiet  # pylint: disable=g-import-not-at-top
quiet.start()  # before TensorFlow loads: its native log stays out of the terminal

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from lite_tf import binary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS
flags.DEFINE_string('output_dir', None, 'Where the runs, the table and the plot go.')
flags.DEFINE_string('gin_config', os.path.join(REPO, 'gin', 'accuracy_study.gin'),
                    'The training config of every run.')
flags.DEFINE_multi_string('gin_bindings', [], 'Extra bindings for every run.')
flags.DEFINE_list('learners', ['protonets', 'simple_cnaps'], 'Learners.')
flags.DEFINE_list('image_sizes', ['28', '42'], 'Image sides.')
binary.require_int_list('image_sizes')
flags.DEFINE_list('protonets_subsets', ['0', '10', '40', 'all'], '|H| values for ProtoNets.')
flags.DEFINE_list('simple_cnaps_subsets', ['1', '10', '40', 'all'],
                  '|H| values for Simple CNAPs (and CNAPs).')
flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds (weight initialisation and LITE subsets); '
                  'with two or more the CI includes seed variance.')
flags.mark_flag_as_required('output_dir')


def _check():
  from lite_tf.studies import accuracy_study  # pylint: disable=g-import-not-at-top
  unknown = sorted(set(FLAGS.learners) - set(accuracy_study.LEARNERS))
  if unknown:
    raise ValueError(f'--learners: unknown {unknown}; expected some of '
                     f'{sorted(accuracy_study.LEARNERS)}')
  for flag in ('image_sizes', 'seeds', 'protonets_subsets', 'simple_cnaps_subsets'):
    for value in FLAGS[flag].value:
      if not (value == accuracy_study.ALL and flag.endswith('subsets')) and not (
          value.isdigit()):
        raise ValueError(f'--{flag}: {value!r} is not a non-negative integer'
                         + (" or 'all'" if flag.endswith('subsets') else ''))
  if 'simple_cnaps' in FLAGS.learners or 'cnaps' in FLAGS.learners:
    if '0' in FLAGS.simple_cnaps_subsets:
      raise ValueError('--simple_cnaps_subsets: 0 leaves the set encoder without gradient; '
                       'the smallest |H| for Simple CNAPs and CNAPs is 1')
  if not os.path.exists(FLAGS.gin_config):
    raise ValueError(f'--gin_config: no such file {FLAGS.gin_config!r}')


def main(argv):
  del argv
  try:
    _check()
    from lite_tf import config  # pylint: disable=g-import-not-at-top
    # The bindings every run gets, checked here once: a typo is named in seconds, not after
    # the first run's start.
    config.parse([FLAGS.gin_config], FLAGS.gin_bindings)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  from lite_tf.studies import accuracy_study  # pylint: disable=g-import-not-at-top
  grid = {'protonets': FLAGS.protonets_subsets, 'simple_cnaps': FLAGS.simple_cnaps_subsets,
          'cnaps': FLAGS.simple_cnaps_subsets}
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  try:
    rows = accuracy_study.run_grid(
        FLAGS.output_dir, FLAGS.gin_config, FLAGS.learners,
        [int(s) for s in FLAGS.image_sizes], grid, [int(s) for s in FLAGS.seeds],
        FLAGS.gin_bindings, report=lambda m: print(m, flush=True))
  except accuracy_study.RunFailed as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  table = accuracy_study.aggregate(rows)
  setting = {'gin_config': FLAGS.gin_config, 'gin_bindings': FLAGS.gin_bindings,
             'learners': FLAGS.learners, 'image_sizes': FLAGS.image_sizes, 'grid': grid,
             'seeds': FLAGS.seeds}
  accuracy_study.write_report(rows, table, setting, FLAGS.output_dir)
  print(accuracy_study.markdown_table(table))
  print(f'wrote {FLAGS.output_dir}/accuracy_study.{{md,csv,json,png}}')


if __name__ == '__main__':
  app.run(binary.exits_on_error(main))
