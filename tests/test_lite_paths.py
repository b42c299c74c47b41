"""LITE's less travelled paths: the sampler's law, the dynamic-shape tf.while_loop branch,
unequal query batches with |H| < N, recomputation with short micro-batches, and no network
call on an empty batch anywhere (the empty-batch guard is on in every test, conftest.py)."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from conftest import relative_error
from conftest import small_episode
from conftest import small_protonets
from lite_tf.backbones import film
from lite_tf.episode import Episode
from lite_tf.lite import chunking
from lite_tf.lite import estimator


@pytest.fixture(scope='module')
def learner():
  return small_protonets(2)


def _dynamic(fn):
  """fn(episode) traced with every episode dimension unknown (as a records pipeline gives), so
  the estimator takes its tf.while_loop branch over query batches."""
  episode = small_episode(num_support=6, num_query=7)
  signature = {k: tf.TensorSpec([None] * v.shape.rank, v.dtype)
               for k, v in episode.to_dict().items()}
  return tf.function(lambda d: fn(Episode.from_dict(d)), input_signature=[signature])


def test_backprop_subsets_are_uniform_over_all_subsets():
  """Unbiasedness rests on H being uniform over the C(6, 2) = 15 subsets: 6000 stateless draws,
  chi-square against uniform (df 14; 36.1 is the 0.001 critical value), the complement being
  the rest, and |H| = min(num_backprop, N)."""
  counts = {s: 0 for s in itertools.combinations(range(6), 2)}
  draws = 6000
  for t in range(draws):
    chosen, rest = estimator.sample_backprop_indices(tf.constant([7, t], tf.int64), 6, 2)
    chosen, rest = chosen.numpy(), rest.numpy()
    assert sorted(np.concatenate([chosen, rest]).tolist()) == list(range(6))
    counts[tuple(sorted(chosen.tolist()))] += 1
  expected = draws / len(counts)
  chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
  assert chi2 < 36.1, counts
  chosen, rest = estimator.sample_backprop_indices(tf.constant([0, 0], tf.int64), 4, 40)
  assert sorted(chosen.numpy().tolist()) == [0, 1, 2, 3] and rest.shape[0] == 0


def test_while_loop_branch_equals_eager_and_the_full_gradient(learner):
  """|H| >= N: graph with unknown shapes (while loop) == eager (Python loop) == exact
  back-propagation; 7 queries in batches of 3, 3 and 1."""
  episode = small_episode(num_support=6, num_query=7)
  variables = learner.trainable_variables
  _, full, _ = estimator.full_task_gradients(learner, episode, variables)
  eager = estimator.lite_task_gradients(learner, episode, variables, 40, 4, 3)
  graph = _dynamic(lambda e: estimator.lite_task_gradients(learner, e, variables, 40, 4, 3))
  assert 'While' in str([op.type for op in graph.get_concrete_function().graph.get_operations()])
  got = graph(episode.to_dict())
  assert relative_error(eager[1], full) < 1e-5
  assert relative_error(got[1], full) < 1e-5
  assert abs(float(got[0]) - float(eager[0])) < 1e-5
  np.testing.assert_array_equal(got[2].numpy(), eager[2].numpy())


@pytest.mark.parametrize('recompute_batch,recompute_mode',
                         [(None, 'unrolled'), (2, 'unrolled'), (2, 'loop')])
def test_unequal_query_batches_with_a_subset_agree_across_paths(learner, recompute_batch,
                                                                recompute_mode):
  """|H| = 3 < N = 6, a different subset per query batch, batches of 3, 3 and 1; with
  recomputation the H rows run as micro-batches 2 + 1 and the last query batch is shorter
  than one micro-batch. The while-loop branch (micro-batches past the rows run on one dropped
  row) equals
  the eager Python loop and the same computation without recomputation."""
  episode = small_episode(num_support=6, num_query=7)
  variables = learner.trainable_variables
  subsets = tf.constant([[0, 4, 5], [1, 2, 3], [5, 0, 2]])
  kwargs = dict(backprop_indices=subsets, recompute_batch=recompute_batch,
                recompute_mode=recompute_mode)
  plain = estimator.lite_task_gradients(learner, episode, variables, 3, 4, 3,
                                        backprop_indices=subsets)
  eager = estimator.lite_task_gradients(learner, episode, variables, 3, 4, 3, **kwargs)
  graph = _dynamic(lambda e: estimator.lite_task_gradients(learner, e, variables, 3, 4, 3,
                                                           **kwargs))(episode.to_dict())
  for got in (eager, graph):
    assert abs(float(got[0]) - float(plain[0])) < 1e-5
    assert relative_error(got[1], plain[1]) < 1e-5


@pytest.mark.parametrize('recompute_mode', ['unrolled', 'loop'])
def test_recompute_with_more_micro_batches_than_rows_skips_the_empty_ones(learner,
                                                                          recompute_mode):
  """num_backprop = 8 > N = 6 with micro-batches of 2: the fourth micro-batch would be empty;
  under unknown shapes 'unrolled' runs it on one row whose output is dropped, 'loop' runs only
  the micro-batches that have rows (the guard would fail on an empty one)."""
  episode = small_episode(num_support=6, num_query=7)
  variables = learner.trainable_variables
  _, full, _ = estimator.full_task_gradients(learner, episode, variables)
  got = _dynamic(lambda e: estimator.lite_task_gradients(
      learner, e, variables, 8, 4, 7, recompute_batch=2,
      recompute_mode=recompute_mode))(episode.to_dict())
  assert relative_error(got[1], full) < 1e-5


def test_chunked_map_of_no_rows_never_calls_the_network_on_an_empty_batch(learner):
  sizes = []

  def fn(x):
    sizes.append(int(x.shape[0]))
    return learner.backbone(x)

  images = small_episode(num_support=5).support_images
  out = chunking.chunked_map(fn, images, tf.zeros([0], tf.int32), 3)
  assert out.shape == (0, learner.backbone.feature_dim)
  assert sizes and min(sizes) > 0
  out = chunking.chunked_map(fn, images, tf.constant([4, 0, 2, 1]), 3)
  np.testing.assert_allclose(out.numpy(), learner.backbone(tf.gather(images, [4, 0, 2, 1])),
                             atol=1e-5)


def test_the_guard_fails_on_an_empty_batch_eagerly_and_in_graphs(learner):
  empty = tf.zeros([0, 16, 16, 3])
  with pytest.raises(film.EmptyBatchError, match='empty batch'):
    learner.backbone(empty)
  traced = tf.function(learner.backbone.__call__,
                       input_signature=[tf.TensorSpec([None, 16, 16, 3])])
  with pytest.raises(tf.errors.InvalidArgumentError, match='empty batch'):
    traced(empty)
  assert traced(tf.zeros([2, 16, 16, 3])).shape == (2, learner.backbone.feature_dim)
