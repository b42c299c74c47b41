"""Writes a fixed set of evaluation episodes (descriptions and record positions, not pixels)
so that every model is evaluated on exactly the same episodes (Meta-Dataset's dump_episodes).

  python bin/dump_episodes.py --records_dir=/data/records/dtd --split=test \
      --num_episodes=600 --seed=0 --output=episodes/dtd_test.json

Read back with lite_tf.data.saved_episodes (gin: @saved_episodes, or
run_vtab_md_evaluation.md_episodes_dir for the VTAB+MD suite). The file holds the checksum
of the records' dataset spec; records with another spec are refused.
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
flags.DEFINE_string('records_dir', None, 'Meta-Dataset records folder (dataset_spec.json).')
flags.DEFINE_enum('split', 'test', ['train', 'valid', 'test'], 'Split to draw episodes from.')
flags.DEFINE_integer('num_episodes', 600, 'Episodes to write.')
flags.DEFINE_integer('seed', 0, 'Sampler seed.')
binary.define_gin_flags(
    config_help='gin files (e.g. an EpisodeDescriptionConfig).',
    bindings_help='gin bindings, e.g. "EpisodeDescriptionConfig.num_ways = 5".')
flags.adopt_module_key_flags(binary)
flags.DEFINE_string('output', None, 'The JSON file to write (atomically).')
flags.mark_flags_as_required(['records_dir', 'output'])


def main(argv):
  del argv
  try:
    if FLAGS.num_episodes < 1:
      raise ValueError(f'--num_episodes must be at least 1; got {FLAGS.num_episodes}')
    if not os.path.exists(os.path.join(FLAGS.records_dir, 'dataset_spec.json')):
      raise FileNotFoundError(f'--records_dir={FLAGS.records_dir!r}: no dataset_spec.json')
    config.parse(FLAGS.gin_config, FLAGS.gin_bindings)
    from lite_tf.data.meta_dataset import reader  # pylint: disable=g-import-not-at-top
    from lite_tf.data.meta_dataset import sampling  # pylint: disable=g-import-not-at-top
    from lite_tf.data import saved_episodes  # pylint: disable=g-import-not-at-top
    source = reader.RecordsEpisodeSource(FLAGS.records_dir, FLAGS.split, image_size=8,
                                         config=sampling.EpisodeDescriptionConfig(),
                                         seed=FLAGS.seed)
    count = saved_episodes.dump_episodes(source, FLAGS.num_episodes, FLAGS.output)
  except config.USER_ERRORS as e:
    print(f'error: {binary.describe(e)}', file=sys.stderr)
    sys.exit(1)
  print(f'{count} {FLAGS.split} episodes of {source.spec.name} written to {FLAGS.output}')


if __name__ == '__main__':
  app.run(binary.exits_on_error(main))
