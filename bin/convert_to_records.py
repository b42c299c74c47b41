"""Converts image folders to Meta-Dataset records (one TFRecord per class + dataset_spec.json).

  python bin/convert_to_records.py --input_dir=photos --output_dir=records/photos --name=photos
  python bin/convert_to_records.py --input_dir=omniglot_like --output_dir=records/omni \
      --name=omni --splits_json=splits.json   # root/superclass/class/*.png -> bi-level spec
  python bin/convert_to_records.py --input_dir=ILSVRC2012_train --output_dir=records/ilsvrc_2012 \
      --name=ilsvrc_2012 --is_a=wordnet.is_a.txt --words=words.txt \
      --valid_root=n02075296 --test_root=n03183080 \
      --exclude_lists=ImageNet_Caltech101_duplicates.txt,ImageNet_Caltech256_duplicates.txt,\
ImageNet_CUBirds_duplicates.txt   # root/<wn_id>/*.JPEG -> hierarchical spec
"""

import os
import sys

from lite_tf import quiet  # pylint: disable=g-import-not-at-top
quiet.start()  # before TensorFlow loads: its native log stays out of the terminal

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from lite_tf import binary

FLAGS = flags.FLAGS
flags.DEFINE_string('input_dir', None, 'root/class/* or root/superclass/class/* images.')
flags.DEFINE_string('output_dir', None, 'Where the records and dataset_spec.json go.')
flags.DEFINE_string('name', None, 'Dataset name (defaults to the output folder name).')
flags.DEFINE_list('split_ratios', ['0.7', '0.15', '0.15'], 'train,valid,test class ratios.')
flags.DEFINE_integer('seed', 22, 'Seed of the class split.')
flags.DEFINE_string('splits_json', None, '{"train": [...], "valid": [...], "test": [...]} '
                    'of class (or superclass) folder names; overrides --split_ratios.')
flags.DEFINE_string('is_a', None, 'WordNet is-a file ("parent child" per line, as ImageNet\'s '
                    'wordnet.is_a.txt): class folders are wn_ids and the spec is hierarchical.')
flags.DEFINE_string('words', None, 'Optional "wn_id<TAB>words" file (ImageNet\'s words.txt).')
flags.DEFINE_string('valid_root', 'n02075296', 'With --is_a: the classes below this node are '
                    'the valid split (Meta-Dataset: carnivore).')
flags.DEFINE_string('test_root', 'n03183080', 'With --is_a: the classes below this node are '
                    'the test split (Meta-Dataset: device).')
flags.DEFINE_list('exclude_lists', [], 'Files listing images to leave out, one "dir/name  # '
                  'comment" per line (the format of Meta-Dataset\'s ImageNet_*_duplicates.txt); '
                  'matched on base names.')
flags.DEFINE_bool('train_split_only', False, 'With --is_a: every class in TRAIN, VALID and TEST '
                  'empty (Meta-Dataset\'s ilsvrc_2012_v2, the MD-v2 training source).')
flags.DEFINE_bool('overwrite', False, 'Replace the dataset already in --output_dir (the new one '
                  'is written beside it and renamed into place when complete).')
flags.mark_flags_as_required(['input_dir', 'output_dir'])


def _ratios(values):
  try:
    return [float(r) for r in values]
  except ValueError:
    raise ValueError('--split_ratios must be three numbers (train,valid,test class ratios, '
                     f'e.g. 0.7,0.15,0.15); got {",".join(values)!r}') from None


def main(argv):
  del argv
  from lite_tf.data.meta_dataset import convert  # pylint: disable=g-import-not-at-top
  try:
    name = FLAGS.name or os.path.basename(os.path.normpath(FLAGS.output_dir))
    exclude = convert.read_exclusion_lists(FLAGS.exclude_lists)
    if FLAGS.is_a:
      report = convert.convert_hierarchical(FLAGS.input_dir, FLAGS.output_dir, name,
                                            FLAGS.is_a, FLAGS.valid_root, FLAGS.test_root,
                                            words_path=FLAGS.words, exclude=exclude,
                                            overwrite=FLAGS.overwrite,
                                            train_split_only=FLAGS.train_split_only)
    else:
      report = convert.convert(FLAGS.input_dir, FLAGS.output_dir, name,
                               split_ratios=_ratios(FLAGS.split_ratios), seed=FLAGS.seed,
                               splits_json=FLAGS.splits_json, exclude=exclude,
                               overwrite=FLAGS.overwrite)
  except (ValueError, OSError) as e:
    print(f'error: {binary.describe(e)}', file=sys.stderr)
    sys.exit(1)
  spec = report.spec
  num_classes = sum(len(spec.class_ids(s)) for s in ('train', 'valid', 'test'))
  print(f'wrote {report.num_images} images of {num_classes} classes to {FLAGS.output_dir}')
  for warning in convert.warn_empty_splits(spec):
    print(warning, file=sys.stderr)
  if report.excluded:
    print(f'left out {report.excluded} images named in --exclude_lists')
  if report.skipped:
    print(f'warning: left out {len(report.skipped)} unreadable image(s) of --input_dir '
          f'(the dataset holds the {report.num_images} others):', file=sys.stderr)
  for path, reason in report.skipped:
    print(f'  skipped {path}: {reason}', file=sys.stderr)


if __name__ == '__main__':
  app.run(binary.exits_on_error(main))
