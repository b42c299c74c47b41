"""Flags the benchmark binaries share: the learner and sizes of one LITE step, how the step runs
(precision, recomputation, image dtype) and how a watched child process runs (allocator,
malloc, memory limit).

Each function takes the defaults in which the binaries differ, and a binary whose help says
more (or less) than the one here passes its own texts as help_texts. The binary then makes
the flags its own, so that its --help lists them:

  step_flags.define_step_flags('uint8', {'precision': 'precision.policy (lite_tf.precision).'})
  flags.adopt_module_key_flags(step_flags)

Nothing here imports TensorFlow (a binary's --help and flag errors come before TF loads), so
the value lists are literals; tests/test_binary_flags.py checks them against
lite_tf.precision.POLICIES and lite_tf.benchmarks.memory.LEARNERS.
"""

from absl import flags

LEARNERS = ['protonets', 'cnaps', 'simple_cnaps']
POLICIES = ['float32', 'mixed_bfloat16', 'mixed_float16']
RECOMPUTE_MODES = ['unrolled', 'loop']
IMAGE_DTYPES = ['float32', 'uint8']
MALLOC_MODES = ['default', 'no_mmap']  # lite_tf.benchmarks.process.child_env

SIZING_HELP = {
    'learner': 'Learner trained with LITE.',
    'backbone': 'Backbone name (lite_tf.backbones).',
    'image_size': 'Image side S.',
    'num_backprop': '|H|, support images back-propagated.',
    'chunk_size': 'Chunk size of the gradient-free forward pass.',
    'query_batch_size': 'Query batch size.',
    'way': 'Classes per task.',
}
STEP_HELP = {
    'precision': 'Keras dtype policy of the learner (lite_tf.precision).',
    'recompute_batch': 'Recompute the activations of back-propagated images in the backward '
                       'pass, in micro-batches of this size.',
    'recompute_mode': 'With --recompute_batch: lite.recompute_mode (estimator.recomputed_rows).',
    'set_encoder_size': 'CNAPs / Simple CNAPs: the set encoder\'s resolution '
                        '(*cnaps.set_encoder_size; default the backbone\'s).',
    'image_dtype': 'How the task holds its images: float32 in [-1, 1], or uint8 pixels.',
}
CHILD_HELP = {
    'malloc': 'glibc malloc: default, or no_mmap (MALLOC_MMAP_MAX_=0, high trim threshold).',
    'memory_limit_gb': 'Kill a run whose RSS passes this; reported as OOM.',
    'bfc': 'Run children with TF\'s BFC allocator on CPU (needed for the TF allocator peak); '
           '--nobfc keeps TF\'s default CPU allocator, what users run, and reports RSS only.',
}


def define_sizing_flags(learner, backbone, image_size, help_texts=None):
  """--learner, --backbone, --image_size, --num_backprop (|H|, default 40), --chunk_size (40),
  --query_batch_size (40) and --way (10). help_texts: {flag: help} replacing SIZING_HELP's."""
  text = {**SIZING_HELP, **(help_texts or {})}
  flags.DEFINE_enum('learner', learner, LEARNERS, text['learner'])
  flags.DEFINE_string('backbone', backbone, text['backbone'])
  flags.DEFINE_integer('image_size', image_size, text['image_size'])
  flags.DEFINE_integer('num_backprop', 40, text['num_backprop'])
  flags.DEFINE_integer('chunk_size', 40, text['chunk_size'])
  flags.DEFINE_integer('query_batch_size', 40, text['query_batch_size'])
  flags.DEFINE_integer('way', 10, text['way'])


def define_step_flags(image_dtype, help_texts=None):
  """--precision (default float32), --recompute_batch (none), --recompute_mode (loop),
  --set_encoder_size (none) and --image_dtype. help_texts: {flag: help} replacing
  STEP_HELP's."""
  text = {**STEP_HELP, **(help_texts or {})}
  flags.DEFINE_enum('precision', 'float32', POLICIES, text['precision'])
  flags.DEFINE_integer('recompute_batch', None, text['recompute_batch'])
  flags.DEFINE_enum('recompute_mode', 'loop', RECOMPUTE_MODES, text['recompute_mode'])
  flags.DEFINE_integer('set_encoder_size', None, text['set_encoder_size'])
  flags.DEFINE_enum('image_dtype', image_dtype, IMAGE_DTYPES, text['image_dtype'])


def define_child_flags(bfc, help_texts=None):
  """--malloc (default 'default'), --memory_limit_gb (18) and, unless bfc is None, --bfc
  (default bfc): how lite_tf.benchmarks.process runs and watches a child. help_texts:
  {flag: help} replacing CHILD_HELP's."""
  text = {**CHILD_HELP, **(help_texts or {})}
  flags.DEFINE_enum('malloc', 'default', MALLOC_MODES, text['malloc'])
  flags.DEFINE_float('memory_limit_gb', 18.0, text['memory_limit_gb'])
  if bfc is not None:
    flags.DEFINE_bool('bfc', bfc, text['bfc'])
