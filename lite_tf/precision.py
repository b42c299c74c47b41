"""Mixed precision: `precision.policy = 'float32' | 'mixed_bfloat16' | 'mixed_float16'`.

The policy is Keras 3's global dtype policy, set when the gin config is parsed (before any
learner is built), so backbones, set encoders and FiLM generators compute in bfloat16 or
float16 while their variables, and the optimizer's state, stay float32. What is numerically
sensitive stays float32 whatever the policy: learners cast the backbone's and the set
encoder's outputs to float32 (`to_float32`), so class means, covariances, Cholesky and
Woodbury solves, LITE's N/H-weighted sums of support contributions, logits and losses are
float32. With 'mixed_float16' the meta-optimizer is wrapped in Keras' LossScaleOptimizer
(dynamic loss scaling: a step whose gradients overflow is skipped and the scale halved) and
LITE's query-batch losses are multiplied by its scale before differentiation.
"""

from absl import logging
import gin
import keras
import tensorflow as tf

POLICIES = ('float32', 'mixed_bfloat16', 'mixed_float16')


class PrecisionError(ValueError):
  """A precision the configuration or the machine cannot use."""


@gin.configurable('precision')
def configured_policy(policy='float32'):
  """The gin binding `precision.policy`, checked."""
  if policy not in POLICIES:
    raise PrecisionError(f'precision.policy must be one of {list(POLICIES)}; got {policy!r}')
  return policy


def _probe_float16(device):
  """Runs a convolution, a depthwise convolution and a matmul in float16 on `device`; returns
  the error message if a kernel is missing, else None."""
  try:
    with tf.device(device):
      x = tf.ones([1, 8, 8, 4], tf.float16)
      y = tf.nn.conv2d(x, tf.ones([3, 3, 4, 4], tf.float16), 1, 'SAME')
      y = tf.nn.depthwise_conv2d(y, tf.ones([3, 3, 4, 1], tf.float16), [1, 1, 1, 1], 'SAME')
      y = tf.matmul(tf.reshape(y, [8, 32]), tf.ones([32, 2], tf.float16))
      if not bool(tf.reduce_all(tf.math.is_finite(y))):
        return 'float16 kernels returned non-finite values'
  except (tf.errors.OpError, RuntimeError) as e:
    return str(e).splitlines()[0]
  return None


# CPU flags (Linux /proc/cpuinfo) of native bfloat16 arithmetic: AVX512-BF16 (Intel Cooper
# Lake and later, AMD Zen 4 and later) and AMX-BF16 (Intel Sapphire Rapids and later).
NATIVE_BFLOAT16_FLAGS = ('avx512_bf16', 'amx_bf16')


def cpu_flags(cpuinfo='/proc/cpuinfo'):
  """The CPU's feature flags (the first processor's in /proc/cpuinfo), or None where that is
  not readable (not Linux)."""
  try:
    with open(cpuinfo) as f:
      for line in f:
        if line.startswith('flags'):
          return set(line.split(':', 1)[1].split())
  except OSError:
    pass
  return None


def cpu_has_native_bfloat16(cpuinfo='/proc/cpuinfo'):
  """True / False from the CPU flags; None where they cannot be read."""
  flags = cpu_flags(cpuinfo)
  return None if flags is None else any(f in flags for f in NATIVE_BFLOAT16_FLAGS)


def check_device_runs(policy):
  """Refuses a policy that this machine's first accelerator (else its CPU) cannot run."""
  if policy != 'mixed_float16':
    return
  gpus = tf.config.list_logical_devices('GPU')
  device = gpus[0].name if gpus else '/CPU:0'
  problem = _probe_float16(device)
  if problem:
    raise PrecisionError(
        f"precision.policy='mixed_float16': {device} cannot run float16 "
        f"({problem}); use 'mixed_bfloat16' or 'float32' here, or a GPU")


def apply(policy=None, check_device=True):
  """Sets Keras' global dtype policy (`policy`, default the gin binding) and returns it.
  Learners built afterwards compute in it. check_device=False leaves out check_device_runs
  (its float16 probe starts TF's runtime); the caller then runs it itself."""
  policy = configured_policy() if policy is None else configured_policy(policy)
  if check_device:
    check_device_runs(policy)
  # The CPU flags first, and physical devices: listing logical ones would start TF's runtime,
  # which must not happen before bin/train.py's MultiWorkerMirroredStrategy configures it.
  if (policy == 'mixed_bfloat16' and cpu_has_native_bfloat16() is False
      and not tf.config.list_physical_devices('GPU')):
    logging.warning(
        "precision.policy='mixed_bfloat16' on a CPU without native bfloat16 (none of %s in "
        "/proc/cpuinfo): TensorFlow emulates it, and a Simple CNAPs + EfficientNet-B0 step ran "
        "about 4x slower than in float32 on such a CPU (docs/BENCHMARKS.md); it still saves "
        "activation memory", '/'.join(NATIVE_BFLOAT16_FLAGS))
  keras.config.set_dtype_policy(policy)
  return policy


def current():
  """The global policy's name."""
  return keras.config.dtype_policy().name


def to_float32(nest):
  """A nest of tensors in float32 (the boundary after reduced-precision feature extractors)."""
  return tf.nest.map_structure(
      lambda t: tf.cast(t, tf.float32) if t.dtype.is_floating and t.dtype != tf.float32 else t,
      nest)


def wrap_optimizer(optimizer, policy=None):
  """The meta-optimizer under `policy` (default: the global one): LossScaleOptimizer for
  float16, unchanged otherwise."""
  policy = policy or current()
  if policy == 'mixed_float16' and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
    return keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


def loss_scale(optimizer):
  """The factor to multiply losses by before differentiation: the LossScaleOptimizer's
  current scale, else None (no scaling)."""
  if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
    return optimizer.scale_loss(tf.constant(1.0))
  return None


def inner_optimizer(optimizer):
  """The optimizer that holds the settings (gradient accumulation, learning rate)."""
  return getattr(optimizer, 'inner_optimizer', optimizer)
