"""Frames per second of the ORBIT reader: whole training tasks (the 'train' protocol's
context and target clips) decoded from JPEG frames and resized to --image_size, uint8.

  python bin/benchmark_orbit_reader.py --image_size=224 --tasks=10
  python bin/benchmark_orbit_reader.py --root=/data/orbit_benchmark_224 --split=train

Without --root it generates the ORBIT-layout demo data with --frame_size frames (224: the
released 224x224 copy; 1080 is the original size) into a temporary folder first.
"""

import json
import os
import resource
import sys
import tempfile
import time

from lite_tf import quiet  # pylint: disable=g-import-not-at-top
quiet.start()  # before TensorFlow loads: its native log stays out of the terminal

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from lite_tf import binary

FLAGS = flags.FLAGS
flags.DEFINE_string('root', None, 'ORBIT folder (default: generated demo data).')
binary.require_existing_dir('root')
flags.DEFINE_string('split', 'train', 'Split whose tasks are read.')
flags.DEFINE_integer('image_size', 224, 'Decoded frame side.')
flags.DEFINE_integer('frame_size', 224, 'Generated data: side of the JPEG frames on disk.')
flags.DEFINE_integer('tasks', 10, lower_bound=1, help='Tasks to time (after one warm-up task).')
flags.DEFINE_integer('parallel', 16, 'Frames decoded in parallel.')
flags.DEFINE_string('output', None, 'Write the result as JSON here.')


def main(argv):
  del argv
  from lite_tf.data.orbit import dataset as orbit  # pylint: disable=g-import-not-at-top
  from lite_tf.data.orbit import episodes as orbit_episodes  # pylint: disable=g-import-not-at-top
  from lite_tf.data.orbit import synthetic as orbit_synthetic  # pylint: disable=g-import-not-at-top
  from lite_tf.data.orbit import tasks as orbit_tasks  # pylint: disable=g-import-not-at-top
  root = FLAGS.root
  if root is None:
    root = os.path.join(tempfile.mkdtemp(prefix='lite_tf_orbit_'), 'orbit')
    orbit_synthetic.generate(root, frame_size=FLAGS.frame_size,
                             collectors={'train': 4, 'validation': 1, 'test': 1})
  dataset = orbit.OrbitDataset(root, splits=(FLAGS.split,))
  sampler = orbit_tasks.TaskSampler(dataset, FLAGS.split, orbit_tasks.PROTOCOLS['train'])
  source = orbit_episodes.OrbitEpisodes(sampler, FLAGS.image_size, FLAGS.parallel)
  source.episode(0)  # warm-up: traces the decoder
  frames, start = 0, time.perf_counter()
  for index in range(1, FLAGS.tasks + 1):
    episode = source.episode(index)
    frames += len(episode['support_images']) + len(episode['query_images'])
  seconds = time.perf_counter() - start
  result = {
      'root': FLAGS.root or f'generated ({FLAGS.frame_size}x{FLAGS.frame_size} JPEG frames)',
      'image_size': FLAGS.image_size, 'tasks': FLAGS.tasks, 'frames': frames,
      'seconds': seconds, 'frames_per_second': frames / seconds,
      'frames_per_task': frames / FLAGS.tasks, 'cpus': os.cpu_count(),
      'peak_rss_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
  }
  print(json.dumps(result, indent=1))
  if FLAGS.output:
    from lite_tf import atomic  # pylint: disable=g-import-not-at-top
    atomic.write_json(FLAGS.output, result, indent=1)
  sys.stdout.flush()


if __name__ == '__main__':
  app.run(binary.exits_on_error(main))
