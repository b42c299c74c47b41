"""bin/plan_memory.py's work: memory plans for budgets, and (verify) real steps measured under
them, with the largest |H| that fits found by trying."""

import dataclasses
import time

import gin
import numpy as np

from lite_tf import atomic
from lite_tf.learners import base as learner_base
from lite_tf.lite import memory_plan
from lite_tf.lite import model as lite_model

MB = memory_plan.MB


def build_model():
  """The learner of `run_training.learner` in a LiteModel from the `lite.*` bindings, with its
  optimizer built (as bin/train.py builds them)."""
  try:
    reference = gin.query_parameter('run_training.learner')
  except ValueError as e:
    raise ValueError('bin/plan_memory.py: the gin config binds no run_training.learner') from e
  learner = reference.scoped_configurable_fn()
  if not isinstance(learner, learner_base.Learner):
    raise ValueError(f'lite.memory_budget_mb plans LITE learners; {type(learner).__name__} '
                     'computes its own task gradients')
  learner(memory_plan._probe_episode(2, 1, learner.image_size, np.float32).to_dict())  # pylint: disable=protected-access
  model = lite_model.make_lite_model(learner)
  model.compile(optimizer=lite_model.make_optimizer(), jit_compile=False)
  model.optimizer.build(learner.trainable_variables)
  return model


def run(budgets, support_size=None, query_size=None, image_dtype='float32', tasks_held=1,
        verify=False, verify_support_sizes=(100, 500, 1000), output=None, report=print,
        search_steps=3):
  """Plans each budget (memory_plan.fit_plan); returns a dict (also written to `output` as
  JSON)."""
  dtype = np.dtype(image_dtype).type
  model = build_model()
  support_size = support_size or model.memory_plan_support_size
  query_size = query_size or model.memory_plan_query_size
  requested = (model.num_backprop, model.chunk_size, model.query_batch_size)
  margin = model.memory_plan_margin
  start = time.perf_counter()
  costs = memory_plan.calibrate(model, dtype)
  for budget in budgets:
    memory_plan.check_budget(budget, costs, support_size, query_size, tasks_held, margin)
  first = [memory_plan.plan(costs, b, support_size, query_size, *requested, tasks_held,
                            margin=margin) for b in budgets]
  if any(p.num_backprop < min(requested[0], support_size) for p in first):
    memory_plan.add_recompute_costs(model, costs, model.requested_recompute_batch() or 8, dtype)
  calibration_seconds = time.perf_counter() - start
  report(f'calibrated on {costs.device} in {calibration_seconds:.0f} s; requested |H| = '
         f'{requested[0]}, chunk {requested[1]}, query batch {requested[2]}')
  result = {'costs': dataclasses.asdict(costs), 'calibration_seconds': calibration_seconds,
            'requested': dict(zip(('num_backprop', 'chunk_size', 'query_batch_size'),
                                  requested)),
            'support_size': support_size, 'query_size': query_size, 'tasks_held': tasks_held,
            'image_dtype': image_dtype, 'margin': margin, 'plans': []}
  for budget in budgets:
    report(f'{budget:g} MB:')
    budget_costs = dataclasses.replace(costs)  # fit_plan corrects its own copy
    start = time.perf_counter()
    plan, fitting = memory_plan.fit_plan(model, budget_costs, budget, support_size, query_size,
                                         tasks_held, dtype, report=report, margin=margin)
    report(f'  {plan.describe()}')
    entry = {'budget_mb': budget, 'plan': dataclasses.asdict(plan), 'fitting': fitting,
             'fitting_seconds': time.perf_counter() - start,
             'corrected_costs': dataclasses.asdict(budget_costs)}
    if verify:
      meter = memory_plan.StepMeter(model, dtype)  # one traced step for every N
      entry['measured'] = []
      for n in verify_support_sizes:
        if n > support_size:
          continue
        peak = meter.peak(plan, n, query_size)
        predicted = budget_costs.predict(n, query_size, plan.num_backprop, plan.chunk_size,
                                         plan.query_batch_size, bool(plan.recompute_batch))
        entry['measured'].append({'support_size': n, 'peak_bytes': peak,
                                  'predicted_bytes': predicted,
                                  'within_budget': peak <= budget * MB})
        report(f'  N = {n}: measured TF allocator peak {peak / MB:.0f} MB (predicted '
               f'{predicted / MB:.0f} MB): {"within" if peak <= budget * MB else "OVER"} '
               'the budget')
      entry['search'] = _search(model, plan, budget, support_size, query_size, dtype,
                                min(requested[0], support_size), search_steps, report)
    result['plans'].append(entry)
  if output:
    atomic.write_json(output, result, indent=1)
  return result


def _search(model, plan, budget, support_size, query_size, dtype, requested, steps, report):
  """Measures the ladder's |H| values above the plan's (same chunk, query batch and
  recomputation) at support_size until one does not fit or `steps` were tried."""
  tried = []
  largest = plan.num_backprop
  for h in [x for x in memory_plan.ladder(requested) if x > plan.num_backprop][:steps]:
    peak = memory_plan.measure_step_peak(model, plan, support_size, query_size, dtype,
                                         num_backprop=h)
    tried.append({'num_backprop': h, 'peak_bytes': peak, 'fits': peak <= budget * MB})
    report(f'  tried |H| = {h} at N = {support_size}: {peak / MB:.0f} MB, '
           f'{"fits" if peak <= budget * MB else "does not fit"}')
    if peak > budget * MB:
      break
    largest = h
  ladder = memory_plan.ladder(requested)
  steps_below = ladder.index(largest) - ladder.index(plan.num_backprop)
  return {'tried': tried, 'largest_fitting_num_backprop': largest,
          'ladder_steps_below_largest': steps_below,
          'complete': not tried or not tried[-1]['fits'] or largest == requested}
