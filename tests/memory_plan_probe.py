"""Run as a script by tests/test_memory_plan.py, in a process with TF's BFC allocator on CPU:
calibrates a small ProtoNets + LITE step, measures real steps beside their predictions, fits a
plan to a budget and measures it. Prints one JSON line."""

import json
import os
import sys

os.environ['TF_CPU_ALLOCATOR_USE_BFC'] = 'true'
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import keras  # pylint: disable=g-import-not-at-top
import numpy as np

from lite_tf.learners import protonets
from lite_tf.lite import memory_plan
from lite_tf.lite import model as lite_model

SIZE = 32
# (N, Q, |H|, chunk, query batch, recompute micro-batch)
CONFIGS = [(60, 40, 10, 20, 20, None), (200, 30, 60, 50, 30, None), (300, 20, 5, 100, 20, None),
           (100, 40, 40, 40, 40, 8)]


def main():
  keras.utils.set_random_seed(0)
  learner = protonets.ProtoNets('conv4', SIZE)
  learner(memory_plan._probe_episode(4, 2, SIZE, np.float32).to_dict())  # pylint: disable=protected-access
  model = lite_model.LiteModel(learner, num_backprop=40, chunk_size=40, query_batch_size=40)
  model.compile(optimizer=lite_model.make_optimizer())
  model.optimizer.build(learner.trainable_variables)
  weights = [v.numpy() for v in learner.trainable_variables]
  costs = memory_plan.calibrate(model, np.float32)
  memory_plan.add_recompute_costs(model, costs, 8, np.float32)
  rows = []
  for n, q, h, c, qb, r in CONFIGS:
    plan = memory_plan.MemoryPlan(h, c, qb, r, 0.0, 0.0, n, q)
    rows.append({'config': [n, q, h, c, qb, r],
                 'predicted': costs.predict(n, q, h, c, qb, recompute=bool(r)),
                 'measured': memory_plan.measure_step_peak(model, plan, n, q, np.float32)})
  budget_mb = float(sys.argv[1])
  plan, fitting = memory_plan.fit_plan(model, costs, budget_mb, 200, 40)
  measured = {n: memory_plan.measure_step_peak(model, plan, n, 40, np.float32)
              for n in (50, 200)}
  # A second, independent measurement at N = 200 (a separate traced step): the peak of one
  # and the same step varies by 5-15% between calls on this CPU.
  remeasured = memory_plan.measure_step_peak(model, plan, 200, 40, np.float32)
  unchanged = all(np.array_equal(w, v.numpy())
                  for w, v in zip(weights, learner.trainable_variables))
  print('RESULT ' + json.dumps({
      'rows': rows, 'plan': [plan.num_backprop, plan.chunk_size, plan.query_batch_size,
                             plan.recompute_batch],
      'predicted_peak': plan.predicted_peak_bytes, 'fitting': fitting,
      'measured_at_plan': measured, 'remeasured_at_200': remeasured,
      'weights_unchanged': unchanged,
      'steps_at_start': int(model.optimizer.iterations.numpy())}))


if __name__ == '__main__':
  main()
