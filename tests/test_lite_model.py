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


@pytest.mark.parametrize('tasks_per_step', [1, 2])
def test_fit_takes_one_adam_step_on_mean_task_gradient(tasks_per_step):
  episodes = [_episode_dict(s) for s in range(tasks_per_step)]
  reference = _fresh_learner()
  grads = []
  for e in episodes:
    _, g, _ = estimator.full_task_gradients(reference, Episode.from_dict(e),
                                            reference.trainable_variables)
    grads.append(g)
  mean = [tf.add_n(gs) / len(gs) for gs in zip(*grads)]
  optimizer = keras.optimizers.Adam(1e-2)
  optimizer.apply_gradients(zip(mean, reference.trainable_variables))

  learner = _fresh_learner()
  model = lite_model.LiteModel(learner, num_backprop=100, chunk_size=4, query_batch_size=3)
  model.compile(optimizer=lite_model.make_optimizer(1e-2, tasks_per_step=tasks_per_step),
                jit_compile=False)
  model.fit(_dataset(episodes), epochs=1, verbose=0, shuffle=False)
  # Adam's first step is lr * g / (|g| + eps): elementwise it amplifies float32 rounding where
  # g is near zero, so compare where the mean gradient is well away from zero.
  compared = 0
  for got, want, g in zip(learner.trainable_variables, reference.trainable_variables, mean):
    significant = np.abs(g.numpy()) > 1e-5
    compared += significant.sum()
    np.testing.assert_allclose(got.numpy()[significant], want.numpy()[significant], atol=1e-6)

  assert compared > 0.2 * sum(int(np.prod(v.shape)) for v in learner.trainable_variables)
  assert int(model.tasks_seen.numpy()) == tasks_per_step
  moved = [np.abs(v.numpy() - w.numpy()).max()
           for v, w in zip(learner.trainable_variables, _fresh_learner().trainable_variables)]
  assert max(moved) > 1e-3, 'the step changed the weights'


def test_fit_reduces_training_loss():
  learner = _fresh_learner()
  model = lite_model.LiteModel(learner, num_backprop=2, chunk_size=2, query_batch_size=2)
  model.compile(optimizer=lite_model.make_optimizer(3e-3), jit_compile=False)
  data = _dataset([_episode_dict(0)]).repeat(40)
  history = model.fit(data, epochs=2, steps_per_epoch=20, verbose=0, shuffle=False)
  assert history.history['loss'][-1] < history.history['loss'][0]


@pytest.mark.parametrize('name,value', [('num_backprop', 0), ('num_backprop', -3),
                                        ('chunk_size', 0), ('query_batch_size', 0)])
def test_non_positive_sizes_are_rejected(name, value):
  with pytest.raises(ValueError, match=f'LiteModel.{name} must be a positive integer'):
    lite_model.LiteModel(_fresh_learner(), **{name: value})


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
