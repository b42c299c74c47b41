"""Teachable recognizer: adapt a trained learner to your own classes in one forward pass.

  python bin/personalize.py --train_dir=runs/demo --support_dir=my_objects/ \
      --query=photos/ --export_dir=exported/my_objects

--support_dir holds one subfolder per class (object) of images, or of the object's videos as
folders of frames (ORBIT's <object>/clean/<video>/ layout works as is; every --frames_every-th
frame is used). --query is a folder of images to label; --query_video a video (a folder of
frames) classified frame by frame, causally, printing the running prediction:

  python bin/personalize.py --train_dir=runs/orbit --support_dir=P177/ \
      --query_video=P177/keys/clutter/P177--keys--clutter--abc/
Prints each query's predicted class and probability, writes them as JSON with --output, and
with --export_dir saves the adapted classifier as a SavedModel that serves images without
lite_tf installed (see lite_tf/personalize.py). --export_tflite writes it as a TFLite
flatbuffer for a phone, float32 or (--tflite_quantize=int8) int8 calibrated on the support
frames (see lite_tf/export_tflite.py):

  python bin/personalize.py --train_dir=runs/orbit --support_dir=P177/ \
      --export_tflite=P177.tflite --tflite_quantize=int8
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
flags.DEFINE_string('train_dir', None, 'Training directory of the learner (bin/train.py).')
flags.DEFINE_enum('weights', 'best', ['best', 'final'], 'Best-validation or final weights.')
flags.DEFINE_multi_string('gin_bindings', [], 'Extra gin bindings (repeatable).')
flags.DEFINE_string('support_dir', None, 'Folder with one subfolder of images per class.')
flags.DEFINE_string('query', None, 'Folder of images to classify.')
flags.DEFINE_string('query_video', None, 'A video (folder of frames) to classify frame by '
                    'frame, causally, with the running video prediction.')
flags.DEFINE_integer('frames_every', 30, 'Support videos: use every k-th frame.')
flags.DEFINE_integer('max_frames_per_video', 200, 'Support videos: at most this many frames '
                     'each.')
flags.DEFINE_string('export_dir', None, 'Save the adapted classifier here as a SavedModel.')
flags.DEFINE_string('export_tflite', None, 'Save the adapted classifier here as a TFLite '
                    'flatbuffer (a new .tflite file).')
flags.DEFINE_enum('tflite_quantize', 'none', ['none', 'int8'], '--export_tflite: float32 '
                  '(none) or int8 weights and activations calibrated on the support frames.')
flags.DEFINE_string('output', None, 'Write the predictions as JSON here.')
flags.mark_flags_as_required(['train_dir', 'support_dir'])


def main(argv):
  del argv
  try:
    if FLAGS.export_tflite:
      from lite_tf import export_tflite  # pylint: disable=g-import-not-at-top
      export_tflite.check_path(FLAGS.export_tflite)
    elif FLAGS.tflite_quantize != 'none':
      raise ValueError(f'--tflite_quantize={FLAGS.tflite_quantize} needs --export_tflite')
    operative = os.path.join(FLAGS.train_dir, 'operative_config.gin')
    if not os.path.exists(operative):
      raise FileNotFoundError(f'--train_dir={FLAGS.train_dir!r}: no operative_config.gin')
    config.parse([operative], FLAGS.gin_bindings)
    import gin  # pylint: disable=g-import-not-at-top
    from lite_tf import atomic  # pylint: disable=g-import-not-at-top
    from lite_tf import personalize  # pylint: disable=g-import-not-at-top
    from lite_tf.training import checkpoints  # pylint: disable=g-import-not-at-top
    from lite_tf.training import evaluation_report  # pylint: disable=g-import-not-at-top
    learner = gin.query_parameter('run_training.learner').scoped_configurable_fn()
    size = learner.image_size
    images, labels, class_names = personalize.read_support_folder(
        FLAGS.support_dir, size, FLAGS.frames_every, FLAGS.max_frames_per_video)
    personalize.build(learner, images, labels)
    checkpoints.load_learner_weights(
        learner, evaluation_report.find_weights(FLAGS.train_dir, FLAGS.weights))
    task = personalize.adapt(learner, images, labels)
    classifier = personalize.AdaptedClassifier(learner, task, class_names, size)
    predictions = []
    if FLAGS.query:
      query, paths = personalize.read_query_files(FLAGS.query, size)
      out = classifier.serve(query)
      for path, probs, index in zip(paths, out['probabilities'].numpy(),
                                    out['class_index'].numpy()):
        predictions.append({'file': path, 'class': class_names[index],
                            'probability': float(probs[index]),
                            'probabilities': {c: float(p) for c, p in zip(class_names, probs)}})
    stream = []
    if FLAGS.query_video:
      if not os.path.isdir(FLAGS.query_video):
        raise FileNotFoundError(f'--query_video={FLAGS.query_video!r} is not a folder of frames')
      for step in personalize.stream_video(classifier, FLAGS.query_video, class_names):
        stream.append(step)
        print(f"frame {step['frame']:5d}: {step['class']} ({100 * step['probability']:.1f}%)"
              f" | video so far: {step['video_class']} ({step['video_votes']}/{step['frame']})",
              flush=True)
    if FLAGS.output:
      atomic.write_json(FLAGS.output, {'classes': class_names, 'predictions': predictions,
                                       'video': stream})
    if FLAGS.export_dir:
      personalize.export(classifier, FLAGS.export_dir)
    if FLAGS.export_tflite:
      tflite_bytes = export_tflite.export(classifier, FLAGS.export_tflite,
                                          FLAGS.tflite_quantize, images)
  except config.USER_ERRORS as e:
    print(f'error: {binary.describe(e)}', file=sys.stderr)
    sys.exit(1)
  print(f'adapted to {len(class_names)} classes from {len(labels)} support images in one '
        'forward pass')
  for p in predictions:
    print(f"{p['file']}: {p['class']} ({100 * p['probability']:.1f}%)")
  if FLAGS.export_dir:
    print(f'exported SavedModel to {FLAGS.export_dir}')
  if FLAGS.export_tflite:
    kind = 'int8' if FLAGS.tflite_quantize == 'int8' else 'float32'
    print(f'exported TFLite flatbuffer ({kind}, {tflite_bytes / 2**20:.2f} MiB, '
          f'{size}x{size} uint8 images) to {FLAGS.export_tflite}')


if __name__ == '__main__':
  app.run(binary.exits_on_error(main))
