"""LiteModel under model.fit: gradient steps, task accumulation, errors."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from lite_tf.episode import Episode
from lite_tf.learners.protonets import ProtoNets
from lite_tf.lite import estimator
from lite_tf.lite import model as lite_model


def _episode_dict(seed, num_support=6, num_query=4, size=16, way=3):
  rng = np.random.RandomState(seed)
  return Episode.from_numpy(rng.uniform(-1, 1, (num_support, size, size, 3)),
                            np.arange(num_support) % way,
                            rng.uniform(-1, 1, (num_query, size, size, 3)),
                            np.arange(num_query) % way, way).to_dict()


def _dataset(dicts):
  return tf.data.Dataset.from_tensor_slices(
      {k: tf.stack([d[k] for d in dicts]) for k in dicts[0]})


def _fresh_learner(seed=0):
  keras.utils.set_random_seed(seed)
  learner = ProtoNets(backbone='conv4', image_size=16)
  learner(_episode_dict(99))
  return learner


def _lite_gradient_by_hand(learner, episode_dict, num_backprop, query_batch_size, seed):
  """LITE's gradient of one task written out from the paper's Eq. 6, independently of the
  estimator's machinery (no scale_gradient, no scatter, no chunking): per query batch b, with
  the library's subset H_b, share_b * (query-path gradient + N/|H| * VJP of the H_b
  contributions with dL/de at the full forward value)."""
  episode = Episode.from_dict(episode_dict)
  variables = learner.trainable_variables
  support = episode.support_images
  n, num_query = int(support.shape[0]), int(episode.query_images.shape[0])
  contributions = learner.support_contributions(support)  # values, no tape
  total = [tf.zeros_like(v) for v in variables]
  for b, start in enumerate(range(0, num_query, query_batch_size)):
    chosen, _ = estimator.sample_backprop_indices(
        tf.random.experimental.stateless_fold_in(tf.constant(seed, tf.int64),
                                                 tf.constant(b, tf.int64)), n,
        num_backprop)
    chosen = chosen.numpy()
    h = len(chosen)
    queries = episode.query_images[start:start + query_batch_size]
    labels = episode.query_labels[start:start + query_batch_size]
    share = int(queries.shape[0]) / num_query
    with tf.GradientTape(persistent=True) as tape:
      tape.watch(contributions)
      task = learner.adapt(contributions, episode.support_labels, episode.way)
      loss = share * tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels=tf.cast(labels, tf.int32), logits=learner.query_logits(task, queries)))
    query_path = tape.gradient(loss, variables)
    d_contributions = tape.gradient(loss, contributions)
    with tf.GradientTape() as tape:
      chosen_rows = learner.support_contributions(tf.gather(support, chosen))
    support_path = tape.gradient(chosen_rows, variables,
                                 output_gradients=tf.gather(d_contributions, chosen))
    total = [t + (0 if q is None else q) + (n / h) * (0 if s is None else s)
             for t, q, s in zip(total, query_path, support_path)]
  return total


@pytest.mark.parametrize('tasks_per_step,num_backprop', [(1, 100), (2, 100), (1, 2), (2, 2)])
def test_fit_takes_one_sgd_step_on_the_mean_lite_gradient(tasks_per_step, num_backprop):
  """One SGD step under fit moves the weights by -lr times the mean over tasks_per_step tasks
  of LITE's gradient: N/|H| scaling, query shares of unequal batches (7 = 3 + 3 + 1) and task
  averaging all show in the step (SGD keeps the gradient's scale; Adam's first step would be
  nearly a sign step). num_backprop=100 >= N is exact back-propagation, checked against the
  full gradient too. regularizer_accounting='per_task' weights the batches by their shares
  (the default 'reference' sums their means, tests/test_loss_accounting.py)."""
  lr, seed = 0.5, 3
  episodes = [_episode_dict(s, num_support=6, num_query=7) for s in range(tasks_per_step)]
  reference = _fresh_learner()
  grads = [_lite_gradient_by_hand(reference, e, num_backprop, 3, (seed, t))
           for t, e in enumerate(episodes)]
  if num_backprop >= 6:
    full = estimator.full_task_gradients(reference, Episode.from_dict(episodes[0]),
                                         reference.trainable_variables)[1]
    for a, b in zip(grads[0], full):
      np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)
  mean = [tf.add_n(gs) / len(gs) for gs in zip(*grads)]
  expected = [v.numpy() - lr * g.numpy() for v, g in zip(reference.trainable_variables, mean)]

  learner = _fresh_learner()
  model = lite_model.LiteModel(learner, num_backprop=num_backprop, chunk_size=4,
                               query_batch_size=3, seed=seed, regularizer_accounting='per_task')
  model.compile(optimizer=lite_model.make_optimizer(lr, tasks_per_step=tasks_per_step,
                                                    algorithm='sgd'), jit_compile=False)
  model.fit(_dataset(episodes), epochs=1, verbose=0, shuffle=False)
  assert int(model.tasks_seen.numpy()) == tasks_per_step
  step = max(float(np.abs(lr * g.numpy()).max()) for g in mean)
  assert step > 1e-3, 'the step is large enough to see'
  for got, want in zip(learner.trainable_variables, expected):
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4 * step)


def test_n_over_h_scaling_shows_in_the_step():
  """Without the N/|H| weight the support path would be |H|/N times too small: the by-hand
  gradient with the weight differs from the one without by far more than the tolerance
  above, so the SGD test can see a missing or wrong scale."""
  learner = _fresh_learner()
  episode = _episode_dict(0, num_support=6, num_query=7)
  weighted = _lite_gradient_by_hand(learner, episode, 2, 3, (3, 0))
  exact = _lite_gradient_by_hand(learner, episode, 100, 3, (3, 0))
  norm = np.sqrt(sum(np.sum(g.numpy() ** 2) for g in exact))
  difference = np.sqrt(sum(np.sum((a.numpy() - b.numpy()) ** 2)
                           for a, b in zip(weighted, exact)))
  assert difference > 1e-2 * norm


def test_make_optimizer_rejects_an_unknown_algorithm():
  with pytest.raises(ValueError, match='make_optimizer.algorithm'):
    lite_model.make_optimizer(algorithm='rmsprop')


def test_fit_reduces_training_loss():
  learner = _fresh_learner()
  model = lite_model.LiteModel(learner, num_backprop=2, chunk_size=2, query_batch_size=2)
  model.compile(optimizer=lite_model.make_optimizer(3e-3), jit_compile=False)
  data = _dataset([_episode_dict(0)]).repeat(40)
  history = model.fit(data, epochs=2, steps_per_epoch=20, verbose=0, shuffle=False)
  assert history.history['loss'][-1] < history.history['loss'][0]


@pytest.mark.parametrize('name,value,expected', [
    ('num_backprop', -3, 'an integer >= 0'), ('num_backprop', 2.5, 'an integer >= 0'),
    ('chunk_size', 0, 'a positive integer'), ('query_batch_size', 0, 'a positive integer')])
def test_bad_sizes_are_rejected(name, value, expected):
  with pytest.raises(ValueError, match=f'LiteModel.{name} must be {expected}'):
    lite_model.LiteModel(_fresh_learner(), **{name: value})


def test_zero_backprop_trains_protonets_through_the_query_path():
  learner = _fresh_learner()
  model = lite_model.LiteModel(learner, num_backprop=0, chunk_size=4, query_batch_size=4)
  model.compile(optimizer=lite_model.make_optimizer(algorithm='sgd', learning_rate=0.1),
                jit_compile=False)
  before = [v.numpy() for v in learner.trainable_variables]
  model.train_on_batch(_episode_dict(1))
  moved = [not np.allclose(b, v.numpy()) for b, v in zip(before, learner.trainable_variables)]
  assert any(moved)


def test_query_label_absent_from_support_fails_the_step():
  learner = _fresh_learner()
  model = lite_model.LiteModel(learner, num_backprop=2, chunk_size=2, query_batch_size=2)
  model.compile(optimizer=lite_model.make_optimizer(), jit_compile=False)
  bad = _episode_dict(0, num_support=4, num_query=4, way=3)
  bad['support_labels'] = tf.constant([0, 1, 0, 1], tf.int32)  # class 2 only in the query set
  with pytest.raises(tf.errors.InvalidArgumentError, match='does not occur in the support set'):
    model.fit(_dataset([bad]), epochs=1, verbose=0)


def test_make_optimizer_rejects_zero_tasks():
  with pytest.raises(ValueError, match='tasks_per_step'):
    lite_model.make_optimizer(tasks_per_step=0)


def test_fit_with_the_usual_keras_callbacks(tmp_path):
  """ModelCheckpoint, TensorBoard, EarlyStopping and BackupAndRestore work with LiteModel."""
  learner = _fresh_learner()
  model = lite_model.LiteModel(learner, num_backprop=2, chunk_size=2, query_batch_size=4)
  model.compile(optimizer=keras.optimizers.Adam(1e-3))
  data = _dataset([_episode_dict(s) for s in range(4)]).repeat()
  callbacks = [
      keras.callbacks.ModelCheckpoint(str(tmp_path / 'ckpt-{epoch}.weights.h5'),
                                      save_weights_only=True),
      keras.callbacks.TensorBoard(log_dir=str(tmp_path / 'tb')),
      keras.callbacks.EarlyStopping(monitor='loss', patience=100),
      keras.callbacks.BackupAndRestore(backup_dir=str(tmp_path / 'backup')),
  ]
  history = model.fit(data, epochs=2, steps_per_epoch=3, verbose=0, callbacks=callbacks)
  assert len(history.history['loss']) == 2
  assert (tmp_path / 'ckpt-2.weights.h5').exists() and os.listdir(tmp_path / 'tb')
  restored = lite_model.LiteModel(_fresh_learner(seed=5), num_backprop=2, chunk_size=2,
                                  query_batch_size=4)
  restored.compile(optimizer=keras.optimizers.Adam(1e-3))
  restored.fit(data, epochs=1, steps_per_epoch=1, verbose=0)  # builds optimizer variables
  restored.load_weights(str(tmp_path / 'ckpt-2.weights.h5'))
  for a, b in zip(model.learner.weights, restored.learner.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  assert int(restored.tasks_seen.numpy()) == 6


@pytest.mark.parametrize('side,num_backprop,clip,expected', [
    (224, 40, None, 8), (128, 40, None, None), (84, 40, None, None), (16, 40, None, None),
    (129, 40, None, 8), (224, 1, None, None), (84, 10, 8, None), (84, 20, 8, 8)])
def test_auto_recomputation_follows_the_back_propagated_pixels(side, num_backprop, clip,
                                                               expected):
  """lite.recompute_batch = 'auto' (the default): micro-batches of 8 once |H| (in images, clips
  counted in frames) times the image's pixels passes 40 images of 128x128, else none."""
  model = lite_model.LiteModel(_fresh_learner(), num_backprop=num_backprop,
                               backprop_clip_length=clip)
  assert model.recompute_batch == 'auto'
  assert model.resolved_recompute_batch(side) == expected
  assert model.resolved_recompute_batch(None) is None
  model.recompute_batch = 5  # set (or planned by lite.memory_budget_mb): taken as it is
  assert model.resolved_recompute_batch(side) == 5


def test_auto_recomputation_reaches_the_estimator(monkeypatch):
  """The step passes the resolved size to the estimator: 8 for a task of 224x224 images with
  |H| = 40, none for the same model on 16x16 images."""
  seen = []
  real = estimator.lite_task_gradients

  def spy(*args, **kwargs):
    seen.append(kwargs['recompute_batch'])
    return real(*args, **kwargs)

  monkeypatch.setattr(estimator, 'lite_task_gradients', spy)
  learner = _fresh_learner()
  model = lite_model.LiteModel(learner, num_backprop=40, chunk_size=4, query_batch_size=4)
  model.compile(optimizer=lite_model.make_optimizer(), jit_compile=False)
  model.task_gradients(Episode.from_dict(_episode_dict(0)), learner.trainable_variables, tf.constant([0, 0]))
  big = Episode.from_numpy(np.zeros((2, 224, 224, 3), np.float32), np.array([0, 1]),
                           np.zeros((1, 224, 224, 3), np.float32), np.array([0]), 2)
  spy_only = []
  monkeypatch.setattr(estimator, 'lite_task_gradients',
                      lambda *a, **k: spy_only.append(k['recompute_batch']))
  model.task_gradients(big, learner.trainable_variables, tf.constant([0, 0]))
  assert seen == [None] and spy_only == [8]


def test_recompute_batch_refuses_what_is_not_a_size():
  with pytest.raises(ValueError, match="lite.recompute_batch must be None, 'auto' or a "
                                       'positive integer'):
    lite_model.LiteModel(_fresh_learner(), recompute_batch='yes')
  with pytest.raises(ValueError, match="lite.recompute_batch must be None, 'auto'"):
    lite_model.LiteModel(_fresh_learner(), recompute_batch=0)


def test_auto_recomputation_leaves_exact_back_propagation_alone():
  """train_method 'small_task' / 'no_lite' back-propagate every support image (|H| = 2^30):
  'auto' does not recompute them, at any image size."""
  model = lite_model.make_meta_model(_fresh_learner(), exact=True)
  assert model.num_backprop == lite_model.EXACT_BACKPROP
  assert model.recompute_batch == 'auto'
  for side in (16, 84, 224):
    assert model.resolved_recompute_batch(side) is None
