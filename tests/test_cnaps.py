"""CNAPs and Simple CNAPs: the Mahalanobis classifier, generated FiLM, and LITE's gradient
(exact with H = N; unbiased for the classifier and generators; a measured bias for the set
encoder, whose embeddings nest a sum over the support set inside another)."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import small_episode
from lite_tf.learners import cnaps
from lite_tf.learners import simple_cnaps
from lite_tf.lite import estimator


def _numpy_mahalanobis_logits(support, labels, query, way, beta=1.0):
  """Reference written from Bateni et al. (2020), Eq. 2-4, one class at a time."""
  d = support.shape[1]
  task_cov = np.cov(support, rowvar=False)
  logits = np.zeros((len(query), way))
  for k in range(way):
    rows = support[labels == k]
    n_k = len(rows)
    class_cov = np.cov(rows, rowvar=False) if n_k > 1 else np.zeros((d, d))
    lam = n_k / (n_k + 1.0)
    q = lam * class_cov + (1 - lam) * task_cov + beta * np.eye(d)
    diff = query - rows.mean(0)
    logits[:, k] = -0.5 * np.einsum('qd,de,qe->q', diff, np.linalg.inv(q), diff)
  return logits


@pytest.mark.parametrize('solver', ['direct', 'woodbury'])
@pytest.mark.parametrize('counts,d', [((1, 1, 1), 6), ((1, 4, 2), 6), ((5, 3, 6), 6),
                                      ((1, 4, 2), 40), ((5, 3, 6), 40)])
def test_mahalanobis_logits_match_numpy(counts, d, solver):
  rng = np.random.RandomState(sum(counts))
  labels = np.concatenate([np.full(c, k) for k, c in enumerate(counts)])
  rng.shuffle(labels)  # classes interleaved, as in real support sets
  support = rng.normal(0, 1, (len(labels), d)) + labels[:, None]
  query = rng.normal(0, 1, (9, d))
  features, queries = tf.constant(support, tf.float64), tf.constant(query, tf.float64)
  if solver == 'direct':
    means, chol = simple_cnaps.mahalanobis_parameters(features, labels, len(counts), beta=0.7)
    got = simple_cnaps.mahalanobis_logits(queries, means, chol).numpy()
  else:
    state = simple_cnaps.woodbury_parameters(features, labels, len(counts), beta=0.7)
    got = simple_cnaps.woodbury_logits(queries, state).numpy()
  np.testing.assert_allclose(got, _numpy_mahalanobis_logits(support, labels, query,
                                                            len(counts), beta=0.7),
                             rtol=1e-8, atol=1e-8)


def test_one_shot_class_covariance_is_a_matrix():
  """With one example, Sigma_k = 0 (d x d): Q_k = Sigma_task / 2 + I, not a broadcast scalar."""
  rng = np.random.RandomState(0)
  support = rng.normal(0, 1, (4, 3))
  labels = np.array([0, 1, 1, 1])
  _, chol = simple_cnaps.mahalanobis_parameters(tf.constant(support), labels, 2)
  q0 = (chol[0] @ tf.transpose(chol[0])).numpy()
  np.testing.assert_allclose(q0, 0.5 * np.cov(support, rowvar=False) + np.eye(3), atol=1e-12)


def test_solvers_give_the_same_gradients():
  """'woodbury' and 'direct' Simple CNAPs: same loss and meta-gradient (float32)."""
  episode = small_episode()
  results = []
  for solver in ('direct', 'woodbury'):
    keras.utils.set_random_seed(3)
    model = simple_cnaps.SimpleCnaps(backbone='conv4', image_size=16, solver=solver)
    model(episode.to_dict())
    results.append(estimator.full_task_gradients(model, episode, model.trainable_variables))
  assert abs(float(results[0][0]) - float(results[1][0])) < 1e-4 * abs(float(results[0][0]))
  assert _relative_error(results[1][1], results[0][1]) < 1e-3


@pytest.fixture(scope='module', params=['simple_cnaps', 'cnaps'])
def learner(request):
  keras.utils.set_random_seed(1)
  cls = {'simple_cnaps': simple_cnaps.SimpleCnaps, 'cnaps': cnaps.Cnaps}[request.param]
  model = cls(backbone='conv4', image_size=16)
  model(small_episode().to_dict())
  # Larger FiLM regularizers than the initial 1e-3 so that the nested (set encoder) terms
  # of the gradient are not negligible.
  for r in model.film_generator.gamma_regularizers + model.film_generator.beta_regularizers:
    r.assign(tf.random.stateless_normal(r.shape, seed=[1, 2], stddev=0.5))
  return model


def test_generated_film_shapes_and_frozen_backbone(learner):
  film = learner.task_context(learner.context_contributions(small_episode().support_images))
  assert [(tuple(g.shape), tuple(b.shape)) for g, b in film] == [
      ((c,), (c,)) for c in learner.backbone.film_channels]
  trainable = {v.path.split('/')[0] for v in learner.trainable_variables}
  assert not any(v.path.startswith('conv4/') for v in learner.trainable_variables), trainable
  assert learner.backbone.weights and not learner.backbone.trainable_weights


def test_film_starts_near_identity():
  keras.utils.set_random_seed(0)
  model = simple_cnaps.SimpleCnaps(backbone='conv4', image_size=16)
  episode = small_episode()
  film = model.task_context(model.context_contributions(episode.support_images))
  adapted = model.backbone(episode.support_images, film=film).numpy()
  plain = model.backbone(episode.support_images).numpy()
  np.testing.assert_allclose(adapted, plain, atol=1e-2 * np.abs(plain).max())


def _relative_error(grads, reference):
  diff = sum(float(tf.reduce_sum(tf.square(g - r))) for g, r in zip(grads, reference))
  norm = sum(float(tf.reduce_sum(tf.square(r))) for r in reference)
  return np.sqrt(diff / norm)


@pytest.mark.parametrize('num_backprop', [6, 10])
def test_backprop_whole_support_set_is_exact(learner, num_backprop):
  episode = small_episode()
  variables = learner.trainable_variables
  full_loss, full, _ = estimator.full_task_gradients(learner, episode, variables)
  loss, grads, _ = estimator.lite_task_gradients(learner, episode, variables, num_backprop,
                                                 chunk_size=4, query_batch_size=3)
  assert abs(float(loss) - float(full_loss)) < 1e-5
  assert _relative_error(grads, full) < 1e-5


@pytest.fixture(scope='module')
def subset_gradients(learner):
  """(full gradient, [15, p] LITE gradients of every 2-subset of the 6 support images)."""
  episode = small_episode()
  variables = learner.trainable_variables
  _, full, _ = estimator.full_task_gradients(learner, episode, variables)

  @tf.function
  def lite(subset):
    return estimator.lite_task_gradients(learner, episode, variables, 2, chunk_size=3,
                                         query_batch_size=7, backprop_indices=subset[None])[1]

  per_subset = [np.concatenate([g.numpy().ravel() for g in lite(tf.constant(subset))])
                for subset in itertools.combinations(range(6), 2)]
  return full, np.stack(per_subset)


def test_lite_is_unbiased_except_through_the_set_encoder(learner, subset_gradients):
  """Average over all C(6, 2) subsets: equal to the full gradient for the classifier and the
  FiLM generators (a single sum over the support set); biased for the set encoder (the task
  embedding is a mean over the support set inside the sum over adapted features)."""
  variables = learner.trainable_variables
  full, per_subset = subset_gradients
  mean = per_subset.mean(0)
  offsets = np.cumsum([0] + [int(np.prod(v.shape)) for v in variables])
  encoder, others = [], []
  for i, v in enumerate(variables):
    part = (mean[offsets[i]:offsets[i + 1]], full[i].numpy().ravel())
    (encoder if v.path.startswith('set_encoder/') else others).append(part)

  def error(parts):
    return (np.sqrt(sum(np.sum((a - b) ** 2) for a, b in parts))
            / np.sqrt(sum(np.sum(b ** 2) for _, b in parts)))

  assert error(others) < 1e-5
  assert error(encoder) > 1e-3  # the nested-sum bias is there, and measured
  # ... but the estimate is still a useful one: far closer than a single draw.
  single = np.mean([np.linalg.norm(g - np.concatenate([f.numpy().ravel() for f in full]))
                    for g in per_subset])
  assert np.linalg.norm(mean - np.concatenate([f.numpy().ravel() for f in full])) < single


def test_error_of_mean_over_draws_shrinks_like_one_over_sqrt_draws_to_the_bias_floor(
    learner, subset_gradients):
  """Error of the mean of k random-H LITE gradients: ~ sqrt(bias^2 + variance / k).

  Draws are uniform over all 15 subsets (the estimator's own distribution); their gradients
  are computed once per subset, so k goes to 4000 cheaply.
  """
  full, per_subset = subset_gradients
  full = np.concatenate([f.numpy().ravel() for f in full])
  norm = np.linalg.norm(full)
  bias = np.linalg.norm(per_subset.mean(0) - full) / norm
  variance = np.mean(np.sum((per_subset - per_subset.mean(0)) ** 2, 1)) / norm ** 2
  rng = np.random.RandomState(0)
  for k in (1, 10, 100, 1000, 4000):
    # The mean of k uniform draws is the per-subset gradients weighted by multinomial counts.
    weights = rng.multinomial(k, np.full(len(per_subset), 1.0 / len(per_subset)), 200) / k
    errors = np.linalg.norm(weights @ per_subset - full, axis=1) / norm
    rms = np.sqrt(np.mean(np.square(errors)))
    expected = np.sqrt(bias ** 2 + variance / k)
    assert abs(rms - expected) < 0.1 * expected, (k, rms, expected)
  print(f'{type(learner).__name__}: relative bias floor {bias:.4f}, single-draw relative '
        f'error {np.sqrt(bias ** 2 + variance):.4f}')
  assert bias < np.sqrt(bias ** 2 + variance / 1000) + 1e-12


@pytest.mark.parametrize('recompute_batch', [2])
def test_recomputing_activations_gives_the_same_gradient(learner, recompute_batch):
  episode = small_episode()
  variables = learner.trainable_variables
  subsets = tf.constant([[0, 4, 5]])
  reference = estimator.lite_task_gradients(learner, episode, variables, 3, 4, 7,
                                            backprop_indices=subsets)
  step = tf.function(lambda: estimator.lite_task_gradients(
      learner, episode, variables, 3, 4, 7, backprop_indices=subsets,
      recompute_batch=recompute_batch))
  got = step()
  assert abs(float(got[0]) - float(reference[0])) < 1e-5
  assert _relative_error(got[1], reference[1]) < 1e-5
