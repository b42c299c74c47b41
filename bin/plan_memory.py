"""Which |H|, chunk, query batch and recomputation fit a memory budget, for a gin-configured
learner (lite_tf.lite.memory_plan): calibrates on this device and prints the plan per budget.

  python bin/plan_memory.py --gin_config=gin/demo_simple_cnaps.gin --budgets_mb=2048,4096,8192 \
      --gin_bindings="BACKBONE='efficientnet_b0'" --gin_bindings="IMAGE_SIZE=224"

With --verify it also measures one real LITE step per budget and support size under the plan,
and tries the |H| values above the chosen one (at the largest support size) to find the
largest that fits, writing everything to --output (JSON).
"""

import os
import sys

from lite_tf import quiet  # pylint: disable=g-import-not-at-top
quiet.start()  # before TensorFlow loads: its native log stays out of the terminal
# The planner reads TF's allocator statistics; on CPU only the BFC allocator keeps them.
os.environ.setdefault('TF_CPU_ALLOCATOR_USE_BFC', 'true')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from lite_tf import binary
from lite_tf import config

FLAGS = flags.FLAGS
binary.define_gin_flags(config_help='gin config files of the training run.')
flags.adopt_module_key_flags(binary)
flags.DEFINE_list('budgets_mb', None, 'Budgets in MB (default: lite.memory_budget_mb).')
flags.DEFINE_integer('support_size', None, lower_bound=1, help='Largest support set to plan for (default: '
                     'lite.memory_plan_support_size).')
flags.DEFINE_integer('query_size', None, lower_bound=1, help='Largest query set to plan for (default: '
                     'lite.memory_plan_query_size).')
flags.DEFINE_enum('image_dtype', 'float32', ['float32', 'uint8'],
                  'How the tasks hold their images (uint8 sources: ORBIT, VTAB).')
flags.DEFINE_integer('tasks_held', 1, lower_bound=1, help='Tasks whose images the allocator holds at once (bin/'
                     'train.py plans for 3: the step\'s and two prefetched).')
flags.DEFINE_bool('verify', False, 'Measure real steps under each plan (see above).')
flags.DEFINE_list('verify_support_sizes', ['100', '500', '1000'], 'Support sizes --verify '
                  'measures.')
binary.require_int_list('verify_support_sizes')
binary.require_int_list('budgets_mb')
flags.DEFINE_string('output', None, 'Write the plans (and measurements) here as JSON.')


def _budgets():
  values = FLAGS.budgets_mb
  if values is None:
    bound = config.bound_value('lite.memory_budget_mb')
    if bound is None:
      raise config.ConfigError('give --budgets_mb or bind lite.memory_budget_mb')
    values = [bound]
  budgets = []
  for v in values:
    try:
      budgets.append(float(v))
    except (TypeError, ValueError) as e:
      raise config.ConfigError(f'--budgets_mb: {v!r} is not a number of MB') from e
  return budgets


def main(argv):
  del argv
  try:
    if not FLAGS.gin_config:
      raise config.ConfigError('--gin_config: give the training run\'s gin file(s), e.g. '
                               '--gin_config=gin/demo_protonets.gin')
    config.parse(FLAGS.gin_config, FLAGS.gin_bindings)
    budgets = _budgets()
    from lite_tf.studies import plan_check  # pylint: disable=g-import-not-at-top
    result = plan_check.run(budgets, support_size=FLAGS.support_size,
                            query_size=FLAGS.query_size, image_dtype=FLAGS.image_dtype,
                            tasks_held=FLAGS.tasks_held, verify=FLAGS.verify,
                            verify_support_sizes=[int(s) for s in FLAGS.verify_support_sizes],
                            output=FLAGS.output, report=print)
  except config.USER_ERRORS as e:  # MemoryBudgetError is a ValueError
    print(f'error: {binary.describe(e)}', file=sys.stderr)
    sys.exit(1)
  del result


if __name__ == '__main__':
  app.run(binary.exits_on_error(main))
