"""The LITE gradient estimator (Bronskill et al., 2021, Eq. 5-6): lite_task_gradients.

For a task with N support images and a learner whose task adaptation aggregates per-example
support contributions e_i = e(x_i), the meta-training loss of a query batch is
L(e_1, ..., e_N). LITE back-propagates through a random subset H of the support set only:

  grad ~= dL/dtheta|query path + (N/|H|) * sum_{i in H} dL/de_i de_i/dtheta

The forward value is unchanged (every e_i enters the loss), and averaged over all |H|-subsets
the estimate equals the full gradient: the gradient is a single sum over the support set of
per-example Jacobians weighted by dL/de_i at the full forward value (ProtoNets, and the
classifier parameters of CNAPs / Simple CNAPs). Learners with a task context (a first stage
aggregated before the contributions, see lite_tf.learners.base) nest a sum inside a sum: with
one subset for both (context_subset='shared', the paper's code) the first stage's gradient has
a bias (tests/test_cnaps.py measures it); by default the first stage's rows are an
independent subset H_c of the same size, so the expectation of the product factorises and
every gradient is unbiased, provided the first stage treats images independently (CNAPs'
set encoder with set_encoder_norm='task', the default: BatchNorm with the whole context set's
statistics, computed first and fixed, or 'none'; the reference's 'batch' uses each call's
statistics, which couple the images of a call, and then no subset estimate is unbiased).
The N-|H| other contributions are computed without gradient, in chunks, outside the tape, so
their activations are freed at once.

Query sets are processed in batches; every batch draws a fresh subset H, its loss is weighted
by its share of the query set, and gradients are summed over batches, so that with |H| >= N the
result is exactly the gradient of the mean query loss. Two options restate the reference
codes instead (LOSS_ACCOUNTINGS, SUPPORT_SCALINGS): loss_accounting='reference' sums each
batch's mean loss and penalty over the batches, as cambridge-mlg/LITE and ORBIT do, and
support_scaling 'none' (cambridge-mlg/LITE) or 'orbit' (the whole cross-entropy times N/|H|)
replace the (N/|H|) factor above.

The steps of one task (lite_task_objective):
  1. Cache the gradient-free rows once, before any query batch (_task_cache: chunked, outside
     the tape): the task context's first-stage rows and per-task BatchNorm statistics of all N
     images (_cache_task_constants, with the set encoder's whole-context-set statistics
     first), and the N-|H| contributions outside the first batch's H (_gradient_free_rows).
Then, in the order one query batch (_query_batch) takes them:
  2. Draw the subsets: H and its complement (_backprop_subset: sample_backprop_indices, or
     sample_backprop_clips for whole clips), and H_c (_context_subset).
  3. Back-propagate H, under the tape: the (N/|H_c|) term of the task context
     (_task_context) and the (N/|H|) * sum_{i in H} term of the equation above
     (_support_contributions, with scale_gradient; optionally recomputed in micro-batches,
     recomputed_rows), beside the cached rows without gradient. The first batch's H rows
     fill the cache's rows that the chunks left out.
  4. The query batch's loss, weighted by its share of the query set, plus the regularization
     loss (_query_objective, as loss_accounting forms it); the tape's gradient of it is the
     estimate above, its query path term included.
_all_query_batches runs the batches (one traced batch: a tf.while_loop over them unless the
task has one batch, known when tracing) and sums their losses and gradients.
"""

import contextlib
import dataclasses
from typing import Any

import tensorflow as tf
from tensorflow.python.eager import record  # pylint: disable=g-direct-tensorflow-import

from lite_tf.episode import to_model_input
from lite_tf.learners.base import dense_gradients
from lite_tf.learners.base import mean_cross_entropy
from lite_tf.lite import chunking
from lite_tf.lite import grappler


def disable_grappler_add_rewrite():
  """Works around a Grappler bug that LITE's loops trigger.

  With TF 2.21, Grappler's ArithmeticOptimizer (AddOpsRewrite) can turn adds inside the
  chunk loop's body into a TemporaryVariable that fails at run time with "AlreadyExistsError:
  Resource __per_step_0/while_1/body/.../AddOpsRewrite_add_12/tmp_var" (seen with ProtoNets on
  Conv-4, N=160, |H|=N). Arithmetic rewrites matter little for conv nets; correctness wins.
  The option is process-wide and applies to functions traced after this call. Then the
  lean Grappler passes on a CPU (lite_tf.lite.grappler.configure), which the call before
  would have reset.
  """
  if tf.config.optimizer.get_experimental_options().get('arithmetic_optimization', True):
    tf.config.optimizer.set_experimental_options({'arithmetic_optimization': False})
  grappler.configure()


def scale_gradient(x, scale):
  """Returns x with its forward value unchanged and its gradient multiplied by `scale`."""
  stopped = tf.stop_gradient(x)
  return stopped + scale * (x - stopped)


def sample_backprop_indices(seed, num_support, num_backprop):
  """A uniformly random subset of size min(num_backprop, num_support) of range(num_support).

  Args:
    seed: [2] int stateless seed.
  Returns:
    (subset [h] int32, complement [num_support - h] int32).
  """
  permutation = tf.random.experimental.stateless_shuffle(tf.range(num_support), seed=seed)
  h = tf.minimum(num_backprop, num_support)
  return permutation[:h], permutation[h:]


def sample_backprop_clips(seed, num_support, num_backprop, clip_length):
  """sample_backprop_indices over whole clips: the support rows are clips of `clip_length`
  contiguous rows (ORBIT episodes: clip after clip); min(num_backprop, clips) clips are drawn
  uniformly. Every row is still chosen with probability |H| / N, so LITE stays unbiased.

  Returns:
    (rows of the chosen clips [h * clip_length] int32, the other rows) int32.
  """
  check = tf.debugging.assert_equal(
      num_support % clip_length, 0,
      message=f'lite.backprop_clip_length={clip_length}: the support set is not whole clips')
  with tf.control_dependencies([check]):
    clips, rest = sample_backprop_indices(seed, num_support // clip_length, num_backprop)
  offsets = tf.range(clip_length)[None, :]
  return (tf.reshape(clips[:, None] * clip_length + offsets, [-1]),
          tf.reshape(rest[:, None] * clip_length + offsets, [-1]))


def _complement(indices, n):
  mask = tf.scatter_nd(indices[:, None], tf.ones_like(indices, tf.bool), [n])
  return tf.boolean_mask(tf.range(n), tf.logical_not(mask))


def _scatter_rows(base, indices, rows):
  return tf.nest.map_structure(
      lambda b, r: tf.tensor_scatter_nd_update(b, indices[:, None], r), base, rows)


def _watchable(variable):
  """The tf.Variable that GradientTape.watch takes for a variable: itself, or a Keras
  variable's (its `value` outside an autocast scope); refused otherwise, rather than left
  unwatched with a zero gradient."""
  if isinstance(variable, tf.Variable):
    return variable
  value = getattr(variable, 'value', None)
  if isinstance(value, tf.Variable):
    return value
  raise TypeError(f'lite_task_gradients: cannot watch {variable!r} (a tf.Variable or a Keras '
                  f'variable outside an autocast scope is expected)')


def _accumulator_dtype(t):
  """Sums of reduced-precision gradients are kept in float32."""
  return tf.float32 if t.dtype in (tf.float16, tf.bfloat16) else t.dtype


def _looped_forward(call, x, flat_extra, spec, rows, num_batches):
  """The forward loop of _looped_recomputed_rows: call's outputs on x's micro-batches
  (rows(i): micro-batch i's [start, end)), concatenated [n, ...]; no activations are kept."""

  def forward(i, array):
    start, end = rows(i)
    return i + 1, array.write(i, tf.stop_gradient(call(x[start:end], flat_extra)))

  array = tf.TensorArray(spec.dtype, size=num_batches, infer_shape=False,
                         element_shape=tf.TensorShape([None]).concatenate(spec.shape[1:]))
  # Not recorded by an outer tape (in eager mode it would keep every micro-batch's
  # activations): the gradient is _looped_backward's.
  with record.stop_recording():
    _, array = tf.while_loop(lambda i, _: i < num_batches, forward, (tf.constant(0), array),
                             parallel_iterations=1)
    return tf.ensure_shape(array.concat(), tf.TensorShape([None]).concatenate(spec.shape[1:]))


def _looped_backward(call, x, flat_extra, upstream, targets, rows, num_batches):
  """The backward loop of _looped_recomputed_rows: for each of `targets`, the sum over the
  micro-batches of the vector-Jacobian product of call's rows with upstream's, in the target's
  dtype (summed in float32 for reduced-precision ones)."""

  def backward(i, sums):
    start, end = rows(i)
    # The recomputation waits for the upstream gradient: otherwise nothing orders it after
    # the rest of the forward pass, and its activations could be alive beside those.
    with tf.control_dependencies([upstream]):
      images_i = tf.identity(x[start:end])
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(targets)
      y = call(images_i, flat_extra)
    grads = tape.gradient(y, targets, output_gradients=upstream[start:end])
    return i + 1, [total if g is None else total + tf.cast(tf.convert_to_tensor(g),
                                                           total.dtype)
                   for total, g in zip(sums, grads)]

  _, sums = tf.while_loop(
      lambda i, _: i < num_batches, backward,
      (tf.constant(0), [tf.zeros(tf.shape(t), _accumulator_dtype(t)) for t in targets]),
      parallel_iterations=1)
  return [tf.cast(g, t.dtype) for g, t in zip(sums, targets)]


def _looped_recomputed_rows(fn, images, extra, batch_size, wrt=None):
  """recomputed_rows' 'loop' mode. Both passes are sequential tf.while_loops over the
  micro-batches (parallel_iterations=1): the forward loop (_looped_forward) keeps only fn's
  outputs; the backward loop (_looped_backward) recomputes one micro-batch under a tape, takes
  its vector-Jacobian product with that micro-batch's rows of the upstream gradient and adds it
  to the gradients of `extra` and of the variables fn reads. A traced step so holds one copy of
  fn's forward pass and one of its forward and backward passes, whatever the number of
  micro-batches (unrolling them, as tf.recompute_grad over a Python loop would, traces and
  optimises a copy per micro-batch). No micro-batch is empty.

  Args:
    fn: (images [m, ...], extra) -> tensor [m, ...] whose row i depends on image i (and
      extra).
    images: [n, ...] with n >= 1; no gradient flows into them.
    extra: nest of tensors fn also depends on (gradients flow into its floating ones), or None.
    batch_size: rows per micro-batch.
    wrt: the variables whose gradients are wanted (the others fn reads, e.g. a frozen
      backbone's, get none and are not differentiated in the loop); None: all of them.
  """
  # One identity per tensor: a tensor appearing twice in `extra` gets each slot's gradient once.
  flat = [] if extra is None else [tf.identity(t) for t in tf.nest.flatten(extra)]
  wanted_ids = None if wrt is None else {id(_watchable(v)) for v in wrt} | {id(v) for v in wrt}

  def call(x, flat_extra):
    return fn(x, None if extra is None else tf.nest.pack_sequence_as(extra, list(flat_extra)))

  spec = chunking.output_like(lambda x: call(x, flat), images, static=False)
  if not isinstance(spec, tf.TensorSpec):
    raise ValueError(f'recomputed_rows: fn must return one tensor; got {spec}')
  n = tf.shape(images)[0]
  num_batches = (n + batch_size - 1) // batch_size

  def rows(i):
    start = i * batch_size
    return start, tf.minimum(start + batch_size, n)

  @tf.custom_gradient
  def run(x, *flat_extra):
    out = _looped_forward(call, x, flat_extra, spec, rows, num_batches)

    def grad(upstream, variables=None):
      variables = list(variables or [])
      variables_wanted = (variables if wanted_ids is None else
                          [v for v in variables if id(v) in wanted_ids])
      wanted = [t for t in flat_extra if t.dtype.is_floating]
      sums = _looped_backward(call, x, flat_extra, upstream, wanted + variables_wanted, rows,
                              num_batches)
      by_id = {id(t): g for t, g in zip(wanted, sums)}
      variable_grads = dict(zip([id(v) for v in variables_wanted], sums[len(wanted):]))
      return ([None] + [by_id.get(id(t)) for t in flat_extra],
              [variable_grads.get(id(v)) for v in variables])

    return out, grad

  return run(images, *flat)


def _unrolled_recomputed_rows(fn, images, extra, batch_size, max_rows):
  """recomputed_rows' 'unrolled' mode: a Python loop of tf.recompute_grad micro-batches.

  Args:
    fn: (images [m, ...], extra) -> tensor [m, ...] whose row i depends on image i (and extra).
    images: [n, ...] with 1 <= n <= max_rows.
    extra: nest of tensors fn also depends on (gradients flow into it), or None.
    batch_size: rows per micro-batch.
    max_rows: static upper bound of n. Micro-batches past n are skipped when n is static;
      otherwise each runs on one row whose output is dropped (a network must not see an
      empty batch).
  """
  flat = [] if extra is None else tf.nest.flatten(extra)

  @tf.recompute_grad
  def segment(x, *flat_extra):
    return fn(x, None if extra is None else tf.nest.pack_sequence_as(extra, list(flat_extra)))

  static_rows = images.shape[0]
  if static_rows is not None:
    max_rows = min(max_rows, static_rows)
  parts = [segment(images[:batch_size], *flat)]
  n = tf.shape(images)[0]
  for start in range(batch_size, max_rows, batch_size):
    if static_rows is not None:
      parts.append(segment(images[start:start + batch_size], *flat))
      continue
    # Unknown n: a micro-batch past n runs on the last row and keeps none of its output (a
    # tf.cond around tf.recompute_grad cannot be differentiated), so no network call is empty.
    rows = images[tf.minimum(start, n - 1):tf.minimum(start + batch_size, n)]
    parts.append(segment(rows, *flat)[:tf.clip_by_value(n - start, 0, batch_size)])
  return tf.concat(parts, 0)


RECOMPUTE_MODES = ('unrolled', 'loop')


def recomputed_rows(fn, images, extra, batch_size, max_rows, mode='loop', wrt=None):
  """fn(images, extra), row-wise, in micro-batches whose activations are not kept for the
  backward pass but recomputed there, one micro-batch at a time.

  mode 'loop' (default): one tf.while_loop over the micro-batches in each pass
  (_looped_recomputed_rows): one copy of fn's passes whatever the number of micro-batches,
  strictly one micro-batch at a time. 'unrolled': one tf.recompute_grad per micro-batch,
  unrolled in Python; the traced step holds a copy of fn's passes per micro-batch (long
  tracing, a large graph in host memory), and TF may run micro-batches side by side.
  docs/BENCHMARKS.md compares the two.

  Args:
    fn: (images [m, ...], extra) -> tensor [m, ...] whose row i depends on image i (and extra).
    images: [n, ...] with 1 <= n <= max_rows.
    extra: nest of tensors fn also depends on (gradients flow into it), or None.
    batch_size: rows per micro-batch.
    max_rows: static upper bound of n ('unrolled' unrolls that many rows' micro-batches).
    wrt: ('loop') the variables whose gradients are wanted; None: every variable fn reads.
  """
  if mode == 'loop':
    return _looped_recomputed_rows(fn, images, extra, batch_size, wrt)
  if mode != 'unrolled':
    raise ValueError(f'lite.recompute_mode must be one of {list(RECOMPUTE_MODES)}; got '
                     f'{mode!r}')
  return _unrolled_recomputed_rows(fn, images, extra, batch_size, max_rows)


CONTEXT_SUBSETS = ('independent', 'shared')

# How a task's loss is formed over its query batches (lite.regularizer_accounting), b = 1..B,
# CE_b the mean cross-entropy of batch b, R the learner's regularization loss (CNAPs' FiLM
# penalty, 0.001 * sum(r^2) included), s the regularizer_scale:
#   'per_task':  sum_b (|batch b| / |query set|) CE_b + s R: the mean query cross-entropy, the
#                penalty once.
#   'reference': sum_b (CE_b + s R), the reference codes' loss: each batch's mean
#                cross-entropy and the penalty, summed over the batches. cambridge-mlg/LITE
#                @6e6499b3 src/run.py:228-231 (train_lite: CE_b / tasks_per_step +
#                0.001 * R, backward per batch, src/run.py:137-146; Adam steps on the sum,
#                src/run.py:154-156); microsoft/ORBIT-Dataset @97ccae14
#                single-step-learner.py:231-234 the same with its CE scaled (SUPPORT_SCALINGS).
#                With s = T, the tasks of an optimizer step (LiteModel), the mean over the T
#                tasks that the optimizer takes is the references' sum: per task
#                sum_b CE_b / T + B * 0.001 * R.
LOSS_ACCOUNTINGS = ('reference', 'per_task')

# How LITE's subset path is weighted (lite.support_scaling), N the support set, |H| the
# back-propagated subset (clips with backprop_clip_length; counted as drawn, <= N):
#   'paper': the gradient of H's contributions (and of H_c's first-stage rows) times N/|H|
#            (the paper's Eq. 8): the estimate is unbiased, its expectation the full gradient.
#   'none':  no scaling (cambridge-mlg/LITE @6e6499b3 src/model.py:50-71, src/run.py:208-238):
#            the support path's gradient is |H|/N of the full one in expectation.
#   'orbit': every batch's cross-entropy times N/|H| (microsoft/ORBIT-Dataset @97ccae14
#            single-step-learner.py:231-232, loss_scaling = N / (num_lite_samples *
#            tasks_per_batch), the 1/T being the optimizer's mean here): the query path's
#            gradient too, the penalty not.
SUPPORT_SCALINGS = ('paper', 'none', 'orbit')


@dataclasses.dataclass(frozen=True)
class _LiteTask:
  """One lite_task_gradients call: its arguments (see there) and the task's tensors.

  images: [n, ...] support images; labels: [n] int32; way: int32 scalar; n: the support set
  size; num_query: the query set size; num_batches: the number of query batches; seed: [2]
  int64. no_support_path: |H| = 0, every support row comes from the gradient-free chunks.
  """
  learner: Any
  episode: Any
  variables: list
  num_backprop: Any
  chunk_size: int
  query_batch_size: int
  seed: tf.Tensor
  backprop_indices: Any
  recompute_batch: Any
  recompute_mode: str
  context_subset: str
  context_indices: Any
  regularizer_scale: Any
  loss_accounting: str
  support_scaling: str
  backprop_clip_length: Any
  loss_scale: Any
  no_support_path: bool
  images: tf.Tensor
  labels: tf.Tensor
  way: tf.Tensor
  n: tf.Tensor
  num_query: tf.Tensor
  num_batches: tf.Tensor
  static_num_batches: Any  # num_batches as a Python int when the query set's size is static


def _check_arguments(learner, num_backprop, query_batch_size, backprop_indices, context_subset,
                     backprop_clip_length, loss_accounting, support_scaling, recompute_batch):
  """Refuses lite_task_gradients' arguments outside their values; returns no_support_path."""
  for name, value, values in (('context_subset', context_subset, CONTEXT_SUBSETS),
                              ('regularizer_accounting', loss_accounting, LOSS_ACCOUNTINGS),
                              ('support_scaling', support_scaling, SUPPORT_SCALINGS)):
    if value not in values:
      raise ValueError(f'lite.{name} must be one of {list(values)}; got {value!r}')
  if isinstance(num_backprop, int) and num_backprop < 0:
    raise ValueError(f'num_backprop (|H|) must be >= 0; got {num_backprop}')
  # |H| = 0: no support image is back-propagated; the gradient is the query path's alone.
  # Learners whose every parameter is on the query path (ProtoNets) still learn; with a task
  # context the first stage would get no gradient at all.
  no_support_path = (isinstance(num_backprop, int) and num_backprop == 0
                     and backprop_indices is None)
  if no_support_path and learner.has_context:
    raise ValueError(f'lite.num_backprop = 0 leaves {type(learner).__name__}\'s task context '
                     '(set encoder) without gradient; use lite.num_backprop >= 1')
  if query_batch_size <= 0:
    raise ValueError(f'query_batch_size must be positive; got {query_batch_size}')
  if backprop_clip_length is not None and (isinstance(backprop_clip_length, bool) or
                                           not isinstance(backprop_clip_length, int) or
                                           backprop_clip_length < 1):
    raise ValueError(f'lite.backprop_clip_length must be None or an integer >= 1; got '
                     f'{backprop_clip_length!r}')
  if recompute_batch and learner.uses_task_norm_i():
    # The recomputed micro-batches would each estimate the context moments from part of H.
    raise ValueError("lite.recompute_batch is not supported with batch_norm.statistics = "
                     "'task_norm_i' (its LITE moment estimate needs H in one call); unset "
                     'lite.recompute_batch, or use batch_norm.statistics = \'frozen_support\'')
  return no_support_path


def _draw_subset(task, draw_seed):
  """A random H (whole clips with backprop_clip_length) and its complement."""
  if task.backprop_clip_length:
    return sample_backprop_clips(draw_seed, task.n, task.num_backprop, task.backprop_clip_length)
  return sample_backprop_indices(draw_seed, task.n, task.num_backprop)


def _backprop_subset(task, b):
  """H of query batch b and its complement (the rows computed without gradient): the given
  backprop_indices[b], or a draw seeded fold_in(seed, b); [0] rows with |H| = 0."""
  if task.no_support_path:
    return tf.zeros([0], tf.int32), tf.range(task.n)
  if task.backprop_indices is not None:
    chosen = tf.cast(task.backprop_indices[b], tf.int32)
    return chosen, _complement(chosen, task.n)
  return _draw_subset(task, tf.random.experimental.stateless_fold_in(task.seed,
                                                                     tf.cast(b, tf.int64)))


def _context_subset(task, b, chosen):
  """H_c of query batch b: H itself ('shared'), the given context_indices[b], or an
  independent draw of the same size seeded fold_in(fold_in(seed, b), 1)."""
  if task.context_subset == 'shared':
    return chosen
  if task.context_indices is not None:
    return tf.cast(task.context_indices[b], tf.int32)
  if task.backprop_indices is not None:
    raise ValueError("context_subset='independent' with backprop_indices needs "
                     'context_indices too')
  batch_seed = tf.random.experimental.stateless_fold_in(task.seed, tf.cast(b, tf.int64))
  return _draw_subset(task, tf.random.experimental.stateless_fold_in(
      batch_seed, tf.constant(1, tf.int64)))[0]


def _context_fn(task, x):
  return task.learner.context_contributions(to_model_input(x))


def _contributions_fn(task, x, context):
  return task.learner.support_contributions(to_model_input(x), context, training=False)


def _cache_task_constants(task):
  """The gradient-free passes over all N support images, chunked, before the norm scope is
  entered: the first stage's whole-context-set statistics
  (cache['context_norm'], with set_encoder_norm='task'), the context's first-stage rows
  (cache['context'], learners with a task context) and the per-task BatchNorm statistics
  (cache['norm'], with per-task batch_norm.statistics), all fixed for every forward pass of the
  task.

  Returns:
    (cache dict, the task context without gradient or None).
  """
  cache = {}
  context_value = None
  if task.learner.has_context:
    # A first stage normalised with the whole context set's statistics (set_encoder_norm
    # 'task') gets them first, so that these chunks and H_c's rows see the same constants.
    # Every contribution depends on the task context, whose value needs the first stage
    # of all N support images: computed without gradient, chunked.
    cache['context'], context_norm = task.learner.context_rows(
        to_model_input, task.images, task.chunk_size, chunking.chunked_apply)
    if context_norm is not None:
      cache['context_norm'] = context_norm
    context_value = tf.nest.map_structure(tf.stop_gradient,
                                          task.learner.task_context(cache['context']))
  statistics = task.learner.norm_statistics(
      lambda x: _contributions_fn(task, x, context_value), task.images, task.chunk_size,
      chunking.chunked_apply)
  if statistics is not None:
    cache['norm'] = statistics
  return cache, context_value


def _gradient_free_rows(task, context_value, rest):
  """cache['support']: [n, ...] contributions whose rows `rest` (the N - |H| outside the first
  query batch's H) are computed without gradient, chunked, outside the tape (their activations
  freed at once); H's rows are zeros until the first batch fills them (_filled_support)."""
  rest_contributions = chunking.chunked_map(
      lambda x: _contributions_fn(task, x, context_value), task.images, rest, task.chunk_size)
  return _scatter_rows(
      tf.nest.map_structure(
          lambda c: tf.zeros(tf.concat([[task.n], tf.shape(c)[1:]], 0), c.dtype),
          rest_contributions),
      rest, rest_contributions)


def _max_subset_rows(task, given):
  """A static bound on the rows of H (or of H_c, given: context_indices): the given indices'
  width, else |H| (in images: |H| clips of backprop_clip_length)."""
  if given is not None:
    return int(given.shape[1])
  return task.num_backprop * (task.backprop_clip_length or 1)


def _task_context(task, b, chosen, chosen_images, cache, after, norm_scope):
  """Nested LITE, under the tape (learners with a task context): the task context from all N
  first-stage rows, those of H_c (_context_subset) computed with gradient weighted by N/|H_c|
  (scale_gradient), the others cache['context'] without gradient. With recompute_batch and a
  first stage that computes each image on its own (Learner.context_is_per_image), H_c's rows
  are recomputed in micro-batches too; `norm_scope` keeps the first stage's statistics fixed
  until the gradients are taken."""
  context_chosen = _context_subset(task, b, chosen)
  if task.context_subset == 'shared':
    context_images = chosen_images
  else:  # ordered like chosen_images: after the chunks and the previous batch
    with tf.control_dependencies(list(after) + tf.nest.flatten(cache)):
      context_images = tf.gather(task.images, context_chosen)
  context_scale = (tf.cast(task.n, tf.float32)
                   / tf.cast(tf.shape(context_chosen)[0], tf.float32)
                   if task.support_scaling == 'paper' else 1.0)
  norm_scope.enter_context(task.learner.fixed_context_norm_statistics(cache.get('context_norm')))
  if task.recompute_batch and task.learner.context_is_per_image():
    chosen_rows = recomputed_rows(
        lambda x, _: _context_fn(task, x), context_images, None, task.recompute_batch,
        _max_subset_rows(task, task.context_indices if task.context_subset == 'independent'
                         else task.backprop_indices),
        task.recompute_mode, task.variables)
  else:
    chosen_rows = _context_fn(task, context_images)
  context_rows = _scatter_rows(
      tf.nest.map_structure(tf.stop_gradient, cache['context']), context_chosen,
      tf.nest.map_structure(lambda c: scale_gradient(c, context_scale), chosen_rows))
  return task.learner.task_context(context_rows)


def _support_contributions(task, chosen, chosen_images, context, cache, scale):
  """Eq. 5-6's support path, under the tape: the N contributions [n, ...], H's computed with
  gradient weighted by `scale` (N/|H| with support_scaling 'paper'; scale_gradient; recomputed
  in micro-batches with recompute_batch), the others cache['support']'s.

  Returns:
    (the N contributions, H's rows as computed here)."""
  if task.no_support_path:  # every row came from the gradient-free chunks
    return tf.nest.map_structure(tf.stop_gradient, cache['support']), None
  if task.recompute_batch:
    chosen_contributions = recomputed_rows(
        lambda x, c: _contributions_fn(task, x, c), chosen_images, context,
        task.recompute_batch, _max_subset_rows(task, task.backprop_indices),
        task.recompute_mode, task.variables)
  else:
    # TaskNorm-I: this call's moments become LITE's estimate, used by the query batch too.
    with task.learner.estimating_norm_statistics(scale):
      chosen_contributions = _contributions_fn(task, chosen_images, context)
  scaled = tf.nest.map_structure(lambda c: scale_gradient(c, scale), chosen_contributions)
  return (_scatter_rows(tf.nest.map_structure(tf.stop_gradient, cache['support']), chosen,
                        scaled),
          chosen_contributions)


def _filled_support(task, first, chosen, chosen_contributions, support):
  """cache['support'] for the batches after this one: the first batch (`first`: True, or a
  bool tensor in the batch loop) fills H's rows with its values; the later batches leave it
  as it is."""
  if task.no_support_path:
    return support

  def filled():
    return _scatter_rows(support, chosen,
                         tf.nest.map_structure(tf.stop_gradient, chosen_contributions))

  if first is True:
    return filled()
  return tf.cond(first, filled, lambda: support)


def _query_rows(task, b):
  """[start, end) of query batch b."""
  start = b * task.query_batch_size
  return start, tf.minimum(start + task.query_batch_size, task.num_query)


def _query_objective(task, start, end, adapted, cache, after, first, support_ratio):
  """The query batch [start, end), under the tape: its term of the task's loss as
  loss_accounting forms it (LOSS_ACCOUNTINGS: its mean cross-entropy weighted by its share of
  the query set and the penalty in the first batch, 'per_task'; its mean cross-entropy and the
  penalty, 'reference'), the penalty times regularizer_scale and, with support_scaling
  'orbit', the cross-entropy times support_ratio = N/|H|.

  Returns:
    (loss: the batch's share of the reported loss, the mean query cross-entropy with the
     penalty once, unscaled, whatever the accounting; objective: the batch's term of the
     task's loss, what is differentiated (times loss_scale when set); objective_value: that
     term without loss_scale; logits [end - start, way]).
  """
  learner = task.learner
  # After the chunks and after the previous query batch's gradients.
  with tf.control_dependencies(tf.nest.flatten(cache) + list(after)):
    query_images = to_model_input(tf.identity(task.episode.query_images[start:end]))
  if task.recompute_batch:
    logits = recomputed_rows(
        lambda x, t: learner.query_logits(t, x, training=False), query_images, adapted,
        task.recompute_batch, task.query_batch_size, task.recompute_mode, task.variables)
  else:
    logits = learner.query_logits(adapted, query_images, training=False)
  share = tf.cast(end - start, tf.float32) / tf.cast(task.num_query, tf.float32)
  cross_entropy = mean_cross_entropy(logits, task.episode.query_labels[start:end])
  loss = cross_entropy * share
  objective = cross_entropy if task.loss_accounting == 'reference' else loss
  if task.support_scaling == 'orbit':
    objective = objective * support_ratio
  penalty = learner.regularization_loss()
  # `first`: True, or a bool tensor in the batch loop: the penalty times 1 in the first batch
  # and 0 in the others ('per_task', and the reported loss), or in every batch ('reference').
  once = penalty if first is True else tf.cast(first, penalty.dtype) * penalty
  objective = objective + task.regularizer_scale * (
      penalty if task.loss_accounting == 'reference' else once)
  loss += once  # the reported loss counts the penalty once per task, whatever the scale
  objective_value = objective
  if task.loss_scale is not None:  # float16: LossScaleOptimizer unscales the gradients
    objective = objective * task.loss_scale
  return loss, objective, objective_value, logits


def _query_batch(task, b, cache, first, after=()):
  """(reported loss share, objective term), gradients, predictions and cache['support'] for
  the batches after it, of query batch b. `first`: whether b is the first batch (True, or a
  bool tensor in the batch loop), which fills H's rows of cache['support'] and counts the
  penalty once per task.

  `after`: tensors (the previous batches' gradients) that must exist before this batch's
  forward pass starts. In graph mode nothing else orders two query batches, and both
  batches' activations would be alive at once.
  """
  with contextlib.ExitStack() as norm_scope:  # per-task BatchNorm statistics, if any
    return _query_batch_in(task, b, cache, after, first, norm_scope)


def _query_batch_in(task, b, cache, after, first, norm_scope):
  """_query_batch with `norm_scope` open until the gradients are taken (recomputed
  micro-batches normalise with the task's statistics too)."""
  chosen, _ = _backprop_subset(task, b)
  support_ratio = (tf.cast(task.n, tf.float32)
                   / tf.cast(tf.maximum(tf.shape(chosen)[0], 1), tf.float32))
  scale = support_ratio if task.support_scaling == 'paper' else 1.0
  start, end = _query_rows(task, b)
  # After the gradient-free chunks, with nothing else alive but the task's images, so that
  # their transient activations never add to those kept for the backward pass.
  with tf.control_dependencies(list(after) + tf.nest.flatten(cache)):
    chosen_images = tf.gather(task.images, chosen)
  norm_scope.enter_context(task.learner.fixed_norm_statistics(cache.get('norm')))
  # Only the variables differentiated: a frozen backbone's would be watched too (they are
  # read under the tape), and the backward pass would be traced towards them and pruned.
  with tf.GradientTape(watch_accessed_variables=False) as tape:
    tape.watch([_watchable(v) for v in task.variables])
    context = None
    if task.learner.has_context:
      context = _task_context(task, b, chosen, chosen_images, cache, after, norm_scope)
    contributions, chosen_contributions = _support_contributions(
        task, chosen, chosen_images, context, cache, scale)
    adapted = task.learner.adapt_support(contributions, task.labels, task.way, context)
    loss, objective, objective_value, logits = _query_objective(
        task, start, end, adapted, cache, after, first, support_ratio)
  grads = dense_gradients(tape.gradient(objective, task.variables), task.variables)
  predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
  support = _filled_support(task, first, chosen, chosen_contributions, cache['support'])
  return (loss, objective_value), grads, predictions, support


def _task_cache(task):
  """The task's gradient-free passes, before any query batch: _cache_task_constants' cache
  with cache['support'], the contributions outside the first batch's H (_gradient_free_rows,
  under the task's BatchNorm statistics)."""
  cache, context_value = _cache_task_constants(task)
  _, rest = _backprop_subset(task, 0)
  with task.learner.fixed_norm_statistics(cache.get('norm')):
    cache['support'] = _gradient_free_rows(task, context_value, rest)
  return cache


def _all_query_batches(task, cache):
  """The query batches 0, ..., num_batches - 1, each after the previous batches' gradients,
  their losses ((reported loss, objective value)) and gradients summed: one batch when that is
  the number known when tracing, else a tf.while_loop whose body is the one traced batch.

  Returns:
    ((loss, objective), grads, predictions [num_query] int32).
  """
  if task.static_num_batches == 1:
    losses, grads, predictions, _ = _query_batch(task, tf.constant(0), cache, True)
    return losses, grads, predictions

  def body(b, loss, grads, predictions_array, support):
    batch_loss, batch_grads, batch_predictions, support = _query_batch(
        task, b, {**cache, 'support': support}, tf.equal(b, 0), after=grads)
    return (b + 1, tuple(a + b for a, b in zip(loss, batch_loss)),
            [g + bg for g, bg in zip(grads, batch_grads)],
            predictions_array.write(b, batch_predictions), support)

  num_batches = tf.maximum(task.num_batches, 1)  # batch 0 runs, as with one traced batch
  predictions_array = tf.TensorArray(tf.int32, size=num_batches, infer_shape=False,
                                     element_shape=[None])
  zero = tf.constant(0.0, tf.float32)
  _, loss, grads, predictions_array, _ = tf.while_loop(
      lambda b, *_: b < num_batches, body,
      (tf.constant(0), (zero, zero), [tf.zeros_like(v) for v in task.variables],
       predictions_array, cache['support']),
      parallel_iterations=1)
  return loss, grads, predictions_array.concat()


def lite_task_gradients(*args, **kwargs):
  """LITE gradient of the mean query cross-entropy of one task: lite_task_objective's
  (loss, grads, predictions), without the objective."""
  loss, _, grads, predictions = lite_task_objective(*args, **kwargs)
  return loss, grads, predictions


def lite_task_objective(learner, episode, variables, num_backprop, chunk_size,
                        query_batch_size, seed=(0, 0), backprop_indices=None,
                        recompute_batch=None, context_subset='independent',
                        context_indices=None, regularizer_scale=1.0,
                        loss_accounting='per_task', support_scaling='paper',
                        backprop_clip_length=None, loss_scale=None,
                        recompute_mode='loop'):
  """LITE gradient of one task's loss, the loss as loss_accounting forms it over the query
  batches (by default the mean query cross-entropy plus the regularization loss).

  Args:
    learner: a lite_tf.learners.base.Learner.
    episode: a lite_tf.episode.Episode.
    variables: list of variables to differentiate (usually learner.trainable_variables).
    num_backprop: |H|, int > 0; values >= N back-propagate the whole support set (exact).
    chunk_size: rows per chunk of the gradient-free support forward pass.
    query_batch_size: query examples per batch.
    seed: [2] int stateless seed; batch b draws its subset with fold_in(seed, b).
    backprop_indices: optional [num_query_batches, h] int32 subsets to use instead of random
      draws (for tests: enumerate subsets).
    recompute_batch: if set, the back-propagated support images and the query batch go through
      the network in micro-batches of this size whose activations are recomputed in the
      backward pass (recomputed_rows): about one more forward pass, for a backward peak of
      one micro-batch's activations instead of |H| + query_batch_size images'.
    recompute_mode: 'unrolled' or 'loop', how the micro-batches are traced (recomputed_rows).
    context_subset: for learners with a task context (CNAPs, Simple CNAPs): 'independent'
      draws the subset H_c whose first-stage (set encoder) rows carry gradient independently
      of the contribution subset H, so the expectation of the product of the two N/H-weighted
      sums factorises and the set encoder's gradient is unbiased too (when the set encoder
      treats images independently: set_encoder_norm='task' or 'none'); 'shared' uses H for both
      (the LITE paper's code), which biases it. Either way H images go through each network.
    context_indices: optional [num_query_batches, h] int32 subsets H_c (for tests), with
      backprop_indices.
    regularizer_scale: the learner's regularization loss (CNAPs' FiLM penalty) enters the
      task loss times regularizer_scale (LiteModel: the tasks of an optimizer step under
      'reference' accounting).
    loss_accounting: LOSS_ACCOUNTINGS: 'per_task' (the mean query cross-entropy, the penalty
      once) or 'reference' (each query batch's mean cross-entropy plus the penalty, summed
      over the batches, as the reference codes; LiteModel's regularizer_accounting).
    support_scaling: SUPPORT_SCALINGS: 'paper' (N/|H| on the subset path, Eq. 8), 'none'
      (cambridge-mlg/LITE) or 'orbit' (the cross-entropy times N/|H|, ORBIT's LITE).
    backprop_clip_length: None: H is |H| images; L: the support rows are clips of L
      contiguous images (ORBIT episodes) and H is |H| whole clips (|H| * L images), for the
      contribution subset and the independent context subset alike.
    loss_scale: None, or a scalar the objective is multiplied by before differentiation
      (float16 loss scaling, lite_tf.precision): the gradients come back scaled by it.
  Returns:
    loss: scalar, the mean query cross-entropy (LITE's forward value equals the full one)
      plus the regularization loss once, unscaled, whatever the accounting and scaling (it
      compares across settings).
    objective: scalar, the task's loss that `grads` is the LITE gradient of, as accounted
      and scaled (without loss_scale).
    grads: list of tensors aligned with `variables`.
    predictions: [num_query] int32 argmax of the query logits.
  """
  disable_grappler_add_rewrite()
  no_support_path = _check_arguments(learner, num_backprop, query_batch_size, backprop_indices,
                                     context_subset, backprop_clip_length, loss_accounting,
                                     support_scaling, recompute_batch)
  images = episode.support_images
  way = tf.cast(episode.way, tf.int32)
  n = tf.shape(images)[0]
  num_query = tf.shape(episode.query_images)[0]
  task = _LiteTask(
      learner=learner, episode=episode, variables=variables, num_backprop=num_backprop,
      chunk_size=chunk_size, query_batch_size=query_batch_size,
      backprop_indices=backprop_indices, recompute_batch=recompute_batch,
      recompute_mode=recompute_mode, context_subset=context_subset,
      context_indices=context_indices, regularizer_scale=regularizer_scale,
      loss_accounting=loss_accounting, support_scaling=support_scaling,
      backprop_clip_length=backprop_clip_length, loss_scale=loss_scale,
      no_support_path=no_support_path, images=images, labels=episode.support_labels, way=way,
      n=n, num_query=num_query, num_batches=(num_query + query_batch_size - 1) // query_batch_size,
      static_num_batches=(None if episode.query_images.shape[0] is None
                          else -(-episode.query_images.shape[0] // query_batch_size)),
      seed=tf.cast(tf.convert_to_tensor(seed), tf.int64))
  (loss, objective), grads, predictions = _all_query_batches(task, _task_cache(task))
  return loss, objective, grads, predictions


def full_task_gradients(learner, episode, variables, loss_scale=None):
  """Exact gradient of the mean query cross-entropy, back-propagating the whole support set."""
  with tf.GradientTape() as tape:
    logits = learner(episode.to_dict(), training=False)
    loss = mean_cross_entropy(logits, episode.query_labels) + learner.regularization_loss()
    objective = loss if loss_scale is None else loss * loss_scale
  grads = dense_gradients(tape.gradient(objective, variables), variables)
  return loss, grads, tf.argmax(logits, axis=-1, output_type=tf.int32)


def adapt_task(learner, episode, chunk_size=64):
  """The adapted task state in one gradient-free forward pass of the support set, chunked
  (the query set is not used). With per-task BatchNorm statistics the state is
  {'task': ..., 'batch_norm': [(mean, variance)] per layer}; adapted_query_logits reads both."""
  disable_grappler_add_rewrite()
  context = None
  if learner.has_context:

    rows, _ = learner.context_rows(to_model_input, episode.support_images, chunk_size,
                                   chunking.chunked_apply)
    context = learner.task_context(rows)

  def contributions_fn(x):
    return learner.support_contributions(to_model_input(x), context, training=False)

  statistics = learner.norm_statistics(contributions_fn, episode.support_images, chunk_size,
                                       chunking.chunked_apply)
  with learner.fixed_norm_statistics(statistics):
    contributions = chunking.chunked_apply(contributions_fn, episode.support_images, chunk_size)
  task = learner.adapt_support(contributions, episode.support_labels,
                               tf.cast(episode.way, tf.int32), context)
  if statistics is not None:
    task = {'task': task, 'batch_norm': statistics}
  return tf.nest.map_structure(tf.stop_gradient, task)


def adapted_query_logits(learner, adapted, images):
  """Logits [q, way] of model-input images [q, ...] for a state from adapt_task."""
  if learner.uses_task_statistics():
    with learner.fixed_norm_statistics(adapted['batch_norm']):
      return learner.query_logits(adapted['task'], images, training=False)
  return learner.query_logits(adapted, images, training=False)


def servable_state(learner, adapted):
  """A state from adapt_task in the form an exported classifier computes with TFLite's
  builtin ops (Learner.servable_task; the BatchNorm statistics as they are)."""
  if learner.uses_task_statistics():
    return {**adapted, 'task': learner.servable_task(adapted['task'])}
  return learner.servable_task(adapted)


def adapted_query_features(learner, adapted, images):
  """Query features [q, d] (learner.query_features) of model-input images for a state from
  adapt_task."""
  if learner.uses_task_statistics():
    with learner.fixed_norm_statistics(adapted['batch_norm']):
      return learner.query_features(adapted['task'], images, training=False)
  return learner.query_features(adapted, images, training=False)


def adapted_logits_from_features(learner, adapted, features):
  """Logits of (possibly pooled) query features for a state from adapt_task."""
  task = adapted['task'] if learner.uses_task_statistics() else adapted
  return learner.logits_from_features(task, features)


def adapt_and_predict(learner, episode, chunk_size=64, query_batch_size=64):
  """Test-time adaptation in one gradient-free forward pass of the support set, chunked.

  Returns:
    logits [num_query, way].
  """
  adapted = adapt_task(learner, episode, chunk_size)
  return chunking.chunked_apply(
      lambda x: adapted_query_logits(learner, adapted, to_model_input(x)),
      episode.query_images,
      query_batch_size)
