"""TF's graph optimiser (Grappler) as LITE's traced steps use it.

Two settings, both process-wide for the functions called after them on the calling thread:

- ArithmeticOptimizer off, always: a workaround for a Grappler bug that LITE's loops trigger
  (estimator.disable_grappler_add_rewrite, which calls `configure` after it).
- On a machine without a GPU, by default (`grappler.lean_on_cpu = True`), LEAN_CPU_PASSES:
  the passes that took about 9 of the 15 s Grappler spent on a traced Simple CNAPs +
  EfficientNet-B0 step at S = 84 on a CPU and changed nothing there that the step needs (the
  layout optimiser changed no node, the TFG conditional-code-motion passes none, the memory
  optimiser 8 of 28,000; the second round of every pass 400): the first run went from 15.6 to
  9.3 s, the steady step was no slower (1.65 and 1.52 s) and TF's allocator peak within 2%
  (docs/BENCHMARKS.md, "The first step"). With a GPU these passes stay as TF sets them (the
  layout optimiser picks GPU data formats; the memory optimiser swaps to host memory).

The settings travel in the thread's function-call options (what TF passes Grappler when it
instantiates a function), since TF's public `tf.config.optimizer` API has no switch for them;
`tf.config.optimizer.set_experimental_options` resets them, and the next traced LITE step sets
them again.
"""

import gin
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2  # pylint: disable=g-direct-tensorflow-import
from tensorflow.core.protobuf import rewriter_config_pb2  # pylint: disable=g-direct-tensorflow-import
from tensorflow.python.eager import context  # pylint: disable=g-direct-tensorflow-import

_RC = rewriter_config_pb2.RewriterConfig
# RewriterConfig field -> the value the lean configuration gives it.
LEAN_CPU_PASSES = {
    'meta_optimizer_iterations': _RC.ONE,
    'memory_optimization': _RC.NO_MEM_OPT,
    'layout_optimizer': _RC.OFF,
    'experimental_conditional_code_motion': _RC.OFF,
}


def _is_lean(rewrite_options):
  return all(getattr(rewrite_options, field) == value
             for field, value in LEAN_CPU_PASSES.items())


@gin.configurable('grappler')
def configure(lean_on_cpu=True):
  """With lean_on_cpu, on a machine without a GPU: LEAN_CPU_PASSES for the functions this
  thread calls from now on (see the module's docstring), on top of the other options set.
  Returns whether the lean passes are set."""
  if not lean_on_cpu or tf.config.list_logical_devices('GPU'):
    return False
  ctx = context.context()
  options = ctx.function_call_options
  config = config_pb2.ConfigProto.FromString(options.config_proto_serialized)
  if not _is_lean(config.graph_options.rewrite_options):
    for field, value in LEAN_CPU_PASSES.items():
      setattr(config.graph_options.rewrite_options, field, value)
    ctx.function_call_options = context.FunctionCallOptions(
        executor_type=options.executor_type, config_proto=config)
  return True


def current_rewrite_options():
  """The RewriterConfig that functions called from this thread get."""
  return config_pb2.ConfigProto.FromString(
      context.context().function_call_options.config_proto_serialized
  ).graph_options.rewrite_options
