"""Whole-process peak memory and time of bin/train.py on large fixed-size tasks.

Writes glyph records at --image_size (once, into --work_dir), then runs bin/train.py in a
watched child process over them: --num_steps tasks of --way x --shot support images and
--way x --query_shot query images, one history line per task, then --test_episodes test tasks.
Reports the child's peak RSS from process start (VmHWM, read from outside), the time from
process start to its first task and the seconds per task after it
(lite_tf.benchmarks.train_memory).

  python bin/benchmark_train_memory.py --gin_config=gin/records_simple_cnaps.gin \
      --image_size=224 --way=10 --shot=100 --query_shot=4 --num_steps=4 \
      --precision=mixed_bfloat16 --recompute_batch=8 --recompute_mode=loop \
      --image_dtype=uint8 --set_encoder_size=84 \
      --output=docs/benchmarks/train_memory_simple_cnaps_effb0_s224_n1000.json
"""

import os
import sys

from lite_tf import quiet  # pylint: disable=g-import-not-at-top
quiet.start()  # before TensorFlow loads: its native log stays out of the terminal

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from lite_tf import binary
from lite_tf.benchmarks import step_flags

FLAGS = flags.FLAGS
binary.define_gin_flags(
    config_default=['gin/records_simple_cnaps.gin'],
    config_help='gin config(s) of the run, over Meta-Dataset records '
                '(run_training.episode_source = @records_episodes).',
    bindings_help='Further bindings, after the benchmark\'s own.')
flags.adopt_module_key_flags(binary)
flags.DEFINE_integer('image_size', 224, 'Image side S (IMAGE_SIZE and the records).')
flags.DEFINE_integer('way', 10, 'Classes per task (EpisodeDescriptionConfig.num_ways).')
flags.DEFINE_integer('shot', 100, 'Support images per class: N = way * shot.')
flags.DEFINE_integer('query_shot', 4, 'Query images per class.')
flags.DEFINE_integer('num_steps', 4, 'Training tasks (run_training.num_steps).')
flags.DEFINE_integer('test_episodes', 1, 'Test tasks evaluated at the end.')
step_flags.define_step_flags('uint8', {
    'precision': 'precision.policy (lite_tf.precision).',
    'recompute_batch': "lite.recompute_batch (default: the shipped 'auto'; 0: none).",
    'recompute_mode': 'lite.recompute_mode, with --recompute_batch.',
    'set_encoder_size': '*cnaps.set_encoder_size (default: the config\'s).',
    'image_dtype': 'records_episodes.image_dtype: how the pipeline holds the tasks.'})
step_flags.define_child_flags(False, {
    'malloc': 'glibc malloc of the child.',
    'memory_limit_gb': 'Kill the run when its RSS passes this.',
    'bfc': 'Run the child with TF\'s BFC allocator on CPU (default: TF\'s default CPU '
           'allocator, what users run).'})
flags.adopt_module_key_flags(step_flags)
flags.DEFINE_integer('jitters_per_font', None, 'Images per class per font of the records '
                     '(16 fonts; default: enough for shot + query_shot).')
flags.DEFINE_string('work_dir', '/tmp/lite_tf_train_memory', 'Where the records (kept, '
                    'reused) and the training run go.')
flags.DEFINE_integer('timeout_s', 3600, 'Kill the run after this many seconds.')
flags.DEFINE_string('output', None, 'Write the result as JSON here (atomically).')


def main(argv):
  del argv
  from lite_tf.benchmarks import process  # pylint: disable=g-import-not-at-top
  from lite_tf.benchmarks import train_memory  # pylint: disable=g-import-not-at-top
  from lite_tf.data import glyphs  # pylint: disable=g-import-not-at-top
  for flag in ('image_size', 'way', 'shot', 'query_shot', 'num_steps', 'test_episodes'):
    if FLAGS[flag].value <= 0:
      sys.exit(f'error: --{flag} must be positive; got {FLAGS[flag].value}')
  fonts = len(glyphs.FONT_FILES)
  needed = FLAGS.shot + FLAGS.query_shot
  jitters = FLAGS.jitters_per_font or -(-needed // fonts)
  if jitters * fonts < needed:
    sys.exit(f'error: --jitters_per_font={jitters} gives {jitters * fonts} images per class; '
             f'--shot + --query_shot needs {needed}')
  if 3 * FLAGS.way > len(train_memory.CHARS):
    sys.exit(f'error: --way={FLAGS.way}: the records have at most {len(train_memory.CHARS) // 3} '
             'classes per split')
  for path in FLAGS.gin_config:
    if not os.path.isfile(path):
      sys.exit(f'error: --gin_config {path!r} is not a file')
  records_dir = os.path.join(FLAGS.work_dir, train_memory.records_name(
      FLAGS.image_size, FLAGS.way, jitters, 0))
  print(f'records: {records_dir}', flush=True)
  spec = train_memory.write_glyph_records(records_dir, FLAGS.image_size, FLAGS.way, jitters)
  args = [f'--gin_config={c}' for c in FLAGS.gin_config]
  bindings = train_memory.gin_bindings(
      records_dir, FLAGS.image_size, FLAGS.way, FLAGS.shot, FLAGS.query_shot, FLAGS.num_steps,
      FLAGS.precision, FLAGS.recompute_batch, FLAGS.recompute_mode, FLAGS.set_encoder_size,
      FLAGS.image_dtype, FLAGS.test_episodes) + list(FLAGS.gin_bindings)
  args += [f'--gin_bindings={b}' for b in bindings]
  print(f'bin/train.py: {FLAGS.num_steps} tasks of N = {FLAGS.way * FLAGS.shot} at '
        f'{FLAGS.image_size}x{FLAGS.image_size}, {FLAGS.precision}', flush=True)
  result = train_memory.run_train(args, os.path.join(FLAGS.work_dir, 'train'),
                                  FLAGS.memory_limit_gb, bfc=FLAGS.bfc, malloc=FLAGS.malloc,
                                  timeout_s=FLAGS.timeout_s)
  result['records_images'] = sum(spec.images_per_class.values())
  payload = {'flags': {k: FLAGS[k].value for k in (
      'gin_config', 'gin_bindings', 'image_size', 'way', 'shot', 'query_shot', 'num_steps',
      'test_episodes', 'precision', 'recompute_batch', 'recompute_mode', 'set_encoder_size',
      'image_dtype', 'bfc', 'malloc')}, 'support_size': FLAGS.way * FLAGS.shot,
             'train_args': args, 'result': result}
  if FLAGS.output:
    process.write_json(FLAGS.output, payload)
  if 'error' in result:
    print('\n'.join(result.get('stderr_tail', [])), file=sys.stderr)
    sys.exit(f'error: {result["error"]}')
  gib = 1024 ** 3
  if not result['history_line_seconds']:
    sys.exit('error: bin/train.py wrote no history line (a --gin_bindings override of '
             'run_training.steps_per_log or num_steps?); see the JSON')
  per_task = result['seconds_per_task']
  print(f'whole-process peak RSS {result["process_peak_rss_bytes"] / gib:.2f} GiB '
        f'({result["process_peak_rss_bytes"]:,} bytes; during training '
        f'{result["peak_rss_during_training_bytes"] / gib:.2f} GiB); first task '
        f'{result["first_task_seconds_from_start"]:.1f} s from process start; '
        + (f'{per_task:.1f} s per task after it' if per_task else 'one task only'))


if __name__ == '__main__':
  app.run(binary.exits_on_error(main))
