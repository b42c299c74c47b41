"""LiteModel: a Keras model whose `train_step` meta-trains a learner with LITE under `fit`.

Each element of the training dataset is one episode (a dict, see lite_tf.episode). Gradients of
several tasks are averaged before one optimizer (Adam) step by the optimizer's
`gradient_accumulation_steps` (see `make_optimizer`'s `tasks_per_step`).
"""

import gin
import keras
import tensorflow as tf

from lite_tf import checks
from lite_tf import episode as episode_lib
from lite_tf import precision
from lite_tf.learners import base as learner_base
from lite_tf.lite import estimator
from lite_tf.lite import fused_adam


def _unpack(data):
  """fit() passes a dataset element as is; train_on_batch() passes (x, y, sample_weight)."""
  return data[0] if isinstance(data, (tuple, list)) else data


@gin.configurable
def make_optimizer(learning_rate=1e-3, tasks_per_step=1, algorithm='adam', fused=True):
  """The meta-optimizer: one step per `tasks_per_step` tasks, on the mean of their gradients.

  Args:
    algorithm: 'adam' (the paper's) or 'sgd' (plain gradient descent, e.g. to see gradient
      scale).
    fused: Adam's update as one ResourceApplyAdam op per variable (lite_tf.lite.fused_adam:
      the same update as keras.optimizers.Adam, with some 6,000 fewer ops in a traced
      EfficientNet-B0 step); False: keras.optimizers.Adam itself.
  """
  if not isinstance(tasks_per_step, int) or tasks_per_step < 1:
    raise ValueError(f'make_optimizer.tasks_per_step must be an integer >= 1; got '
                     f'{tasks_per_step!r}')
  if (isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float))
      or not learning_rate > 0):
    raise ValueError(f'make_optimizer.learning_rate must be a number > 0; got '
                     f'{learning_rate!r}')
  if tasks_per_step > 1 and tf.distribute.get_strategy().num_replicas_in_sync > 1:
    raise ValueError(
        f'make_optimizer.tasks_per_step={tasks_per_step} accumulates tasks on one device; '
        f'with --distribution the {tf.distribute.get_strategy().num_replicas_in_sync} '
        'replicas are the accumulation (a step takes one task per replica, gradients '
        'averaged): set make_optimizer.tasks_per_step = 1')
  if not isinstance(fused, bool):
    raise ValueError(f'make_optimizer.fused must be True or False; got {fused!r}')
  optimizers = {'adam': fused_adam.FusedAdam if fused else keras.optimizers.Adam,
                'sgd': keras.optimizers.SGD}
  if algorithm not in optimizers:
    raise ValueError(f'make_optimizer.algorithm must be one of {sorted(optimizers)}; got '
                     f'{algorithm!r}')
  return precision.wrap_optimizer(optimizers[algorithm](
      learning_rate=learning_rate,
      gradient_accumulation_steps=tasks_per_step if tasks_per_step > 1 else None))


class EpisodicModel(keras.Model):
  """Meta-trains a learner under `fit`: one episode per step; subclasses say how a task's
  gradients are computed (`task_gradients`) and how a task is solved (`predict_episode`)."""

  def __init__(self, learner, seed=0, **kwargs):
    super().__init__(**kwargs)
    self.learner = learner
    self.seed = seed
    # Under tf.distribute every replica adds the same count; only the first replica's applies.
    self.tasks_seen = keras.Variable(0, dtype='int64', trainable=False, name='tasks_seen',
                                     aggregation='only_first_replica')
    self.loss_tracker = keras.metrics.Mean(name='loss')
    self.accuracy_tracker = keras.metrics.Mean(name='accuracy')
    self.way_tracker = keras.metrics.Mean(name='way')
    self.support_size_tracker = keras.metrics.Mean(name='support_size')
    # All weights live in the learner (built by its constructor or a first call) and in
    # tasks_seen; marking the model built lets Keras callbacks (BackupAndRestore) save it.
    self.built = True

  @property
  def metrics(self):
    return [self.loss_tracker, self.accuracy_tracker, self.way_tracker,
            self.support_size_tracker]

  def call(self, inputs, training=False):
    return self.predict_episode(episode_lib.Episode.from_dict(inputs))

  def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    """Under MultiWorkerMirroredStrategy Keras' TF trainer builds the model from one element
    of the training iterator reduced across workers, and a dict of episode tensors cannot be
    reduced there. Nothing needs that build when every layer is built (run_training calls the
    learner first; the model compiles no loss or metrics): only the optimizer is built here."""
    strategy = getattr(self, '_distribute_strategy', None)
    if strategy is not None and _multi_worker(strategy) and all(
        layer.built for layer in self._flatten_layers()):
      if self.optimizer is not None and not self.optimizer.built:
        with strategy.scope():
          self.optimizer.build(self.learner.trainable_variables)
      return
    super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

  def task_gradients(self, episode, variables, seed, loss_scale=None):
    """(loss, gradients, predictions) of one task; the gradients times loss_scale when it
    is given (float16 loss scaling)."""
    raise NotImplementedError

  def predict_episode(self, episode):
    raise NotImplementedError

  def train_step(self, data):
    """One task per replica. Under tf.distribute (MirroredStrategy and friends) replica r of
    R takes task tasks_seen + r, its gradients are divided by R and the optimizer's all-reduce
    sums them: one step on R replicas equals R accumulated tasks on one device."""
    episode = episode_lib.Episode.from_dict(_unpack(data))
    replica = tf.distribute.get_replica_context()
    num_replicas = replica.num_replicas_in_sync if replica else 1
    replica_id = tf.cast(replica.replica_id_in_sync_group if replica else 0, tf.int64)
    with tf.control_dependencies(episode_lib.episode_assertions(episode)):
      seed = tf.stack([tf.constant(self.seed, tf.int64),
                       tf.identity(self.tasks_seen.value) + replica_id])
    variables = self.learner.trainable_variables
    loss, grads, predictions = self.task_gradients(episode, variables, seed,
                                                   precision.loss_scale(self.optimizer))
    if num_replicas > 1:
      grads = [g / num_replicas for g in grads]
    self.optimizer.apply_gradients(zip(grads, variables))
    self.tasks_seen.assign_add(num_replicas)
    return self._update_metrics(loss, predictions, episode)

  def test_step(self, data):
    episode = episode_lib.Episode.from_dict(_unpack(data))
    logits = self.predict_episode(episode)
    loss = learner_base.mean_cross_entropy(logits, episode.query_labels)
    predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return self._update_metrics(loss, predictions, episode)

  def _update_metrics(self, loss, predictions, episode):
    labels = episode.query_labels
    self.way_tracker.update_state(tf.cast(episode.way, tf.float32))
    self.support_size_tracker.update_state(tf.cast(tf.shape(episode.support_labels)[0],
                                                   tf.float32))
    self.loss_tracker.update_state(loss)
    self.accuracy_tracker.update_state(
        tf.reduce_mean(tf.cast(tf.equal(predictions, tf.cast(labels, tf.int32)), tf.float32)))
    results = {m.name: m.result() for m in self.metrics}
    if _multi_worker(tf.distribute.get_strategy()):
      # Keras reduces a multi-worker step's outputs with a mean over axis 0 (all workers'
      # values side by side): a scalar has no axis 0, a [1] vector reduces to the scalar.
      results = {k: tf.reshape(v, [1]) for k, v in results.items()}
    return results


def _multi_worker(strategy):
  return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
          and strategy.extended._in_multi_worker_mode())  # pylint: disable=protected-access


REGULARIZER_ACCOUNTING = estimator.LOSS_ACCOUNTINGS


# lite.recompute_batch = 'auto': recompute in micro-batches of 8 images when a task's
# back-propagated images hold more than 40 images of 128x128 in pixels. EfficientNet-B0 with
# FiLM keeps about 60 MB of activations per image at 224x224 and the set encoder about 50 MB
# (|H| = 40: some 4 GB, against 0.8 GB in micro-batches of 8, for little more time per step
# at 224); at 84x84 it is 7x less, and recomputing would cost more of a shorter step
# (docs/TRAINING.md "Recomputation").
AUTO_RECOMPUTE_BATCH = 8
AUTO_RECOMPUTE_PIXELS = 40 * 128 * 128


class LiteModel(EpisodicModel):
  """Meta-trains a lite_tf.learners.base.Learner with LITE.

  Args:
    learner: a lite_tf.learners.base.Learner.
    num_backprop: |H|, support examples back-propagated per query batch (H >= N is exact;
      0 back-propagates the query path only, which carries every parameter of ProtoNets).
    chunk_size: support examples per chunk of the gradient-free forward pass.
    query_batch_size: query examples per batch; gradients are accumulated over batches.
    seed: base seed of the subset draws; draw t of a run uses (seed, t), so runs repeat exactly.
    recompute_batch: None, a micro-batch size for recomputing the activations of the
      back-propagated images in the backward pass (see estimator.recomputed_rows), or 'auto'
      (default): micro-batches of AUTO_RECOMPUTE_BATCH when a task's back-propagated images
      hold more than AUTO_RECOMPUTE_PIXELS pixels (|H| = 40 at 224x224: on; at 84x84 or
      128x128: off), none otherwise, with TaskNorm-I or for exact back-propagation
      (resolved_recompute_batch).
    recompute_mode: 'loop' (default: one while-loop per pass over the micro-batches: far less
      tracing and host memory, docs/BENCHMARKS.md) or 'unrolled' (a tf.recompute_grad per
      micro-batch, unrolled in Python; the default before issue #31). Both are exact.
    context_subset: 'independent' (default: unbiased set-encoder gradient) or 'shared' (the
      paper's code), see estimator.lite_task_gradients.
    regularizer_accounting: how a task's loss is formed over its B query batches
      (estimator.LOSS_ACCOUNTINGS). 'reference' (default): the reference codes' loss exactly,
      per task sum_b CE_b / T + B * 0.001 * R for T tasks per step (each batch's mean
      cross-entropy and the FiLM penalty, summed over batches; the penalty not divided by
      the tasks of a step). 'per_task': the mean query cross-entropy plus the penalty once,
      averaged over tasks like the query loss.
    support_scaling: the weight of LITE's subset path (estimator.SUPPORT_SCALINGS). 'paper'
      (default): the gradient of H's contributions times N/|H| (Eq. 8), an unbiased estimate
      of the full gradient. 'none': unscaled, as cambridge-mlg/LITE. 'orbit': every query
      batch's cross-entropy times N/|H|, query path included, as ORBIT's LITE trainer.
    backprop_clip_length: None (H is num_backprop images) or L: the support set is clips of L
      contiguous images (ORBIT episodes) and H is num_backprop whole clips.
    memory_budget_mb: None, or the TF allocator peak (MB) a training step must stay within:
      bin/train.py then calibrates the step and sets |H|, chunk, query batch and
      recomputation to fit (lite_tf.lite.memory_plan), num_backprop, chunk_size and
      query_batch_size being the largest values it may choose.
    memory_plan_support_size, memory_plan_query_size: the largest task the plan must fit.
    memory_plan_margin: the share of the budget the plan leaves free (the peak of one step
      varies by up to ~10% from call to call on CPU).
  """

  def __init__(self, learner, num_backprop=40, chunk_size=40, query_batch_size=40, seed=0,
               recompute_batch='auto', context_subset='independent',
               regularizer_accounting='reference', backprop_clip_length=None,
               memory_budget_mb=None, memory_plan_support_size=1000,
               memory_plan_query_size=500, memory_plan_margin=0.1, recompute_mode='loop',
               support_scaling='paper', **kwargs):
    if isinstance(num_backprop, bool) or not isinstance(num_backprop, int) or num_backprop < 0:
      raise ValueError(f'LiteModel.num_backprop must be an integer >= 0 (0: the query path '
                       f'only, for ProtoNets); got {num_backprop!r}')
    for name, value in (('chunk_size', chunk_size), ('query_batch_size', query_batch_size)):
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f'LiteModel.{name} must be a positive integer; got {value!r}')
    super().__init__(learner, seed=seed, **kwargs)
    # Grappler's options for the functions this thread calls (Keras' train function among
    # them), set again where each step is traced (estimator.lite_task_objective).
    estimator.disable_grappler_add_rewrite()
    self.num_backprop = num_backprop
    self.chunk_size = chunk_size
    self.query_batch_size = query_batch_size
    if recompute_batch not in (None, 'auto') and (
        isinstance(recompute_batch, bool) or not isinstance(recompute_batch, int)
        or recompute_batch <= 0):
      raise ValueError(f"lite.recompute_batch must be None, 'auto' or a positive integer; got "
                       f'{recompute_batch!r}')
    self.recompute_batch = recompute_batch
    if recompute_mode not in estimator.RECOMPUTE_MODES:
      raise ValueError(f'lite.recompute_mode must be one of {list(estimator.RECOMPUTE_MODES)}; '
                       f'got {recompute_mode!r}')
    self.recompute_mode = recompute_mode
    if context_subset not in estimator.CONTEXT_SUBSETS:
      raise ValueError(f'lite.context_subset must be one of {list(estimator.CONTEXT_SUBSETS)}; '
                       f'got {context_subset!r}')
    self.context_subset = context_subset
    if regularizer_accounting not in REGULARIZER_ACCOUNTING:
      raise ValueError(f'lite.regularizer_accounting must be one of '
                       f'{list(REGULARIZER_ACCOUNTING)}; got {regularizer_accounting!r}')
    self.regularizer_accounting = regularizer_accounting
    if support_scaling not in estimator.SUPPORT_SCALINGS:
      raise ValueError(f'lite.support_scaling must be one of '
                       f'{list(estimator.SUPPORT_SCALINGS)}; got {support_scaling!r}')
    self.support_scaling = support_scaling
    if backprop_clip_length is not None and (isinstance(backprop_clip_length, bool) or
                                             not isinstance(backprop_clip_length, int) or
                                             backprop_clip_length < 1):
      raise ValueError(f'lite.backprop_clip_length must be None or an integer >= 1; got '
                       f'{backprop_clip_length!r}')
    self.backprop_clip_length = backprop_clip_length
    self.memory_budget_mb = memory_budget_mb
    checks.require_int('lite.memory_plan_support_size', memory_plan_support_size, 1)
    checks.require_int('lite.memory_plan_query_size', memory_plan_query_size, 1)
    self.memory_plan_support_size = memory_plan_support_size
    self.memory_plan_query_size = memory_plan_query_size
    if not (isinstance(memory_plan_margin, (int, float)) and 0 <= memory_plan_margin < 1):
      raise ValueError(f'lite.memory_plan_margin must be a number in [0, 1); got '
                       f'{memory_plan_margin!r}')
    self.memory_plan_margin = memory_plan_margin

  def _regularizer_scale(self):
    """'reference': the reference codes add the penalty to every query batch's loss and do
    not divide it by the tasks of an optimizer step (their cross-entropy is divided by it);
    the optimizer here averages the tasks' gradients (accumulation, replicas), so the penalty
    is multiplied back by their number.
    'per_task': once per task, averaged with the tasks like the query loss."""
    if self.regularizer_accounting == 'per_task':
      return 1.0
    steps = getattr(precision.inner_optimizer(self.optimizer), 'gradient_accumulation_steps',
                    None) or 1
    replica = tf.distribute.get_replica_context()
    return float(steps * (replica.num_replicas_in_sync if replica else 1))

  def requested_recompute_batch(self):
    """recompute_batch when it is a size, else None ('auto' or None): the micro-batch the
    memory planner calibrates, if one was asked for."""
    return self.recompute_batch if isinstance(self.recompute_batch, int) else None

  def resolved_recompute_batch(self, image_side):
    """The micro-batch size a step on images of `image_side` recomputes in (None: none):
    recompute_batch, or with 'auto' AUTO_RECOMPUTE_BATCH when |H| (in images) times the
    image's pixels exceeds AUTO_RECOMPUTE_PIXELS (never with TaskNorm-I, which needs H in one
    call, for exact back-propagation, nor for an image side unknown when tracing)."""
    if self.recompute_batch != 'auto':
      return self.recompute_batch
    if (image_side is None or self.learner.uses_task_norm_i()
        or self.num_backprop >= EXACT_BACKPROP):
      # Exact back-propagation (train_method 'small_task' / 'no_lite': |H| is every support
      # image, however many) is left as it is: recomputing there is asked for by a size.
      return None
    rows = self.num_backprop * (self.backprop_clip_length or 1)
    return AUTO_RECOMPUTE_BATCH if rows * image_side ** 2 > AUTO_RECOMPUTE_PIXELS else None

  def task_gradients(self, episode, variables, seed, loss_scale=None):
    return estimator.lite_task_gradients(
        self.learner, episode, variables, self.num_backprop, self.chunk_size,
        self.query_batch_size, seed=seed,
        recompute_batch=self.resolved_recompute_batch(episode.support_images.shape[1]),
        context_subset=self.context_subset, regularizer_scale=self._regularizer_scale(),
        loss_accounting=self.regularizer_accounting, support_scaling=self.support_scaling,
        backprop_clip_length=self.backprop_clip_length, loss_scale=loss_scale,
        recompute_mode=self.recompute_mode)

  def with_step(self, num_backprop, chunk_size, query_batch_size, recompute_batch):
    """A LiteModel on the same learner and optimizer with another |H|, chunk, query batch
    and recomputation, the subset, accounting, scaling and recomputation options the same (the
    memory planner's probe steps; H there is images, not clips)."""
    sibling = LiteModel(self.learner, num_backprop=num_backprop, chunk_size=chunk_size,
                        query_batch_size=query_batch_size, seed=self.seed,
                        recompute_batch=recompute_batch, context_subset=self.context_subset,
                        regularizer_accounting=self.regularizer_accounting,
                        recompute_mode=self.recompute_mode,
                        support_scaling=self.support_scaling)
    sibling.optimizer = self.optimizer
    return sibling

  def predict_episode(self, episode):
    return estimator.adapt_and_predict(self.learner, episode, self.chunk_size,
                                       self.query_batch_size)


class SelfAdaptingModel(EpisodicModel):
  """For learners that compute their own task gradients and predictions (MAML, FineTuner):
  `learner.task_gradients(episode)` and `learner.predict_episode(episode)`."""

  def task_gradients(self, episode, variables, seed, loss_scale=None):
    del variables  # the learner differentiates its own trainable_variables
    loss, grads, predictions = self.learner.task_gradients(episode, seed)
    if loss_scale is not None:  # scaled after the fact: the optimizer divides by the scale
      grads = [g * tf.cast(loss_scale, g.dtype) for g in grads]
    return loss, grads, predictions

  def predict_episode(self, episode):
    return self.learner.predict_episode(episode)


@gin.configurable('lite')
def make_lite_model(learner, num_backprop=40, chunk_size=40, query_batch_size=40, seed=0,
                    recompute_batch='auto', context_subset='independent',
                    regularizer_accounting='reference', backprop_clip_length=None,
                    memory_budget_mb=None, memory_plan_support_size=1000,
                    memory_plan_query_size=500, memory_plan_margin=0.1,
                    recompute_mode='loop', support_scaling='paper'):
  """gin constructor of LiteModel: `lite.num_backprop = 40` and friends."""
  return LiteModel(learner, num_backprop=num_backprop, chunk_size=chunk_size,
                   query_batch_size=query_batch_size, seed=seed,
                   recompute_batch=recompute_batch, context_subset=context_subset,
                   regularizer_accounting=regularizer_accounting,
                   backprop_clip_length=backprop_clip_length,
                   memory_budget_mb=memory_budget_mb,
                   memory_plan_support_size=memory_plan_support_size,
                   memory_plan_query_size=memory_plan_query_size,
                   memory_plan_margin=memory_plan_margin, recompute_mode=recompute_mode,
                   support_scaling=support_scaling)


# num_backprop of exact back-propagation: every support image, whatever N.
EXACT_BACKPROP = 2**30


def make_meta_model(learner, exact=False):
  """LiteModel for LITE learners (lite_tf.learners.base.Learner), else SelfAdaptingModel.
  exact=True back-propagates the whole support set (train_method 'small_task', 'no_lite')."""
  if isinstance(learner, learner_base.Learner):
    overrides = {'num_backprop': EXACT_BACKPROP} if exact else {}
    return make_lite_model(learner, **overrides)
  if not (hasattr(learner, 'task_gradients') and hasattr(learner, 'predict_episode')):
    raise ValueError(f'{type(learner).__name__} is neither a lite_tf Learner nor a learner '
                     'with task_gradients() and predict_episode()')
  return SelfAdaptingModel(learner)
