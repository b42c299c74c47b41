"""CNAPs and Simple CNAPs: the Mahalanobis classifier, generated FiLM, and LITE's gradient
(exact with H = N; unbiased for the classifier and generators; a measured bias for the set
encoder, whose embeddings nest a sum over the support set inside another)."""

import itertools
import os

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT
from conftest import relative_error
from conftest import small_episode
from lite_tf.learners import cnaps
from lite_tf.learners import finetuner  # pylint: disable=unused-import (gin/learners.gin)
from lite_tf.learners import maml  # pylint: disable=unused-import
from lite_tf.learners import simple_cnaps
from lite_tf.lite import estimator
from lite_tf.lite import model as lite_model
from lite_tf.studies import subset_pairs


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
  assert relative_error(results[1][1], results[0][1]) < 1e-3


@pytest.fixture(scope='module', params=['simple_cnaps', 'cnaps'])
def learner(request):
  keras.utils.set_random_seed(1)
  cls = {'simple_cnaps': simple_cnaps.SimpleCnaps, 'cnaps': cnaps.Cnaps}[request.param]
  # Without BatchNorm in the set encoder (set_encoder_norm='none'): with the reference's
  # batch statistics the images of a call are coupled and no subset estimate is exact.
  model = cls(backbone='conv4', image_size=16, set_encoder_norm='none')
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


@pytest.mark.parametrize('num_backprop', [6, 10])
def test_backprop_whole_support_set_is_exact(learner, num_backprop):
  episode = small_episode()
  variables = learner.trainable_variables
  full_loss, full, _ = estimator.full_task_gradients(learner, episode, variables)
  loss, grads, _ = estimator.lite_task_gradients(learner, episode, variables, num_backprop,
                                                 chunk_size=4, query_batch_size=3)
  assert abs(float(loss) - float(full_loss)) < 1e-5
  assert relative_error(grads, full) < 1e-5


NUM_SUPPORT, NUM_BACKPROP, NUM_DRAWS = 6, 2, 400
SUBSETS = list(itertools.combinations(range(NUM_SUPPORT), NUM_BACKPROP))


def _flat(grads):
  return np.concatenate([g.numpy().ravel() for g in grads]).astype(np.float64)


def _parts(learner):
  """{'set encoder', 'others', 'all'}: boolean masks over the flattened gradient."""
  encoder = np.concatenate([np.full(int(np.prod(v.shape)), v.path.startswith('set_encoder/'))
                            for v in learner.trainable_variables])
  return {'set encoder': encoder, 'others': ~encoder, 'all': np.ones_like(encoder)}


@pytest.fixture(scope='module')
def subset_gradients(learner):
  """(full gradient [p], [15, p] LITE gradients of every 2-subset of the 6 support images)."""
  episode = small_episode()
  variables = learner.trainable_variables
  _, full, _ = estimator.full_task_gradients(learner, episode, variables)

  @tf.function
  def lite(subset):
    return estimator.lite_task_gradients(learner, episode, variables, NUM_BACKPROP,
                                         chunk_size=3, query_batch_size=7,
                                         backprop_indices=subset[None],
                                         context_subset='shared')[1]

  return _flat(full), np.stack([_flat(lite(tf.constant(s))) for s in SUBSETS])


@pytest.fixture(scope='module')
def random_draws(learner, subset_gradients):
  """LITE gradients with NUM_DRAWS random seeds (the estimator's own sampling, one query
  batch): (index into SUBSETS of the subset each seed drew, by sample_backprop_indices with
  stateless_fold_in(seed, 0) as lite_task_gradients does; the largest relative difference
  between a draw's gradient and that subset's enumerated one; the mean of the draws)."""
  episode = small_episode()
  variables = learner.trainable_variables
  _, per_subset = subset_gradients

  @tf.function
  def lite(seed):
    return estimator.lite_task_gradients(learner, episode, variables, NUM_BACKPROP,
                                         chunk_size=3, query_batch_size=7, seed=seed,
                                         context_subset='shared')[1]

  indices, mismatch, total = [], 0.0, 0.0
  for i in range(NUM_DRAWS):
    seed = tf.constant([i, 11], tf.int64)
    chosen, _ = estimator.sample_backprop_indices(
        tf.random.experimental.stateless_fold_in(seed, tf.constant(0, tf.int64)),
        NUM_SUPPORT, NUM_BACKPROP)
    j = SUBSETS.index(tuple(sorted(chosen.numpy().tolist())))
    draw = _flat(lite(seed))
    mismatch = max(mismatch, np.linalg.norm(draw - per_subset[j]) /
                   np.linalg.norm(per_subset[j]))
    indices.append(j)
    total = total + draw
  return np.array(indices), mismatch, total / NUM_DRAWS


def test_shared_subset_is_unbiased_except_through_the_set_encoder(learner, subset_gradients):
  """context_subset='shared' (the paper's code): average over all C(6, 2) subsets equal to
  the full gradient for the classifier and the FiLM generators (a single sum over the support
  set); materially biased for the set encoder (the task embedding is a mean over the support
  set inside the sum over adapted features, both over the same subset)."""
  full, per_subset = subset_gradients
  parts = _parts(learner)
  mean = per_subset.mean(0)

  def relative_bias(mask):
    return np.linalg.norm(mean[mask] - full[mask]) / np.linalg.norm(full[mask])

  assert relative_bias(parts['others']) < 1e-5
  bias = relative_bias(parts['set encoder'])
  print(f"{type(learner).__name__}, shared subsets: set-encoder relative bias {bias:.3g}")
  assert bias > 0.1


def test_independent_subsets_average_to_the_full_gradient_for_every_variable(learner):
  """context_subset='independent' (the default): H for the contributions and H_c for the set
  encoder drawn independently, so E[product of the two N/H sums] factorises. The average over
  all 15 x 15 pairs of 2-subsets of the 6 support images equals the full gradient of every
  trainable variable, set encoder included."""
  episode = small_episode()
  variables = learner.trainable_variables
  _, full, _ = estimator.full_task_gradients(learner, episode, variables)

  @tf.function
  def lite(subset, context):
    return estimator.lite_task_gradients(learner, episode, variables, NUM_BACKPROP,
                                         chunk_size=3, query_batch_size=7,
                                         backprop_indices=subset[None],
                                         context_indices=context[None])[1]

  total = [tf.zeros_like(g) for g in full]
  for subset in SUBSETS:
    for context in SUBSETS:
      total = [t + g for t, g in zip(total, lite(tf.constant(subset), tf.constant(context)))]
  mean = [t / len(SUBSETS) ** 2 for t in total]
  # Per variable, to float32 tolerance: relative to the variable's own gradient, plus a floor
  # at the whole gradient's scale for variables whose gradient is zero in exact arithmetic
  # (the last bias of the classifier-weight generator shifts every class alike).
  scale = float(tf.linalg.global_norm(full))
  for v, m, f in zip(variables, mean, full):
    error = float(tf.norm(m - f))
    assert error < 1e-4 * float(tf.norm(f)) + 1e-6 * scale, (v.path, error, float(tf.norm(f)))


def test_random_seeds_draw_enumerated_subsets_uniformly(learner, subset_gradients,
                                                         random_draws):
  """Each seeded LITE gradient is the enumerated gradient of the subset the sampler drew, and
  the 400 draws are uniform over the 15 subsets: Pearson's chi-square (14 degrees of
  freedom) below 36.12, its 99.9% quantile."""
  indices, mismatch, _ = random_draws
  assert mismatch < 1e-5
  counts = np.bincount(indices, minlength=len(SUBSETS))
  expected = NUM_DRAWS / len(SUBSETS)
  assert np.sum((counts - expected) ** 2 / expected) < 36.12, counts


def _error_ratio_quantiles(per_subset, full, k, probabilities, repeats=20000, seed=0):
  """Quantiles of |mean of k uniform draws - full| / sqrt(bias^2 + variance / k), the
  ratio's exact distribution (draws from the enumerated per-subset gradients) by Monte Carlo
  over draw counts, in the 15-dimensional span of the subsets' gradients."""
  rng = np.random.RandomState(seed)
  weights = rng.multinomial(k, np.full(len(per_subset), 1.0 / len(per_subset)), repeats) / k
  offsets = per_subset - full  # mean of draws - full = weights @ offsets
  squared = np.einsum('ri,ij,rj->r', weights, offsets @ offsets.T, weights)
  mean = per_subset.mean(0)
  rms = np.sqrt(np.sum((mean - full) ** 2)
                + np.mean(np.sum((per_subset - mean) ** 2, 1)) / k)
  return np.quantile(np.sqrt(squared) / rms, probabilities)


def test_error_of_the_mean_of_random_draws_is_bias_and_variance_over_k(
    learner, subset_gradients, random_draws):
  """The mean of k = 400 seeded LITE gradients misses the full gradient by
  sqrt(bias^2 + variance / k), bias and variance from the exhaustive enumeration (an exact
  identity for the mean square over uniform draws). Tolerance: the ratio of the measured to
  the predicted error lies within the 0.05% and 99.95% quantiles of that ratio's exact
  sampling distribution. For the set encoder the bias term dominates (measured bias^2 ~ 7x
  variance / k): the error predicted without it, sqrt(variance / k), lies below that band, so
  an estimator unbiased there, or one that always drew the same subset, would fail."""
  full, per_subset = subset_gradients
  _, _, mean_of_draws = random_draws
  bias = per_subset.mean(0) - full
  for name, mask in _parts(learner).items():
    lo, hi = _error_ratio_quantiles(per_subset[:, mask], full[mask], NUM_DRAWS,
                                    [0.0005, 0.9995])
    bias_squared = np.sum(bias[mask] ** 2)
    variance = np.mean(np.sum((per_subset[:, mask] - per_subset[:, mask].mean(0)) ** 2, 1))
    predicted = np.sqrt(bias_squared + variance / NUM_DRAWS)
    ratio = np.linalg.norm(mean_of_draws[mask] - full[mask]) / predicted
    print(f'{type(learner).__name__}, {name}: relative bias '
          f'{np.sqrt(bias_squared) / np.linalg.norm(full[mask]):.3g}, single-draw relative '
          f'error {np.sqrt(bias_squared + variance) / np.linalg.norm(full[mask]):.3g}, '
          f'error of the mean / predicted {ratio:.3f} (band {lo:.3f}-{hi:.3f})')
    assert lo < ratio < hi, (name, ratio, lo, hi)
    if name == 'set encoder':
      assert np.sqrt(variance / NUM_DRAWS) < lo * predicted


@pytest.mark.parametrize('recompute_batch,recompute_mode', [
    pytest.param(2, 'unrolled', marks=pytest.mark.slow),  # no longer the default (#31)
    (2, 'loop')])
def test_recomputing_activations_gives_the_same_gradient(learner, recompute_batch,
                                                         recompute_mode):
  """Through the set encoder's context and the FiLM parameters (the `extra` that
  recomputed_rows differentiates), in both recomputation modes."""
  episode = small_episode()
  variables = learner.trainable_variables
  subsets = tf.constant([[0, 4, 5]])
  contexts = tf.constant([[1, 2, 4]])
  reference = estimator.lite_task_gradients(learner, episode, variables, 3, 4, 7,
                                            backprop_indices=subsets, context_indices=contexts)
  step = tf.function(lambda: estimator.lite_task_gradients(
      learner, episode, variables, 3, 4, 7, backprop_indices=subsets, context_indices=contexts,
      recompute_batch=recompute_batch, recompute_mode=recompute_mode))
  got = step()
  assert abs(float(got[0]) - float(reference[0])) < 1e-5
  assert relative_error(got[1], reference[1]) < 1e-5


def test_lite_model_scales_the_penalty_by_the_tasks_of_a_step(learner):
  model = lite_model.make_lite_model(learner)
  model.compile(optimizer=lite_model.make_optimizer(tasks_per_step=4), jit_compile=False)
  assert model._regularizer_scale() == 4.0  # pylint: disable=protected-access
  per_task = lite_model.make_lite_model(learner, regularizer_accounting='per_task')
  per_task.compile(optimizer=lite_model.make_optimizer(tasks_per_step=4), jit_compile=False)
  assert per_task._regularizer_scale() == 1.0  # pylint: disable=protected-access
  with pytest.raises(ValueError, match='lite.regularizer_accounting must be one of'):
    lite_model.make_lite_model(learner, regularizer_accounting='twice')
  with pytest.raises(ValueError, match=r"lite\.recompute_mode must be one of \['unrolled', "
                                       r"'loop'\]; got 'fused'"):
    lite_model.make_lite_model(learner, recompute_batch=2, recompute_mode='fused')


@pytest.fixture(scope='module', params=['simple_cnaps', 'cnaps'])
def default_learner(request):
  """The learner gin/learners.gin builds, at 16x16 (Conv-4, its BACKBONE), every other
  setting at its default (set_encoder_norm among them), FiLM regularizers drawn as above."""
  gin.clear_config()
  gin.parse_config_files_and_bindings([os.path.join(REPO_ROOT, 'gin', 'learners.gin')],
                                      ['IMAGE_SIZE = 16'])
  keras.utils.set_random_seed(1)
  model = {'simple_cnaps': simple_cnaps.make_simple_cnaps, 'cnaps': cnaps.make_cnaps}[
      request.param]()
  gin.clear_config()
  model(small_episode().to_dict())
  subset_pairs.perturb_film(model, 0.5)
  return model


def test_default_lite_is_the_full_forward_and_unbiased_over_all_subset_pairs(default_learner):
  """README's claim for the default gin: over all 15 x 15 pairs (H, H_c) of 2-subsets of the
  6 support images (chunk 3), LITE's loss equals the full-set loss to float32 rounding for
  every pair, and its gradient averaged over the pairs equals the full gradient (relative
  bias under 1e-5) for the set encoder, the FiLM generators and all parameters."""
  assert default_learner.set_encoder.norm == 'task'
  result = subset_pairs.subset_pair_exactness(default_learner, small_episode(), NUM_BACKPROP,
                                              chunk_size=3)
  print(type(default_learner).__name__, result)
  assert result['pairs'] == len(SUBSETS) ** 2
  assert result['forward_mismatch'] < 1e-6, result
  for group in ('set_encoder', 'film_generator', 'all'):
    assert result['relative_bias'][group] < 1e-5, (group, result)


def test_set_encoder_task_statistics_are_the_whole_context_sets(default_learner):
  """The statistics LITE computes in chunks (merged exactly) are those of one pass over all N
  images, and with them every chunk's rows equal the one-pass rows."""
  episode = small_episode()
  images = episode.support_images
  from lite_tf.lite import chunking  # pylint: disable=g-import-not-at-top
  fn = default_learner.context_contributions
  chunked = default_learner.context_norm_statistics(fn, images, 4, chunking.chunked_apply)
  whole = default_learner.context_norm_statistics(fn, images)
  assert len(chunked) == len(whole) == 5
  for (m1, v1), (m2, v2) in zip(chunked, whole):
    np.testing.assert_allclose(m1.numpy(), m2.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v1.numpy(), v2.numpy(), rtol=1e-5, atol=1e-6)
  one_pass = fn(images).numpy()
  with default_learner.fixed_context_norm_statistics(chunked):
    rows = np.concatenate([fn(images[i:i + 2]).numpy() for i in range(0, 6, 2)])
  # float32 rounding through five normalised layers (merged moments against tf.nn.moments).
  np.testing.assert_allclose(rows, one_pass, atol=1e-4 * np.abs(one_pass).max())


def test_default_adaptation_in_chunks_is_the_one_pass_forward(default_learner):
  """Test-time adaptation (estimator.adapt_task, in adapt_and_predict) in chunks of 2 of the 6 support images, the
  set encoder normalised with the whole context set's statistics: the query logits of one
  forward pass over the whole task."""
  episode = small_episode()
  logits = estimator.adapt_and_predict(default_learner, episode, chunk_size=2,
                                       query_batch_size=3)
  expected = default_learner(episode.to_dict())
  np.testing.assert_allclose(logits.numpy(), expected.numpy(),
                             atol=1e-4 * float(tf.reduce_max(tf.abs(expected))))


def _top_level_ops(concrete, op_type):
  return [op for op in concrete.graph.get_operations() if op.type == op_type]


def test_default_recomputation_recomputes_the_context_subset_too(default_learner):
  """With lite.recompute_batch and the default set encoder (each image normalised with the
  task's fixed statistics), H_c's set-encoder rows are recomputed in micro-batches like H's
  contributions: no convolution is left outside the while-loops of the traced step (without
  recomputation, H_c's and H's are), and the gradient is the one without recomputation (the
  micro-batches normalise with the whole context set's statistics, not their own)."""
  episode = small_episode()
  variables = default_learner.trainable_variables
  subsets = tf.constant([[0, 4, 5]])
  contexts = tf.constant([[1, 2, 4]])

  def step(recompute_batch):
    return tf.function(lambda: estimator.lite_task_gradients(
        default_learner, episode, variables, 3, 4, 7, backprop_indices=subsets,
        context_indices=contexts, recompute_batch=recompute_batch)).get_concrete_function()

  plain, recomputed = step(None), step(2)
  assert _top_level_ops(plain, 'Conv2D')
  assert not _top_level_ops(recomputed, 'Conv2D')
  reference, got = plain(), recomputed()
  assert abs(float(got[0]) - float(reference[0])) < 1e-5
  assert relative_error(got[1], reference[1]) < 1e-5


def test_a_batch_normalised_set_encoder_is_not_recomputed():
  """set_encoder_norm='batch' couples the images of a call: H_c's rows stay one call (only
  the contributions are recomputed), so the gradient is the one without recomputation."""
  keras.utils.set_random_seed(1)
  model = simple_cnaps.SimpleCnaps(backbone='conv4', image_size=16, set_encoder_norm='batch')
  episode = small_episode()
  model(episode.to_dict())
  assert not model.context_is_per_image()
  variables = model.trainable_variables
  subsets = tf.constant([[0, 4, 5]])
  contexts = tf.constant([[1, 2, 4]])
  results = [tf.function(lambda rb=rb: estimator.lite_task_gradients(
      model, episode, variables, 3, 4, 7, backprop_indices=subsets, context_indices=contexts,
      recompute_batch=rb))() for rb in (None, 2)]
  assert abs(float(results[1][0]) - float(results[0][0])) < 1e-5
  assert relative_error(results[1][1], results[0][1]) < 1e-5
