"""Fitting a LITE step to a memory budget (`lite.memory_budget_mb`, bin/plan_memory.py).

A short calibration runs real LITE steps (LiteModel.train_step, the weights and optimizer state
restored afterwards) and gradient-free chunks of the configured learner on a few small tasks
and reads the TF allocator's peak (tf.config.experimental.get_memory_info; on CPU TF's BFC
allocator, TF_CPU_ALLOCATOR_USE_BFC=true). It fits the costs of the step's two phases:

  chunk phase     chunk_fixed + chunk_size * per_chunk_image
                  (the gradient-free pass over the N - |H| other support images, run first)
  backprop phase  step_fixed + |H| * per_backprop_image + query_batch * per_query_image
                  (activations kept for the backward pass, gradients, the optimizer update)
     recomputed:  recompute_fixed + (|H| + query_batch) * per_recomputed_row
                  (lite.recompute_batch: one micro-batch's activations at a time)

and predicts the allocator peak of a step on a task of N support and Q query images as

  peak = base + tasks_held * (N + Q) * image_bytes + N * per_support_row
         + max(chunk phase, backprop phase)

where base is what the allocator holds without a task (weights, optimizer state) and
per_support_row the per-image cache of the support set (contributions, context rows). The plan
takes the largest |H| up to the requested one that fits (at the smallest chunk and query
batch; with recomputation when it fits only so), then the largest chunk, then the largest
query batch, each from LADDER up to the requested value, within (1 - margin) of the budget.

fit_plan then measures the planned step on a small task and extrapolates it to the largest
task with the per-image terms; the ratio of measured to predicted phase corrects the model
and the plan is chosen again, until a measured plan fits and no larger |H| is predicted to.
On CPU the allocator peak of one and the same step varies by up to ~10% from call to call
(every probe takes the largest of a few steps), which the margin absorbs.
"""

import dataclasses
import gc
import math

from absl import logging
import numpy as np
import tensorflow as tf

from lite_tf import progress
from lite_tf.episode import Episode

MB = 1024 ** 2
# Sizes the planner tries for |H|, chunk and query batch (each capped at the requested value).
LADDER = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256,
          320, 384, 512, 640, 768, 1024)


class MemoryBudgetError(ValueError):
  """A memory budget that no LITE step of this configuration fits."""


def ladder(limit):
  """LADDER's sizes below `limit`, then `limit`."""
  return [x for x in LADDER if x < limit] + [int(limit)]


def device_name():
  gpus = tf.config.list_logical_devices('GPU')
  return gpus[0].name if gpus else '/device:CPU:0'


def allocator_stats_available(device=None):
  try:
    tf.config.experimental.get_memory_info(device or device_name())
    return True
  except (ValueError, RuntimeError):
    return False


@dataclasses.dataclass
class MemoryCosts:
  """Calibrated costs in bytes (see the module docstring)."""
  device: str
  base: float
  image_bytes: float
  per_support_row: float
  step_fixed: float
  per_backprop_image: float
  per_query_image: float
  chunk_fixed: float
  per_chunk_image: float
  recompute_batch: int = None
  recompute_fixed: float = None
  per_recomputed_row: float = None
  # Corrections from steps measured at a plan (fit_plan): the step's phase term is multiplied
  # by phase_scale (without recomputation) or recompute_phase_scale (with it).
  phase_scale: float = 1.0
  recompute_phase_scale: float = 1.0

  def fixed(self, support_size, query_size, tasks_held=1):
    """The part of the peak outside the step's phases: weights, optimizer state, the tasks'
    images and the support set's cached rows."""
    return (self.base + tasks_held * (support_size + query_size) * self.image_bytes
            + support_size * self.per_support_row)

  def phase(self, support_size, query_size, num_backprop, chunk_size, query_batch_size,
            recompute=False):
    """The larger of the chunk and backprop phases, before the correction."""
    h = min(num_backprop, support_size)
    q = min(query_batch_size, query_size)
    if recompute:
      if self.recompute_fixed is None:
        raise ValueError('these costs were calibrated without recomputation')
      backprop = self.recompute_fixed + (h + q) * self.per_recomputed_row
    else:
      backprop = self.step_fixed + h * self.per_backprop_image + q * self.per_query_image
    chunk = (self.chunk_fixed + min(chunk_size, support_size - h) * self.per_chunk_image
             if support_size > h else 0.0)
    return max(backprop, chunk)

  def predict(self, support_size, query_size, num_backprop, chunk_size, query_batch_size,
              recompute=False, tasks_held=1):
    """Predicted allocator peak (bytes) of a LITE step."""
    scale = self.recompute_phase_scale if recompute else self.phase_scale
    return (self.fixed(support_size, query_size, tasks_held)
            + scale * self.phase(support_size, query_size, num_backprop, chunk_size,
                                 query_batch_size, recompute))


@dataclasses.dataclass
class MemoryPlan:
  num_backprop: int
  chunk_size: int
  query_batch_size: int
  recompute_batch: int
  predicted_peak_bytes: float
  budget_bytes: float
  support_size: int
  query_size: int

  def describe(self):
    recompute = (f'recomputation in micro-batches of {self.recompute_batch}'
                 if self.recompute_batch else 'no recomputation')
    return (f'memory plan: |H| = {self.num_backprop}, chunk {self.chunk_size}, query batch '
            f'{self.query_batch_size}, {recompute}; predicted TF allocator peak '
            f'{self.predicted_peak_bytes / MB:.0f} MB of the {self.budget_bytes / MB:.0f} MB '
            f'budget for tasks of up to {self.support_size} support and {self.query_size} '
            'query images')


def _probe_episode(num_support, num_query, image_size, image_dtype, way=5, seed=0):
  rng = np.random.RandomState(seed)

  def images(n):
    x = rng.uniform(-1, 1, (n, image_size, image_size, 3))
    if image_dtype == np.uint8:
      return np.round((x + 1.0) * 127.5).astype(np.uint8)
    return x.astype(np.float32)
  way = min(way, num_support)
  return Episode.from_numpy(images(num_support), np.arange(num_support) % way, images(num_query),
                            np.arange(num_query) % way, way)


def _relaxed_signature(episode):
  return {k: tf.TensorSpec([None] * len(v.shape), v.dtype) if v.shape.rank else
          tf.TensorSpec([], v.dtype) for k, v in episode.to_dict().items()}


class _Allocator:

  def __init__(self, device):
    self.device = device

  def current(self):
    return tf.config.experimental.get_memory_info(self.device)['current']

  def peak_above_current(self, fn):
    """Runs fn() and returns (allocator current before, its peak above that)."""
    gc.collect()  # tensors only a reference cycle keeps would be freed during fn()
    tf.config.experimental.reset_memory_stats(self.device)
    before = self.current()
    tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, 'numpy') else t, fn())
    return before, tf.config.experimental.get_memory_info(self.device)['peak'] - before


# Steps (or chunks) measured per probe; the largest peak counts.
REPEATS = 3


def _probe_peak(meter, num_backprop, query_batch, support_size, recompute=None):
  """A calibration probe: the largest step peak above the allocator's current (bytes) of
  REPEATS steps (the peak of one step varies by some 10% from call to call on CPU), with
  chunks of 8 (their phase stays below the backprop phase, which these probes measure) on a
  task of two query batches (the second runs in the loop over batches, as in training)."""
  plan = MemoryPlan(num_backprop, 8, query_batch, recompute, 0.0, 0.0, support_size,
                    2 * query_batch)
  return max(above for _, above in meter.measure(plan, support_size, 2 * query_batch,
                                                 repeats=REPEATS))


# Probe sizes: (smaller, larger) |H| and query batch, the chunks, and the support sizes of the
# probe tasks. Slopes come from the difference of the two sizes, away from the smallest
# tensors, where the allocator's rounding and per-call buffers dominate.
PROBE_BACKPROP = (8, 24)
PROBE_QUERY = (8, 24)
PROBE_CHUNKS = (8, 32)
PROBE_SUPPORT = (50, 178)


def calibrate(model, image_dtype=np.float32):
  """Measures MemoryCosts of `model` (a LiteModel with a built optimizer) on this device,
  without recomputation (add_recompute_costs adds it).

  Args:
    image_dtype: how the training tasks hold their images (np.uint8 or np.float32).
  """
  device = device_name()
  if not allocator_stats_available(device):
    raise MemoryBudgetError(
        f'lite.memory_budget_mb: the TF allocator of {device} reports no memory statistics; '
        'on CPU start the process with TF_CPU_ALLOCATOR_USE_BFC=true (bin/train.py and '
        'bin/plan_memory.py set it when a budget is given)')
  learner = model.learner
  image_size = learner.image_size
  allocator = _Allocator(device)
  base = allocator.current()
  meter = StepMeter(model, image_dtype)
  (h0, h1), (q0, q1), (n0, n1) = PROBE_BACKPROP, PROBE_QUERY, PROBE_SUPPORT
  logging.info('memory calibration on %s: probe LITE steps', device)
  shown = progress.Progress(4 + len(PROBE_CHUNKS), f'memory calibration on {device}', 'probes')
  peaks = []
  for h, q, n in ((h0, q0, n0), (h0, q0, n1), (h1, q0, n0), (h0, q1, n0)):
    peaks.append(_probe_peak(meter, h, q, n))
    shown.update(len(peaks))
  p_base, p_more_support, p_backprop, p_query = peaks
  per_support_row = max(p_more_support - p_base, 0.0) / (n1 - n0)
  per_backprop = max(p_backprop - p_base, 0.0) / (h1 - h0)
  per_query = max(p_query - p_base, 0.0) / (q1 - q0)
  step_fixed = p_base - n0 * per_support_row - h0 * per_backprop - q0 * per_query

  chunk_peaks = []
  chunk_fn = tf.function(lambda x: _gradient_free_chunk(learner, x))
  for c in PROBE_CHUNKS:
    images = _probe_episode(c, 1, image_size, image_dtype).support_images
    chunk_fn(images)
    chunk_peaks.append(max(allocator.peak_above_current(lambda: chunk_fn(images))[1]
                           for _ in range(REPEATS)))
    shown.update(4 + len(chunk_peaks))
  shown.close()
  c0, c1 = PROBE_CHUNKS
  per_chunk = max(chunk_peaks[1] - chunk_peaks[0], 0.0) / (c1 - c0)
  chunk_fixed = chunk_peaks[0] - c0 * per_chunk

  image_bytes = image_size * image_size * 3 * np.dtype(image_dtype).itemsize
  costs = MemoryCosts(device=device, base=base, image_bytes=image_bytes,
                      per_support_row=per_support_row, step_fixed=step_fixed,
                      per_backprop_image=per_backprop, per_query_image=per_query,
                      chunk_fixed=chunk_fixed, per_chunk_image=per_chunk)
  logging.info('memory calibration: %s', costs)
  return costs


def add_recompute_costs(model, costs, recompute_batch, image_dtype=np.float32):
  """Calibrates LITE steps with recomputation in micro-batches of `recompute_batch` into
  `costs` (the per-row cost is measured on |H| and applied to query rows too)."""
  meter = StepMeter(model, image_dtype)
  # |H| from two to six micro-batches: the kept rows grow, one micro-batch's activations not.
  h0, h1, q0 = 2 * recompute_batch, 6 * recompute_batch, PROBE_QUERY[0]
  n0 = h1 + 2
  r_base = _probe_peak(meter, h0, q0, n0, recompute_batch)
  r_more = _probe_peak(meter, h1, q0, n0, recompute_batch)
  costs.recompute_batch = recompute_batch
  costs.per_recomputed_row = max(r_more - r_base, 0.0) / (h1 - h0)
  costs.recompute_fixed = (r_base - n0 * costs.per_support_row
                           - (h0 + q0) * costs.per_recomputed_row)
  logging.info('memory calibration with recomputation: %s', costs)
  return costs


def _gradient_free_chunk(learner, images):
  """The largest gradient-free pass LITE makes over a chunk: the first stage (task context)
  and the support contributions."""
  from lite_tf.episode import to_model_input  # pylint: disable=g-import-not-at-top
  x = to_model_input(images)
  context = None
  outputs = []
  if learner.has_context:
    rows = learner.context_contributions(x)
    context = learner.task_context(rows)
    outputs.append(rows)
  outputs.append(learner.support_contributions(x, context, training=False))
  return tf.nest.map_structure(tf.stop_gradient, outputs)


def smallest_budget(costs, support_size, query_size, tasks_held=1):
  """The predicted peak of the smallest step: |H| = 1, chunk 1, query batch 1, with or
  without recomputation (when it was calibrated), whichever is smaller."""
  modes = [False] + ([True] if costs.recompute_fixed is not None else [])
  return min(costs.predict(support_size, query_size, 1, 1, 1, recompute=m,
                           tasks_held=tasks_held) for m in modes)


# The share of the budget a plan leaves free (lite.memory_plan_margin): the allocator peak of
# one and the same step varies by up to about 10% from call to call on CPU.
DEFAULT_MARGIN = 0.1


def check_budget(budget_mb, costs, support_size, query_size, tasks_held=1,
                 margin=DEFAULT_MARGIN):
  """Raises MemoryBudgetError unless budget_mb is a number whose share (1 - margin) holds the
  smallest step's predicted peak."""
  need = smallest_budget(costs, support_size, query_size, tasks_held) / (1.0 - margin)
  smallest = math.ceil(need / MB)
  fixed = costs.base + tasks_held * (support_size + query_size) * costs.image_bytes
  if isinstance(budget_mb, bool) or not isinstance(budget_mb, (int, float)) or budget_mb <= 0:
    raise MemoryBudgetError(f'lite.memory_budget_mb must be a positive number of MB; got '
                            f'{budget_mb!r}; the smallest budget that works for this '
                            f'configuration is lite.memory_budget_mb = {smallest}')
  if budget_mb * MB < need:
    raise MemoryBudgetError(
        f'lite.memory_budget_mb={budget_mb:g} MB does not fit even |H| = 1 with chunk 1 and '
        f'query batch 1{" (with or without recomputation)" if costs.recompute_batch else ""}: '
        f'that step needs about {need / MB:.0f} MB, of which {fixed / MB:.0f} MB are fixed (weights, '
        f'optimizer state and the images of tasks of {support_size} support and {query_size} '
        f'query images); the smallest budget that works is lite.memory_budget_mb = {smallest}')


def plan(costs, budget_mb, support_size, query_size, num_backprop, chunk_size,
         query_batch_size, tasks_held=1, exclude=(), min_backprop=1, margin=DEFAULT_MARGIN):
  """The MemoryPlan for tasks of up to `support_size` support and `query_size` query images
  (see the module docstring); raises MemoryBudgetError if nothing fits.

  exclude: (|H|, chunk, query batch, recompute) configurations measured not to fit;
  min_backprop: the smallest |H| to return (None is returned when no |H| from it up fits).
  """
  check_budget(budget_mb, costs, support_size, query_size, tasks_held, margin)
  budget = budget_mb * MB * (1.0 - margin)
  modes = [False] + ([True] if costs.recompute_fixed is not None else [])

  def fits(h, c, q, recompute):
    return ((h, c, q, recompute) not in exclude and
            costs.predict(support_size, query_size, h, c, q, recompute, tasks_held) <= budget)

  chosen = None
  for h in reversed(ladder(min(num_backprop, support_size))):
    if h < min_backprop:
      break
    for recompute in modes:
      if fits(h, 1, 1, recompute):
        chosen = (h, recompute)
        break
    if chosen:
      break
  if chosen is None:
    if min_backprop > 1:
      return None
    raise MemoryBudgetError(
        f'lite.memory_budget_mb={budget_mb:g} MB: no |H| fits once measured steps corrected '
        f'the calibration; the smallest measured step needs more')
  h, recompute = chosen
  c = max(x for x in ladder(chunk_size) if x == 1 or fits(h, x, 1, recompute))
  q = max(x for x in ladder(query_batch_size) if fits(h, c, x, recompute))
  return MemoryPlan(num_backprop=h, chunk_size=c, query_batch_size=q,
                    recompute_batch=costs.recompute_batch if recompute else None,
                    predicted_peak_bytes=costs.predict(support_size, query_size, h, c, q,
                                                       recompute, tasks_held),
                    budget_bytes=budget_mb * MB, support_size=support_size,
                    query_size=query_size)


def apply_plan(model, memory_plan):
  """Sets the LiteModel's |H|, chunk, query batch and recomputation from a MemoryPlan."""
  model.num_backprop = memory_plan.num_backprop
  model.chunk_size = memory_plan.chunk_size
  model.query_batch_size = memory_plan.query_batch_size
  model.recompute_batch = memory_plan.recompute_batch


def measured_at_plan(meter, costs, memory_plan, tasks_held=1):
  """One real step under `memory_plan` (StepMeter `meter`) on a small task, its peak
  extrapolated to the plan's task size with the calibrated per-image and per-row costs (what
  N changes is the images held and the cached rows, not the phases). The small task has |H| +
  two chunks of support images, so the gradient-free loop runs more than once, and two query
  batches; the largest peak of three steps counts (the
  peak of one and the same step varies by up to ~10% from call to call on CPU)."""
  n = min(memory_plan.support_size, memory_plan.num_backprop + 2 * memory_plan.chunk_size)
  q = min(memory_plan.query_size, 2 * memory_plan.query_batch_size)
  peak = meter.peak(memory_plan, n, q, repeats=3)
  return (peak + costs.fixed(memory_plan.support_size, memory_plan.query_size, tasks_held)
          - costs.fixed(n, q, 1))


def fit_plan(model, costs, budget_mb, support_size, query_size, tasks_held=1,
             image_dtype=np.float32, max_measurements=6, report=None, margin=DEFAULT_MARGIN):
  """plan(), checked and corrected with real steps: the plan's step is measured
  (measured_at_plan); the ratio of measured to predicted phase becomes the mode's
  phase_scale, and the plan is recomputed, until a measured plan fits and no larger |H| is
  predicted to, or max_measurements steps were run. Returns (MemoryPlan, measurements)."""
  requested = (model.num_backprop, model.chunk_size, model.query_batch_size)
  meter = StepMeter(model, image_dtype)
  fitted, exclude, measurements = None, set(), []
  candidate = plan(costs, budget_mb, support_size, query_size, *requested, tasks_held,
                   margin=margin)
  for _ in range(max_measurements):
    recompute = candidate.recompute_batch is not None
    measured = measured_at_plan(meter, costs, candidate, tasks_held)
    phase = costs.phase(support_size, query_size, candidate.num_backprop, candidate.chunk_size,
                        candidate.query_batch_size, recompute)
    ratio = (measured - costs.fixed(support_size, query_size, tasks_held)) / max(phase, 1.0)
    if recompute:
      costs.recompute_phase_scale = max(ratio, 1e-3)
    else:
      costs.phase_scale = max(ratio, 1e-3)
    measurements.append({'num_backprop': candidate.num_backprop,
                         'chunk_size': candidate.chunk_size,
                         'query_batch_size': candidate.query_batch_size,
                         'recompute_batch': candidate.recompute_batch,
                         'predicted_bytes': candidate.predicted_peak_bytes,
                         'measured_bytes': measured})
    fits = measured <= budget_mb * MB * (1.0 - margin)
    if report:
      report(f'  measured |H| = {candidate.num_backprop} (chunk {candidate.chunk_size}, query '
             f'batch {candidate.query_batch_size}, recompute {candidate.recompute_batch}): '
             f'{measured / MB:.0f} MB against {candidate.predicted_peak_bytes / MB:.0f} MB '
             f'predicted; {"fits" if fits else "does not fit"}')
    if fits:
      candidate.predicted_peak_bytes = measured
      fitted = candidate
    else:
      exclude.add((candidate.num_backprop, candidate.chunk_size, candidate.query_batch_size,
                   recompute))
    floor = fitted.num_backprop + 1 if fitted else 1
    if fitted and fitted.num_backprop >= min(requested[0], support_size):
      break
    following = plan(costs, budget_mb, support_size, query_size, *requested, tasks_held,
                     exclude=exclude, min_backprop=floor, margin=margin)
    if following is None:
      break
    candidate = following
  if fitted is None:
    peaks = [m['measured_bytes'] for m in measurements]
    raise MemoryBudgetError(
        f'lite.memory_budget_mb={budget_mb:g} MB: the planned steps measured over the budget '
        f'({", ".join(f"{b / MB:.0f} MB" for b in peaks)}); the smallest budget that works '
        f'is about lite.memory_budget_mb = {math.ceil(min(peaks) / MB / (1.0 - margin))}')
  return fitted, measurements


def plan_for_model(model, budget_mb, support_size, query_size, image_dtype=np.float32,
                   tasks_held=1, recompute_batch=8, report=None, margin=DEFAULT_MARGIN):
  """Calibrates `model` (recomputation too when the requested |H| is not predicted to fit
  without it) and returns (fit_plan's MemoryPlan, MemoryCosts, measurements)."""
  costs = calibrate(model, image_dtype)
  first = plan(costs, budget_mb, support_size, query_size, model.num_backprop,
               model.chunk_size, model.query_batch_size, tasks_held, margin=margin)
  if first.num_backprop < min(model.num_backprop, support_size):
    add_recompute_costs(model, costs, model.requested_recompute_batch() or recompute_batch,
                        image_dtype)
  fitted, measurements = fit_plan(model, costs, budget_mb, support_size, query_size,
                                  tasks_held, image_dtype, report=report, margin=margin)
  return fitted, costs, measurements


class StepMeter:
  """Allocator peaks of real LITE steps of `model` (LiteModel.train_step on its learner and
  optimizer) under memory plans, on random tasks; the weights, optimizer state and metrics
  are restored after every step, so measuring leaves training exactly where it was. One
  traced step per (|H|, chunk, query batch, recomputation), kept across calls: the task
  signature is relaxed, so tasks of every size run through it."""

  def __init__(self, model, image_dtype=np.float32):
    self.model = model
    self.image_dtype = image_dtype
    self.allocator = _Allocator(device_name())
    self.state = (list(model.variables) + list(model.optimizer.variables)
                  + [v for m in model.metrics for v in m.variables])
    self.signature = _relaxed_signature(
        _probe_episode(2, 1, model.learner.image_size, image_dtype))
    self.steps = {}

  def _restore(self, saved):
    for v, s in zip(self.state, saved):
      v.assign(s)

  def _step(self, num_backprop, memory_plan):
    key = (num_backprop, memory_plan.chunk_size, memory_plan.query_batch_size,
           memory_plan.recompute_batch)
    if key not in self.steps:
      step_model = self.model.with_step(num_backprop, memory_plan.chunk_size,
                                        memory_plan.query_batch_size,
                                        memory_plan.recompute_batch)
      self.steps[key] = tf.function(step_model.train_step, input_signature=[self.signature])
    return self.steps[key]

  def measure(self, memory_plan, support_size, query_size, num_backprop=None, repeats=2):
    """(allocator current before, peak above it) in bytes of `repeats` steps under
    `memory_plan` on one random task of support_size + query_size images, after a warm-up
    step (the first call on a task of a new size allocates what later ones reuse).
    num_backprop overrides the plan's |H|."""
    step = self._step(num_backprop or memory_plan.num_backprop, memory_plan)
    task = _probe_episode(support_size, query_size, self.model.learner.image_size,
                          self.image_dtype).to_dict()
    saved = [v.numpy() for v in self.state]
    results = []
    try:
      step(task)
      for _ in range(repeats):
        self._restore(saved)
        results.append(self.allocator.peak_above_current(lambda: step(task)))
    finally:
      self._restore(saved)
    return results

  def peaks(self, memory_plan, support_size, query_size, num_backprop=None, repeats=2):
    """The TF allocator's peaks (bytes, from before the step: weights, optimizer state and the
    task's images included) of measure()'s steps."""
    return [before + above for before, above in
            self.measure(memory_plan, support_size, query_size, num_backprop, repeats)]

  def peak(self, memory_plan, support_size, query_size, num_backprop=None, repeats=2):
    """The largest of peaks()."""
    return max(self.peaks(memory_plan, support_size, query_size, num_backprop, repeats))


def measure_step_peak(model, memory_plan, support_size, query_size, image_dtype=np.float32,
                      num_backprop=None, repeats=2):
  """The largest TF allocator peak of `repeats` real LITE steps of `model` under
  `memory_plan` (StepMeter.peaks, on a step traced for this call)."""
  return StepMeter(model, image_dtype).peak(memory_plan, support_size, query_size,
                                            num_backprop, repeats)
