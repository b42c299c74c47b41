"""The personalised recognizer as TFLite on this CPU: size, latency per frame and accuracy of
the float32 and int8 flatbuffers (bin/personalize.py --export_tflite) against the float
SavedModel, on the ORBIT demo data's test users.

  python bin/train.py --gin_config=gin/orbit_demo_protonets.gin --train_dir=/tmp/orbit_demo
  python bin/benchmark_tflite.py --train_dir=/tmp/orbit_demo --num_threads=1 \
      --output=docs/benchmarks/tflite_orbit_demo.json

Each test user's clean videos are the support set (every --frames_every-th frame, as
personalize.py reads them); every frame of the user's clutter videos is a query. Latency: one
frame per invoke, the median over --latency_frames frames after --warmup invokes, with
--num_threads interpreter threads (the SavedModel: one frame per call, TF's own threads).
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
flags.DEFINE_string('train_dir', None, 'Training directory of a learner trained on the ORBIT '
                    'demo data (gin/orbit_demo_protonets.gin).')
binary.require_existing_dir('train_dir')
flags.DEFINE_string('root', None, 'ORBIT folder (default: the run\'s orbit_episodes.root).')
binary.require_existing_dir('root')
flags.DEFINE_string('split', 'test', 'Split whose users are personalised to.')
flags.DEFINE_integer('frames_every', 2, lower_bound=1, help='Support: every k-th clean frame.')
flags.DEFINE_integer('num_threads', 1, lower_bound=1, help='TFLite interpreter threads.')
flags.DEFINE_integer('latency_frames', 200, lower_bound=1, help='Frames timed per model.')
flags.DEFINE_integer('warmup', 10, lower_bound=0, help='Untimed invokes first.')
flags.DEFINE_string('output', None, 'Write the result as JSON here.')
flags.mark_flags_as_required(['train_dir'])


def median_ms(predict, frames, warmup):
  """Median milliseconds of predict(frame[None]) over `frames`, after `warmup` calls."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  for frame in frames[:warmup]:
    predict(frame[None])
  times = []
  for frame in frames:
    start = time.perf_counter()
    predict(frame[None])
    times.append(time.perf_counter() - start)
  return 1000 * float(np.median(times))


def user_frames(user_dir, size, frames_every):
  """A user's support (clean frames) and queries (every clutter frame, labelled)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from lite_tf import personalize  # pylint: disable=g-import-not-at-top
  support, labels, names = personalize.read_support_folder(user_dir, size, frames_every)
  query, query_labels = [], []
  for label, name in enumerate(names):
    clutter = os.path.join(user_dir, name, 'clutter')
    for video in sorted(os.listdir(clutter)):
      for path in personalize.frame_paths(os.path.join(clutter, video)):
        query.append(personalize.read_image(path, size))
        query_labels.append(label)
  return support, labels, names, np.stack(query), np.asarray(query_labels)


def main(argv):
  del argv
  import gin  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from lite_tf import config  # pylint: disable=g-import-not-at-top
  from lite_tf import export_tflite  # pylint: disable=g-import-not-at-top
  from lite_tf import personalize  # pylint: disable=g-import-not-at-top
  from lite_tf.benchmarks import process  # pylint: disable=g-import-not-at-top
  from lite_tf.training import checkpoints  # pylint: disable=g-import-not-at-top
  from lite_tf.training import evaluation_report  # pylint: disable=g-import-not-at-top
  operative = os.path.join(FLAGS.train_dir, 'operative_config.gin')
  if not os.path.exists(operative):
    sys.exit(f'error: --train_dir={FLAGS.train_dir!r}: no operative_config.gin')
  config.parse([operative], [])
  root = FLAGS.root or gin.query_parameter('orbit_episodes.root')
  if not isinstance(root, str):
    root = root.scoped_configurable_fn()
  split_dir = os.path.join(root, FLAGS.split)
  if not os.path.isdir(split_dir):
    sys.exit(f'error: --split={FLAGS.split!r}: no folder {split_dir!r}')
  learner = gin.query_parameter('run_training.learner').scoped_configurable_fn()
  size = learner.image_size
  weights = evaluation_report.find_weights(FLAGS.train_dir, 'best')
  models = {'saved_model': {}, 'float32': {}, 'int8': {}}
  correct = {m: 0 for m in models}
  agree = {m: 0 for m in models}
  max_logit_error, frames, users, latency_frames = 0.0, 0, [], {m: [] for m in models}
  workdir = tempfile.mkdtemp(prefix='lite_tf_tflite_')
  for user in sorted(os.listdir(split_dir)):
    support, labels, names, query, query_labels = user_frames(
        os.path.join(split_dir, user), size, FLAGS.frames_every)
    if not users:
      personalize.build(learner, support, labels)
      checkpoints.load_learner_weights(learner, weights)
    classifier = personalize.AdaptedClassifier(
        learner, personalize.adapt(learner, support, labels), names, size)
    saved = os.path.join(workdir, user)
    personalize.export(classifier, saved)
    serving = tf.saved_model.load(saved).signatures['serving_default']
    predict = {'saved_model': lambda x, s=serving: s(images=tf.constant(x))}
    for kind, quantize in (('float32', 'none'), ('int8', 'int8')):
      path = os.path.join(workdir, f'{user}_{kind}.tflite')
      models[kind].setdefault('bytes', []).append(
          export_tflite.export(classifier, path, quantize, support))
      predict[kind] = export_tflite.interpreter(path, FLAGS.num_threads)
    reference = predict['saved_model'](query)
    reference_index = reference['class_index'].numpy()
    for kind, fn in predict.items():
      out = fn(query) if kind == 'saved_model' else fn(images=query)
      index = np.asarray(out['class_index'])
      correct[kind] += int(np.sum(index == query_labels))
      agree[kind] += int(np.sum(index == reference_index))
      if kind == 'float32':
        expected = classifier.logits(tf.cast(query, tf.float32)).numpy()
        max_logit_error = max(max_logit_error, float(
            np.max(np.abs(out['logits'] - expected)) / np.max(np.abs(expected))))
      timed = query[:FLAGS.latency_frames]
      call = fn if kind == 'saved_model' else (lambda x, r=fn: r(images=x))
      latency_frames[kind].append(median_ms(call, timed, FLAGS.warmup))
    frames += len(query)
    users.append({'user': user, 'objects': len(names), 'support_frames': len(support),
                  'query_frames': len(query)})
  saved_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(
      os.path.join(workdir, users[0]['user'])) for f in fs)
  result = {'train_dir': FLAGS.train_dir, 'root': root, 'split': FLAGS.split,
            'learner': type(learner).__name__, 'image_size': size, 'users': users,
            'query_frames': frames, 'num_threads': FLAGS.num_threads,
            'float32_max_relative_logit_error': max_logit_error, 'models': {}}
  for kind in models:
    sizes = models[kind].get('bytes', [saved_bytes])
    result['models'][kind] = {
        'mean_mib': float(np.mean(sizes)) / 2**20,
        'median_ms_per_frame': float(np.median(latency_frames[kind])),
        'frame_accuracy': correct[kind] / frames,
        'agreement_with_saved_model': agree[kind] / frames}
  print(json.dumps(result, indent=1))
  if FLAGS.output:
    process.write_json(FLAGS.output, result)
  sys.stdout.flush()


if __name__ == '__main__':
  app.run(binary.exits_on_error(main))
