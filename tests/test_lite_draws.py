"""LITE's seeded draws themselves: H (the back-propagated contributions) and H_c (the set
encoder's back-propagated rows, context_subset='independent') are each uniform over the
subsets of their size, independent of each other, and the ones a LITE step actually
back-propagates. The unbiasedness tests pass their subsets explicitly; these tests catch a
sampler that quietly reuses H for H_c ('shared' in disguise) or draws unevenly."""

import itertools
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from lite_tf.episode import Episode
from lite_tf.learners import simple_cnaps
from lite_tf.lite import estimator

N, H = 6, 2
SUBSETS = list(itertools.combinations(range(N), H))  # 15
DRAWS = 3000
# 99.9% quantiles of Pearson's chi-square: 14 degrees of freedom (one subset's 15 cells) and
# 196 (independence in the 15 x 15 table of (H, H_c)).
CHI2_14, CHI2_196 = 36.12, 265.0


def _task(context_subset='independent', seed=(0, 0)):
  """The fields of estimator._LiteTask that the draws read."""
  return types.SimpleNamespace(
      no_support_path=False, backprop_indices=None, context_indices=None,
      backprop_clip_length=None, n=N, num_backprop=H, context_subset=context_subset,
      seed=tf.cast(tf.convert_to_tensor(seed), tf.int64))


def _index(indices):
  return SUBSETS.index(tuple(sorted(np.asarray(indices).tolist())))


@pytest.fixture(scope='module')
def draws():
  """(H index, H_c index) into SUBSETS for DRAWS seeds, query batch 0, and for batch 1."""
  @tf.function
  def pair(seed, b):
    task = _task(seed=seed)
    chosen, rest = estimator._backprop_subset(task, b)  # pylint: disable=protected-access
    return chosen, rest, estimator._context_subset(task, b, chosen)  # pylint: disable=protected-access

  out = {0: [], 1: []}
  for i in range(DRAWS):
    for b in (0, 1):
      chosen, rest, context = pair(tf.constant([i, 7], tf.int64), tf.constant(b, tf.int64))
      assert sorted(np.concatenate([chosen, rest]).tolist()) == list(range(N))
      out[b].append((_index(chosen), _index(context)))
  return {b: np.array(v) for b, v in out.items()}


def _chi_square_uniform(indices):
  counts = np.bincount(indices, minlength=len(SUBSETS))
  expected = len(indices) / len(SUBSETS)
  return np.sum((counts - expected) ** 2 / expected)


def test_h_and_h_c_are_each_uniform_over_the_subsets(draws):
  for b in (0, 1):
    assert _chi_square_uniform(draws[b][:, 0]) < CHI2_14
    assert _chi_square_uniform(draws[b][:, 1]) < CHI2_14


def test_h_c_is_drawn_independently_of_h(draws):
  for b in (0, 1):
    table = np.zeros([len(SUBSETS)] * 2)
    np.add.at(table, (draws[b][:, 0], draws[b][:, 1]), 1)
    expected = np.outer(table.sum(1), table.sum(0)) / DRAWS
    assert np.sum((table - expected) ** 2 / expected) < CHI2_196
    same = np.mean(draws[b][:, 0] == draws[b][:, 1])  # 1/15 when independent
    assert abs(same - 1 / len(SUBSETS)) < 4 * np.sqrt(1 / 15 * 14 / 15 / DRAWS), same


def test_query_batches_draw_afresh(draws):
  assert np.mean(draws[0][:, 0] == draws[1][:, 0]) < 0.2
  assert np.mean(draws[0][:, 1] == draws[1][:, 1]) < 0.2


def test_shared_reuses_h():
  for i in range(20):
    task = _task('shared', seed=(i, 3))
    chosen, _ = estimator._backprop_subset(task, 0)  # pylint: disable=protected-access
    context = estimator._context_subset(task, 0, chosen)  # pylint: disable=protected-access
    assert np.array_equal(chosen, context)


def test_a_lite_step_back_propagates_the_subsets_it_draws(monkeypatch):
  """The rows that go through the learner on the tape, in a real Simple CNAPs LITE step, are
  the drawn H (contributions) and H_c (set encoder): image i is filled with the value i / 10,
  and the calls of |H| rows are the back-propagated ones (the gradient-free chunks hold 5 and
  1 rows, the complement 4)."""
  keras.utils.set_random_seed(0)
  learner = simple_cnaps.SimpleCnaps(backbone='conv4', image_size=16, set_encoder_norm='none')
  images = np.broadcast_to(np.arange(N, dtype=np.float32)[:, None, None, None] / 10,
                           (N, 16, 16, 3))
  episode = Episode.from_numpy(images, np.arange(N) % 3,
                               np.random.RandomState(0).uniform(-1, 1, (4, 16, 16, 3)),
                               np.arange(4) % 3, 3)
  learner(episode.to_dict())
  calls = []

  def recording(name):
    original = getattr(learner, name)

    def record(x, *args, **kwargs):
      if x.shape[0] == H:
        calls.append((name, sorted(np.round(x[:, 0, 0, 0].numpy() * 10).astype(int).tolist())))
      return original(x, *args, **kwargs)
    monkeypatch.setattr(learner, name, record)

  recording('context_contributions')
  recording('support_contributions')
  differ = 0
  for i in range(6):
    del calls[:]
    seed = (i, 5)
    estimator.lite_task_gradients(learner, episode, learner.trainable_variables, H,
                                  chunk_size=5, query_batch_size=4, seed=seed)
    task = _task(seed=seed)
    chosen, _ = estimator._backprop_subset(task, 0)  # pylint: disable=protected-access
    context = estimator._context_subset(task, 0, chosen)  # pylint: disable=protected-access
    assert calls == [('context_contributions', sorted(context.numpy().tolist())),
                     ('support_contributions', sorted(chosen.numpy().tolist()))], calls
    differ += sorted(context.numpy().tolist()) != sorted(chosen.numpy().tolist())
  assert differ >= 3
