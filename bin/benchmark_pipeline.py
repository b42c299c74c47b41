"""Episodes per second of the records reader: variable way/shot episodes decoded from JPEG
records (Meta-Dataset's default episode configuration) at --image_size.

  python bin/benchmark_pipeline.py --image_size=224 --episodes=20
  python bin/benchmark_pipeline.py --records_dir=/data/records/ilsvrc_2012 --split=train

Without --records_dir it writes a synthetic JPEG dataset first (--classes classes of
--images_per_class 256x256 JPEGs) with bin/convert_to_records.py's library code.
"""

import json
import os
import sys
import tempfile
import time

from lite_tf import quiet  # pylint: disable=g-import-not-at-top
quiet.start()  # before TensorFlow loads: its native log stays out of the terminal

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from lite_tf import binary

FLAGS = flags.FLAGS
flags.DEFINE_string('records_dir', None, 'Meta-Dataset records folder (default: synthetic).')
binary.require_existing_dir('records_dir')
flags.DEFINE_string('split', 'train', 'Split to sample.')
flags.DEFINE_integer('image_size', 224, 'Decoded image side.')
flags.DEFINE_integer('episodes', 20, lower_bound=1, help='Episodes to time (after one warm-up episode).')
flags.DEFINE_integer('classes', 60, 'Synthetic dataset: classes.')
flags.DEFINE_integer('images_per_class', 120, 'Synthetic dataset: images per class.')
flags.DEFINE_enum('image_dtype', 'float32', ['float32', 'uint8'], 'Episode image dtype.')
flags.DEFINE_string('output', None, 'Write the result as JSON here.')


def _synthetic_jpegs(root, classes, per_class):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(0)
  for c in range(classes):
    directory = os.path.join(root, f'class{c:03d}')
    os.makedirs(directory)
    base = rng.uniform(0, 255, (8, 8, 3))
    for i in range(per_class):
      small = np.clip(base + rng.normal(0, 40, (8, 8, 3)), 0, 255).astype(np.uint8)
      image = Image.fromarray(small).resize((256, 256), Image.Resampling.BICUBIC)
      image.save(os.path.join(directory, f'{i:04d}.jpg'), quality=90)


def main(argv):
  del argv
  from lite_tf.data.meta_dataset import convert  # pylint: disable=g-import-not-at-top
  from lite_tf.data.meta_dataset import reader  # pylint: disable=g-import-not-at-top
  records_dir = FLAGS.records_dir
  if records_dir is None:
    tmp = tempfile.mkdtemp(prefix='lite_tf_pipeline_')
    _synthetic_jpegs(os.path.join(tmp, 'images'), FLAGS.classes, FLAGS.images_per_class)
    records_dir = os.path.join(tmp, 'records')
    convert.convert(os.path.join(tmp, 'images'), records_dir, 'synthetic',
                    split_ratios=(1.0, 0.0, 0.0))
  source = reader.RecordsEpisodeSource(records_dir, FLAGS.split, image_size=FLAGS.image_size,
                                       seed=0, image_dtype=FLAGS.image_dtype)
  episodes = iter(source.as_dataset())
  next(episodes)  # warm-up: traces the decoder
  start = time.perf_counter()
  support = query = 0
  for _ in range(FLAGS.episodes):
    e = next(episodes)
    support += int(e['support_images'].shape[0])
    query += int(e['query_images'].shape[0])
  seconds = time.perf_counter() - start
  result = {'episodes_per_second': FLAGS.episodes / seconds,
            'images_per_second': (support + query) / seconds,
            'mean_support_size': support / FLAGS.episodes,
            'mean_query_size': query / FLAGS.episodes,
            'image_size': FLAGS.image_size, 'image_dtype': FLAGS.image_dtype,
            'records_dir': FLAGS.records_dir or 'synthetic JPEG 256x256'}
  print(json.dumps(result, indent=1))
  if FLAGS.output:
    with open(FLAGS.output, 'w') as f:
      json.dump(result, f, indent=1)


if __name__ == '__main__':
  app.run(binary.exits_on_error(main))
