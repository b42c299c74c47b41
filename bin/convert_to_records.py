"""Converts image folders to Meta-Dataset records (one TFRecord per class + dataset_spec.json).

  python bin/convert_to_records.py --input_dir=photos --output_dir=records/photos --name=photos
  python bin/convert_to_records.py --input_dir=omniglot_like --output_dir=records/omni \
      --name=omni --splits_json=splits.json   # root/superclass/class/*.png -> bi-level spec
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string('input_dir', None, 'root/class/* or root/superclass/class/* images.')
flags.DEFINE_string('output_dir', None, 'Where the records and dataset_spec.json go.')
flags.DEFINE_string('name', None, 'Dataset name (defaults to the output folder name).')
flags.DEFINE_list('split_ratios', ['0.7', '0.15', '0.15'], 'train,valid,test class ratios.')
flags.DEFINE_integer('seed', 22, 'Seed of the class split.')
flags.DEFINE_string('splits_json', None, '{"train": [...], "valid": [...], "test": [...]} '
                    'of class (or superclass) folder names; overrides --split_ratios.')
flags.mark_flags_as_required(['input_dir', 'output_dir'])


def main(argv):
  del argv
  from lite_tf.data import convert  # pylint: disable=g-import-not-at-top
  try:
    ratios = [float(r) for r in FLAGS.split_ratios]
    report = convert.convert(FLAGS.input_dir, FLAGS.output_dir,
                             FLAGS.name or os.path.basename(os.path.normpath(FLAGS.output_dir)),
                             split_ratios=ratios, seed=FLAGS.seed, splits_json=FLAGS.splits_json)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  spec = report.spec
  print(f'wrote {report.num_images} images of {len(spec.images_per_class)} classes to '
        f'{FLAGS.output_dir}')
  for path, reason in report.skipped:
    print(f'skipped {path}: {reason}')


if __name__ == '__main__':
  app.run(main)
