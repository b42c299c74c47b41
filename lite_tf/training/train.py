"""Resumable meta-training under `model.fit`, then evaluation on held-out classes."""

import dataclasses
import json
import os
import sys
import tempfile

from absl import logging
import gin
import keras
import tensorflow as tf

from lite_tf import atomic
from lite_tf import checks
from lite_tf import config as config_lib
from lite_tf import episode as episode_lib
from lite_tf import interrupt
from lite_tf import precision
from lite_tf.data import adapters
from lite_tf.data.meta_dataset import dataset_spec as spec_lib
from lite_tf.data import glyphs
from lite_tf.data import in_memory
from lite_tf.learners import base as learner_base
from lite_tf.lite import memory_plan
from lite_tf.lite import model as lite_model
from lite_tf.training import callbacks as training_callbacks
from lite_tf.training import checkpoints
from lite_tf.training import distribute
from lite_tf.training import evaluate


@gin.configurable
def glyph_episodes(split, image_size=28, way=5, shot=5, query_shot=10, seed=0, cache_dir=None):
  """Episodes of the built-in glyph demo data (lite_tf.data.glyphs) for one split."""
  checks.require_int('glyph_episodes.image_size (IMAGE_SIZE in the demo gin files)',
                     image_size, 1)
  checks.require_int('glyph_episodes.way', way, 2)  # one class: accuracy 1.0, meaningless
  checks.require_int('glyph_episodes.shot', shot, 1)
  checks.require_int('glyph_episodes.query_shot', query_shot, 1)
  split = spec_lib.split_name(split).lower()
  dataset = glyphs.load(size=image_size, cache_dir=cache_dir)
  split_seed = {'train': seed, 'valid': seed + 1, 'test': seed + 2}[split]
  return in_memory.EpisodeSampler(dataset.images_by_class(split), way=way, shot=shot,
                                  query_shot=query_shot, seed=split_seed)


@gin.configurable
def glyph_variable_episodes(split, image_size=28, max_support_set_size=100,
                            max_ways_upper_bound=20, max_num_query=10, seed=0, cache_dir=None):
  """Meta-Dataset-style variable episodes (5 to max_ways_upper_bound classes, support sets of
  up to max_support_set_size images, Meta-Dataset's shot sampling) of the glyph demo data."""
  from lite_tf.data.meta_dataset import sampling  # pylint: disable=g-import-not-at-top
  checks.require_int('glyph_variable_episodes.image_size', image_size, 1)
  checks.require_int('glyph_variable_episodes.max_support_set_size', max_support_set_size, 1)
  checks.require_int('glyph_variable_episodes.max_ways_upper_bound', max_ways_upper_bound, 5)
  checks.require_int('glyph_variable_episodes.max_num_query', max_num_query, 1)
  split = spec_lib.split_name(split).lower()
  dataset = glyphs.load(size=image_size, cache_dir=cache_dir)
  split_seed = {'train': seed, 'valid': seed + 1, 'test': seed + 2}[split]
  by_class = dataset.images_by_class(split)
  config = sampling.EpisodeDescriptionConfig(
      max_support_set_size=max_support_set_size,
      max_ways_upper_bound=min(max_ways_upper_bound, len(by_class)),
      max_num_query=max_num_query)
  return in_memory.VariableEpisodeSampler(by_class, config=config, seed=split_seed)


def check_writable_dir(path, flag):
  """Creates folder `path` and fails early, naming the flag, if it is a file or cannot be
  written."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise ValueError(f'{flag}={path!r} is a file, not a folder')
  try:
    os.makedirs(path, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix='.write-test-', dir=path)
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise ValueError(f'{flag}={path!r} is not a writable directory: {e}') from e


def check_train_dir(train_dir):
  """Creates train_dir and fails early, naming the flag, if it cannot be written."""
  check_writable_dir(train_dir, '--train_dir')


def _warn_random_backbone(learner):
  """CNAPs-style learners keep the backbone frozen: without pretrained weights they would
  meta-train on random features. Says so loudly, with how to pretrain."""
  message = (f'WARNING: {type(learner).__name__} has no backbone weights (BACKBONE_WEIGHTS = '
             f'None): its frozen {learner.backbone_name} backbone keeps its random '
             'initialisation. Pretrain it first, e.g. python bin/pretrain.py '
             '--gin_config=gin/pretrain_demo.gin --output=conv4.weights.h5, then bind '
             "BACKBONE_WEIGHTS = 'conv4.weights.h5'")
  print(message, file=sys.stderr)


def _check_steps(num_steps, steps_per_log, valid_episodes, test_episodes):
  """Refuses counts that are not positive integers, naming the binding."""
  for name, value, low in (('num_steps', num_steps, 1), ('steps_per_log', steps_per_log, 1),
                           ('valid_episodes', valid_episodes, 0),
                           ('test_episodes', test_episodes, 1)):
    checks.require_int(f'run_training.{name}', value, low)


def _warn_partial_steps(num_steps, steps_per_log):
  tasks = max(1, num_steps // steps_per_log) * steps_per_log
  if tasks != num_steps:
    print(f'warning: run_training.num_steps={num_steps} is not a multiple of '
          f'run_training.steps_per_log={steps_per_log}: {tasks} tasks will run', file=sys.stderr)


TRAIN_METHODS = ('lite', 'small_task', 'no_lite')


@gin.configurable
def train_method(method='lite'):
  """The LITE paper's training methods (its Table 2; cambridge-mlg/LITE `--train_method`):
  'lite' (the default: LITE with `lite.num_backprop`), 'small_task' (each training task cut
  to at most 30 ways and 40 support images, `SmallTaskEpisodes`, then back-propagated
  exactly) or 'no_lite' (exact back-propagation of the whole support set)."""
  if method not in TRAIN_METHODS:
    raise ValueError(f'train_method.method must be one of {TRAIN_METHODS}; got {method!r}')
  return method


# What the allocator holds of tasks during fit: the step's own and the two that the input
# pipeline prefetches (lite_tf.episode.episodes_dataset).
TASKS_HELD_IN_TRAINING = 3


def _fit_memory_budget(model, method, first, train_dir):
  """lite.memory_budget_mb: calibrates the step, sets the plan on the model and prints it.
  The plan is kept in train_dir/memory_plan.json: a resumed run with the same budget and
  requested sizes takes it from there, so it trains exactly as the interrupted run did."""
  if method != 'lite':
    raise ValueError(f'lite.memory_budget_mb plans LITE steps; train_method.method={method!r} '
                     "back-propagates every support image (use 'lite' or unset the budget)")
  if tf.distribute.get_strategy().num_replicas_in_sync > 1:
    raise ValueError('lite.memory_budget_mb plans one device; it is not available with '
                     '--distribution (plan on one device with bin/plan_memory.py and set '
                     'lite.num_backprop / chunk_size / query_batch_size from its plan)')
  key = {'budget_mb': model.memory_budget_mb, 'support_size': model.memory_plan_support_size,
         'query_size': model.memory_plan_query_size, 'margin': model.memory_plan_margin,
         'requested': [
             model.num_backprop, model.chunk_size, model.query_batch_size,
             model.recompute_batch], 'tasks_held': TASKS_HELD_IN_TRAINING}
  path = os.path.join(train_dir, 'memory_plan.json')
  saved = None
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      saved = json.load(f)
  if saved and saved.get('key') == key:
    plan = memory_plan.MemoryPlan(**saved['plan'])
    source = f' (kept from {path})'
  else:
    plan, _, _ = memory_plan.plan_for_model(
        model, model.memory_budget_mb, model.memory_plan_support_size,
        model.memory_plan_query_size, image_dtype=first.support_images.dtype.as_numpy_dtype,
        tasks_held=TASKS_HELD_IN_TRAINING, report=lambda m: logging.info('%s', m),
        margin=model.memory_plan_margin)
    atomic.write_json(path, {'key': key, 'plan': dataclasses.asdict(plan)})
    source = ''
  memory_plan.apply_plan(model, plan)
  logging.info('%s%s', plan.describe(), source)
  print(f'{plan.describe()}{source}', flush=True)


@gin.configurable
def run_training(train_dir, learner=gin.REQUIRED, episode_source=glyph_episodes,
                 num_steps=1000, steps_per_log=100, valid_episodes=50, test_episodes=600,
                 max_checkpoints=3, callbacks=(), verbose='auto'):
  """Meta-trains `learner` on `episode_source('train')`, resumably, then evaluates.

  At the end, train_dir/test_results.json holds the held-out accuracy and its 95% CI.
  Every `steps_per_log` tasks (a Keras epoch): validation on `valid_episodes` valid-split
  episodes, a checkpoint (train_dir/checkpoints: model, optimizer, step), a line of
  train_dir/history.jsonl, TensorBoard summaries (train_dir/tensorboard: loss, accuracy, way,
  support set size, tasks per second, peak memory) and, when validation improves, the
  learner's weights in train_dir/best/. Re-running the same command after an interruption
  (even SIGKILL) resumes from the last checkpoint with the same episodes and subset draws as
  an uninterrupted run.

  Args:
    train_dir: where everything above, operative_config.gin and the final weights go.
    learner: a lite_tf.learners.base.Learner (gin: `run_training.learner = @protonets()`),
      or MAML / FineTuner.
    episode_source: callable split -> sampler with `.episodes()`, `.as_dataset(start=...)`,
      or -> a tf.data.Dataset of Meta-Dataset episodes (6-tuples, see adapters.PipelineEpisodes).
    num_steps: meta-training tasks (each one a call of the meta-model's train_step).
    steps_per_log: tasks per Keras epoch: validation, checkpoints and logs this often.
    valid_episodes: valid-split episodes per validation (0: none).
    test_episodes: held-out test-split episodes for the final accuracy.
    max_checkpoints: checkpoints kept.
    callbacks: extra Keras callbacks for model.fit.
  Weight initialisation follows the global Keras seed (bin/train.py --seed), set before gin
  builds the learner; episodes and LITE's subset draws have their own seeds.

  Returns:
    dict with 'test_accuracy', 'test_ci95', 'history', 'resumed_from_step'.
  """
  _check_steps(num_steps, steps_per_log, valid_episodes, test_episodes)
  # bin/train.py --distribution enters a strategy; the default one has a single replica.
  strategy = tf.distribute.get_strategy()
  num_replicas = strategy.num_replicas_in_sync
  _check_replicas(num_replicas, steps_per_log, valid_episodes)
  if not distribute.is_chief(strategy):
    with distribute.WorkerScratch(strategy) as scratch:
      return _train(train_dir, scratch, learner, episode_source, num_steps, steps_per_log,
                    valid_episodes, test_episodes, max_checkpoints, callbacks, verbose)
  check_train_dir(train_dir)
  for folder in ('', 'best', 'checkpoints'):
    for orphan in atomic.remove_orphans(os.path.join(train_dir, folder)):
      logging.info('removed %s, left by an interrupted write', orphan)
  return _train(train_dir, train_dir, learner, episode_source, num_steps, steps_per_log,
                valid_episodes, test_episodes, max_checkpoints, callbacks, verbose)


# Bindings that cannot change what a run trains: a re-run may change them, and raise
# run_training.num_steps to train on (each change recorded in train_dir/config_changes.jsonl);
# any other change is refused on a started run.
EVALUATION_ONLY_BINDINGS = ('run_training.test_episodes', 'run_training.verbose',
                            'run_training.max_checkpoints')


def _check_same_run(train_dir):
  """Refuses to go on with a run of train_dir under another configuration, and to train over
  a run whose checkpoints are gone; nothing is written before this."""
  checkpoints_dir = os.path.join(train_dir, 'checkpoints')
  started = (tf.train.latest_checkpoint(checkpoints_dir) is not None
             or checkpoints.checkpoint_files(checkpoints_dir))
  history = os.path.join(train_dir, 'history.jsonl')
  weights = os.path.join(train_dir, 'learner.weights.h5')
  if not started:
    # One history line without a checkpoint is a run killed while writing its first one.
    left = [p for p in (weights,) if os.path.exists(p)]
    if len(training_callbacks.read_history(history)) > 1:
      left.insert(0, history)
    if left:
      names = ', '.join(map(os.path.basename, left))
      raise ValueError(f'--train_dir={train_dir} holds a run ({names}) '
                       f'but no checkpoint in {checkpoints_dir} to resume it from; refusing to '
                       'train over it from task 0: use a new --train_dir, or remove this one')
    return
  path = os.path.join(train_dir, 'operative_config.gin')
  if not os.path.exists(path):
    return
  with open(path, encoding='utf-8') as f:
    old = f.read()
  changes = run_changes(old, gin.operative_config_str())
  # More tasks continue the run (its trained part is the same); fewer would leave weights
  # trained beyond what the config says.
  refused = [c for c in changes if c[0] not in EVALUATION_ONLY_BINDINGS
             and not (c[0] == 'run_training.num_steps' and isinstance(c[1], int)
                      and isinstance(c[2], int) and c[2] > c[1])]
  if refused:
    listed = '; '.join(f'{name} = {before!r} in the run, {now!r} now'
                       for name, before, now in refused[:6])
    if len(refused) > 6:
      listed += f'; and {len(refused) - 6} more'
    changed_defaults = [f'{name} = {before!r}' for name, before, _ in refused
                        if name.rpartition('/')[2] in EARLIER_DEFAULTS]
    if changed_defaults:  # the run did not bind them: it trained with the earlier default
      listed += (f'; the default changed since that run: --gin_bindings="'
                 f'{changed_defaults[0]}" resumes it as it trained')
    raise ValueError(f'--train_dir={train_dir} holds a run trained with another configuration '
                     f'({listed}); nothing was written. Use a new --train_dir, or the run\'s '
                     f'bindings ({path})')
  if changes:
    record = {'changed': [[name, repr(before), repr(now)] for name, before, now in changes]}
    with open(os.path.join(train_dir, 'config_changes.jsonl'), 'a', encoding='utf-8') as f:
      f.write(json.dumps(record) + '\n')
    logging.info('evaluation-only bindings changed since the run started: %s', changes)


# What a resumed run compares (lite_tf.config): kept here under their names.
EARLIER_DEFAULTS = config_lib.EARLIER_DEFAULTS
run_changes = config_lib.run_changes


def _fit(model, strategy, train_source, step, steps_per_log, epochs, metric_state, callbacks,
         validation, verbose):
  """model.fit from task `step` to the last epoch. A run resumed inside an epoch (an
  interrupted one) first finishes that epoch, with its metric accumulators put back, so its
  history line is the one an uninterrupted run writes."""
  num_replicas = strategy.num_replicas_in_sync
  for epoch, last, steps, first in training_callbacks.fit_segments(step, steps_per_log, epochs):
    model.fit(distribute.replica_episodes(strategy, train_source, first), epochs=last,
              initial_epoch=epoch, steps_per_epoch=steps // num_replicas, verbose=verbose,
              shuffle=False, callbacks=[training_callbacks.RestoreMetrics(metric_state)]
              + callbacks, **validation)
    metric_state = None


def _save_interrupted(model, checkpoint, train_dir, write_dir, stop):
  """After StopOnSignal: a checkpoint of the last finished task and the epoch's metric
  accumulators, then the message that ends the binary. Every worker of a cluster saves (the
  chief into train_dir, the others into their scratch folders, as at an epoch's end). A stop
  during an epoch's validation keeps the last checkpoint instead: Keras has reset the epoch's
  training metrics for it, so no checkpoint could resume its history line exactly."""
  step = int(model.tasks_seen.numpy())
  checkpoints_dir = os.path.join(train_dir, 'checkpoints')
  if stop.during_validation:
    present = checkpoints.checkpoint_files(checkpoints_dir)
    start = f'task {present[-1][0]}' if present else 'the start'
    message = (f'stopped while validating after task {step}; run the same command to resume '
               f'from its last checkpoint ({start})')
  else:
    directory = os.path.join(write_dir, 'checkpoints')
    atomic.check_free_space(directory, training_callbacks.weights_bytes(checkpoint.variables),
                            f'checkpoint {step}')
    training_callbacks.save_metric_state(model, directory, step)
    checkpoint.save(step)
    logging.info('interrupted at task %d: checkpoint written to %s', step, directory)
    message = (f'interrupted at step {step}; checkpoint saved in {checkpoints_dir}: run the '
               'same command to resume')
  if stop.by_peer:
    raise interrupt.Interrupted(f'another worker was interrupted: {message} (on every worker)',
                                130)
  interrupt.check(message)


def _check_replicas(num_replicas, steps_per_log, valid_episodes):
  for name, value in (('steps_per_log', steps_per_log), ('valid_episodes', valid_episodes)):
    if value % num_replicas:
      raise ValueError(f'run_training.{name}={value} must be a multiple of the '
                       f'{num_replicas} replicas of --distribution (a step takes one task '
                       'per replica)')


def _train(train_dir, write_dir, learner, episode_source, num_steps, steps_per_log,
           valid_episodes, test_episodes, max_checkpoints, callbacks, verbose):
  """run_training's work. `write_dir` is train_dir on the chief (or a single process) and a
  scratch folder on the other workers of a cluster, which read the chief's checkpoints from
  train_dir and write nothing else."""
  strategy = tf.distribute.get_strategy()
  num_replicas = strategy.num_replicas_in_sync
  chief = distribute.is_chief(strategy)
  if getattr(learner, 'backbone_pretrained', True) is False:
    _warn_random_backbone(learner)
  image_size = getattr(learner, 'image_size', None)
  method = train_method()
  train_source = adapters.make_episode_source(episode_source, 'train')
  if method == 'small_task':
    train_source = adapters.SmallTaskEpisodes(train_source)
  first = in_memory.episode_from_dict(
      train_source.episode(0) if hasattr(train_source, 'episode')
      else next(iter(train_source.episodes())))
  episode_lib.validate_episode(first, image_size=image_size)
  if not isinstance(learner, learner_base.Learner) and precision.current() != 'float32':
    raise ValueError(f"precision.policy={precision.current()!r}: mixed precision covers the "
                     f'LITE learners (ProtoNets, CNAPs, Simple CNAPs); {type(learner).__name__} '
                     "runs its own inner loop in float32 only (precision.policy = 'float32')")
  if isinstance(learner, learner_base.Learner):
    # Builds every layer, so that weights exist before training and saving.
    with learner.unpooled():
      learner(episode_lib.building_episode(first).to_dict())

  model = lite_model.make_meta_model(learner, exact=method != 'lite')
  model.compile(optimizer=lite_model.make_optimizer(), jit_compile=False)
  model.optimizer.build(learner.trainable_variables)
  if chief:
    _check_same_run(train_dir)
  if getattr(model, 'memory_budget_mb', None) is not None:
    _fit_memory_budget(model, method, first, train_dir)
  del first  # not held through training (150 MB of uint8 images at N = 1000, S = 224)

  checkpoint = checkpoints.TrainingCheckpoint(
      model, os.path.join(write_dir, 'checkpoints'), max_to_keep=max_checkpoints,
      read_directory=os.path.join(train_dir, 'checkpoints'))
  restored = checkpoint.restore_latest()
  step = int(model.tasks_seen.numpy())
  distribute.check_same_on_workers(strategy, step, 'the task to resume from')
  if restored:
    logging.info('resuming from %s at task %d', restored, step)
  # A checkpoint inside an epoch is an interrupted run's (SIGINT / SIGTERM): its metric
  # accumulators were kept beside it, and the epoch is finished first.
  metric_state = None
  if step % steps_per_log:
    metric_state = training_callbacks.load_metric_state(
        model, os.path.join(train_dir, 'checkpoints'), step)
    if metric_state is None:
      raise ValueError(f'the checkpoint in {train_dir} is at task {step}, not a multiple of '
                       f'run_training.steps_per_log={steps_per_log}; keep the value of the run '
                       'that wrote it')
  # Only now that the checkpoints (if any) are known to belong to this configuration: a
  # refused run keeps the operative config the checkpoints were written with.
  atomic.write_text(os.path.join(write_dir, 'operative_config.gin'), gin.operative_config_str())
  _warn_partial_steps(num_steps, steps_per_log)

  # With R replicas a Keras step takes R tasks (one per replica); num_steps, steps_per_log and
  # valid_episodes count tasks, as on one device.
  validation = {}
  if valid_episodes:
    valid_source = adapters.make_episode_source(episode_source, 'valid')
    validation = dict(validation_data=distribute.replica_episodes(
        strategy, valid_source, num_episodes=valid_episodes),
                      validation_steps=valid_episodes // num_replicas)
  if verbose == 'auto':
    verbose = 1 if sys.stdout.isatty() else 2  # a live bar on a terminal, a line per log in files
  epochs = max(1, num_steps // steps_per_log)
  log_dir = os.path.join(write_dir, 'tensorboard')
  all_callbacks = [
      keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False),
      training_callbacks.ExtraSummaries(log_dir, tasks_per_step=num_replicas),
  ] + list(callbacks) + [
      # Last: everything above is done before the checkpoint marks the epoch as done.
      training_callbacks.EpochCheckpoint(checkpoint, os.path.join(write_dir, 'history.jsonl')),
  ]
  if chief:
    all_callbacks.insert(0, training_callbacks.BestCheckpoint(
        learner, os.path.join(train_dir, 'best')))
  all_callbacks.append(training_callbacks.StopOnSignal(strategy))
  interrupt.check(f'stopped before training (at task {step}); run the same command to '
                  'start it')
  with interrupt.deferred():
    try:
      _fit(model, strategy, train_source, step, steps_per_log, epochs, metric_state,
           all_callbacks, validation, verbose)
    except training_callbacks.StopRequested as stop:
      _save_interrupted(model, checkpoint, train_dir, write_dir, stop)
  if not chief:
    logging.info('%s: training done; the chief writes the weights and evaluates',
                 distribute.worker_name(strategy))
    return {'chief': False, 'resumed_from_step': step if restored else None}
  atomic.check_free_space(train_dir, training_callbacks.weights_bytes(learner.weights),
                          'the final learner weights')
  with atomic.atomic_path(os.path.join(train_dir, 'learner.weights.h5'),
                          suffix='.weights.h5') as tmp:
    learner.save_weights(tmp)

  with interrupt.deferred():
    mean, half_width, _, seconds = evaluate.evaluate_episodes(
        model.predict_episode, adapters.make_episode_source(episode_source, 'test').episodes(),
        test_episodes, stop_message='evaluation stopped; training is finished and its '
        'weights are saved: run the same command to evaluate', label='test episodes')
  logging.info('test accuracy %.4f +/- %.4f over %d episodes', mean, half_width, test_episodes)
  cost = evaluate.test_time_cost(learner)
  cost['seconds_per_task'] = evaluate.median_seconds(seconds)
  logging.info('test-time cost per task: %s', cost)
  history = training_callbacks.read_history(os.path.join(train_dir, 'history.jsonl'))
  atomic.write_json(os.path.join(train_dir, 'test_results.json'), {
      'test_accuracy': mean, 'test_ci95': half_width, 'num_test_episodes': test_episodes,
      'test_time_cost': cost, 'num_steps': num_steps})
  return {'chief': True, 'test_accuracy': mean, 'test_ci95': half_width, 'history': history,
          'num_test_episodes': test_episodes, 'test_time_cost': cost,
          'resumed_from_step': step if restored else None}
