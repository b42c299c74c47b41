"""Run as a script by tests/test_memory_plan.py, in a process with TF's BFC allocator on CPU:
calibrates a small ProtoNets + LITE step, measures real steps beside the planner's two
predictions of them, fits a plan to a budget and measures it. Prints one JSON line."""

import json
import os
import sys

os.environ['TF_CPU_ALLOCATOR_USE_BFC'] = 'true'
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import keras  # pylint: disable=g-import-not-at-top
import numpy as np
import tensorflow as tf

# One inter-op thread: the order of a step's ops, and with it which activations are alive at
# once, then does not depend on timing. With TF's default pool the peak of one and the same
# step varies by up to 30% from call to call when other processes share the two cores (as in
# a parallel test run); the planner's margin absorbs that in training, a 10% check cannot.
tf.config.threading.set_inter_op_parallelism_threads(1)

from lite_tf.learners import protonets
from lite_tf.lite import memory_plan
from lite_tf.lite import model as lite_model

SIZE = 32
# (N, Q, |H|, chunk, query batch, recompute micro-batch): far from the calibration's probes
# (|H| up to 60, chunks of 100, recomputation).
CONFIGS = [(200, 30, 60, 50, 30, None), (300, 20, 5, 100, 20, None),
           (100, 40, 40, 40, 40, 8)]
# Steps measured at every configuration's full size (one traced step serves every size).
REPEATS = 5


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
  meter = memory_plan.StepMeter(model, np.float32)
  rows = []
  for n, q, h, c, qb, r in CONFIGS:
    plan = memory_plan.MemoryPlan(h, c, qb, r, 0.0, 0.0, n, q)
    rows.append({'config': [n, q, h, c, qb, r],
                 'model': costs.predict(n, q, h, c, qb, recompute=bool(r)),
                 'from_small_task': memory_plan.measured_at_plan(meter, costs, plan),
                 'measured': meter.peaks(plan, n, q, repeats=REPEATS)})
  budget_mb = float(sys.argv[1])
  plan, fitting = memory_plan.fit_plan(model, costs, budget_mb, 200, 40)
  at_plan = memory_plan.StepMeter(model, np.float32)
  measured = {n: at_plan.peaks(plan, n, 40, repeats=REPEATS) for n in (50, 200)}
  unchanged = all(np.array_equal(w, v.numpy())
                  for w, v in zip(weights, learner.trainable_variables))
  print('RESULT ' + json.dumps({
      'rows': rows, 'plan': [plan.num_backprop, plan.chunk_size, plan.query_batch_size,
                             plan.recompute_batch],
      'predicted_peak': plan.predicted_peak_bytes, 'fitting': fitting,
      'measured_at_plan': measured, 'weights_unchanged': unchanged,
      'steps_at_start': int(model.optimizer.iterations.numpy())}))


if __name__ == '__main__':
  main()
