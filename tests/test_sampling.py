"""Meta-Dataset episode sampling: constraints over thousands of episodes, and distributions
against the analytic law of the reference algorithm."""

import math

import numpy as np
import pytest

from lite_tf.data.meta_dataset import dataset_spec
from lite_tf.data.meta_dataset import sampling
import md_reference


def _flat_spec(sizes, splits=(None,)):
  n = len(sizes)
  return dataset_spec.DatasetSpec(
      name='synthetic', classes_per_split={'TRAIN': n, 'VALID': 0, 'TEST': 0},
      images_per_class=dict(enumerate(sizes)), class_names={i: str(i) for i in range(n)},
      path='/nonexistent')


def _chi_square_z(observed, expected):
  """Wilson-Hilferty normal approximation of the chi-square statistic's upper tail."""
  keep = expected >= 5
  obs = np.append(observed[keep], observed[~keep].sum())
  exp = np.append(expected[keep], expected[~keep].sum())
  if exp[-1] < 5:
    obs, exp = obs[:-1], exp[:-1]
  stat = ((obs - exp) ** 2 / exp).sum()
  df = len(obs) - 1
  return ((stat / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))


def test_every_constraint_holds_over_thousands_of_episodes():
  rng = np.random.RandomState(0)
  sizes = rng.randint(20, 1400, size=120)
  spec = _flat_spec(sizes)
  sampler = sampling.EpisodeDescriptionSampler(spec, 'train', seed=1)
  for _ in range(3000):
    description = sampler.sample()
    classes = [c for c, _, _ in description]
    shots = np.array([s for _, s, _ in description])
    queries = {q for _, _, q in description}
    assert 5 <= len(classes) <= 50 and len(set(classes)) == len(classes)
    assert len(queries) == 1
    query = queries.pop()
    class_sizes = sizes[classes]
    assert query == min(10, (class_sizes // 2).min())
    assert (shots >= 1).all() and (shots + query <= class_sizes).all()
    assert len(classes) <= shots.sum() <= 500


def test_ways_are_uniform():
  spec = _flat_spec([40] * 30)
  sampler = sampling.EpisodeDescriptionSampler(spec, 'train', seed=2)
  ways = np.array([len(sampler.sample()) for _ in range(4000)])
  observed = np.bincount(ways, minlength=31)[5:31]
  assert ways.min() == 5 and ways.max() == 30
  assert _chi_square_z(observed, np.full(26, 4000 / 26)) < 3.5


def test_support_set_size_follows_the_reference_law():
  """Equal classes of n images and zero log-weight spread: every class gets floor(size / k)
  shots, where size = min(k * U{1..m}, 500), m = min(100, n - query) and the ways k are uniform
  in [5, min(50, C)]. Compare the sampler's totals with that exact law (chi-square)."""
  n, num_classes, draws = 60, 40, 6000
  config = sampling.EpisodeDescriptionConfig(min_log_weight=0.0, max_log_weight=0.0)
  sampler = sampling.EpisodeDescriptionSampler(_flat_spec([n] * num_classes), 'train', config,
                                               seed=3)
  m = min(100, n - min(10, n // 2))
  ks = range(5, min(50, num_classes) + 1)
  law = {}
  for k in ks:
    for u in range(1, m + 1):
      key = (k, k * (min(k * u, 500) // k))
      law[key] = law.get(key, 0.0) + 1.0 / (len(ks) * m)
  keys = sorted(law)
  index = {key: i for i, key in enumerate(keys)}
  observed = np.zeros(len(keys))
  for _ in range(draws):
    description = sampler.sample()
    key = (len(description), sum(s for _, s, _ in description))
    assert key in index, f'(ways, support size) {key} is impossible under the reference law'
    observed[index[key]] += 1
  expected = np.array([law[key] for key in keys]) * draws
  assert _chi_square_z(observed, expected) < 3.5


def test_support_set_size_law_exactly():
  """The support set size itself against its exact law (fixed ways k: U{1..m} * k)."""
  rng = np.random.RandomState(4)
  k, m, draws = 7, 50, 5000
  remaining = np.full(k, m)
  observed = np.zeros(m + 1)
  for _ in range(draws):
    size = sampling.sample_support_set_size(remaining, 100, 500, rng)
    assert size % k == 0
    observed[size // k] += 1
  assert observed[0] == 0
  assert _chi_square_z(observed[1:], np.full(m, draws / m)) < 3.5


def test_support_per_class_is_proportional_to_class_size():
  rng = np.random.RandomState(5)
  images = np.array([100, 200, 400, 800])
  totals = np.zeros(4)
  for _ in range(2000):
    shots = sampling.sample_support_per_class(images, images - 10, 400, math.log(0.5),
                                              math.log(2), rng)
    assert shots.min() >= 1 and shots.sum() <= 400
    totals += shots
  ratios = totals / totals[0]
  np.testing.assert_allclose(ratios, [1, 2, 4, 8], rtol=0.1)


def test_fixed_way_and_shot():
  spec = _flat_spec([30] * 12)
  config = sampling.EpisodeDescriptionConfig(num_ways=5, num_support=3, num_query=7)
  sampler = sampling.EpisodeDescriptionSampler(spec, 'train', config, seed=6)
  for _ in range(100):
    d = sampler.sample()
    assert len(d) == 5 and {(s, q) for _, s, q in d} == {(3, 7)}


def test_deterministic_given_seed_and_split_ids():
  spec = dataset_spec.DatasetSpec(
      name='s', classes_per_split={'TRAIN': 10, 'VALID': 8, 'TEST': 6},
      images_per_class={i: 20 + i for i in range(24)}, class_names={i: str(i) for i in range(24)},
      path='/x')
  a = [sampling.EpisodeDescriptionSampler(spec, 'test', seed=9).sample() for _ in range(3)]
  b = sampling.EpisodeDescriptionSampler(spec, 'test', seed=9)
  assert a[0] == b.sample()
  assert all(18 <= c < 24 for c, _, _ in a[0])


def test_bilevel_sampling_stays_within_one_superclass():
  spec = dataset_spec.BiLevelDatasetSpec(
      name='omni', superclasses_per_split={'TRAIN': 3, 'VALID': 1, 'TEST': 1},
      classes_per_superclass={0: 12, 1: 30, 2: 6, 3: 8, 4: 20},
      images_per_class={c: 20 for c in range(76)},
      superclass_names={i: f'a{i}' for i in range(5)},
      class_names={c: str(c) for c in range(76)}, path='/x')
  sampler = sampling.EpisodeDescriptionSampler(spec, 'train', seed=7)
  seen = set()
  for _ in range(500):
    classes = [c for c, _, _ in sampler.sample()]
    owners = {next(s for s in range(3) if c in spec.class_ids_of_superclass(s)) for c in classes}
    assert len(owners) == 1
    owner = owners.pop()
    assert 5 <= len(classes) <= spec.classes_per_superclass[owner]
    seen.add(owner)
  assert seen == {0, 1, 2}


def _omniglot_like():
  return dataset_spec.BiLevelDatasetSpec(
      name='omni', superclasses_per_split={'TRAIN': 3, 'VALID': 1, 'TEST': 1},
      classes_per_superclass={0: 12, 1: 30, 2: 6, 3: 8, 4: 20},
      images_per_class={c: 15 + (7 * c) % 11 for c in range(76)},
      superclass_names={i: f'a{i}' for i in range(5)},
      class_names={c: str(c) for c in range(76)}, path='/x')


@pytest.mark.parametrize('ignore_p', [0.0, 0.3])
def test_bilevel_episodes_equal_meta_datasets_for_the_same_seed(ignore_p):
  """Meta-Dataset draws "ignore the ontology?" for every bi-level episode, even with
  probability 0; skipping that draw would shift every later one."""
  spec = _omniglot_like()
  config = sampling.EpisodeDescriptionConfig(ignore_hierarchy_probability=ignore_p)
  for split, superclasses in (('train', [0, 1, 2]), ('test', [4])):
    sampler = sampling.EpisodeDescriptionSampler(spec, split, config, seed=11)
    got = [sampler.sample() for _ in range(300)]
    assert got == md_reference.bilevel_episodes(spec, superclasses, 11, 300, ignore_p)
  if ignore_p:  # some training episodes then mix alphabets
    train = sampling.EpisodeDescriptionSampler(spec, 'train', config, seed=11)
    owners = [{next(s for s in range(3) if k in spec.class_ids_of_superclass(s))
               for k, _, _ in train.sample()} for _ in range(100)]
    assert any(len(o) > 1 for o in owners) and any(len(o) == 1 for o in owners)


def test_ignore_hierarchy_probability_outside_0_1_is_a_clear_error():
  with pytest.raises(ValueError, match='ignore_hierarchy_probability must be in'):
    sampling.EpisodeDescriptionSampler(
        _omniglot_like(), 'train',
        sampling.EpisodeDescriptionConfig(ignore_hierarchy_probability=1.5))


def test_too_few_classes_is_a_clear_error():
  with pytest.raises(ValueError, match='min_ways=5 but split .* has only 4 classes'):
    sampling.EpisodeDescriptionSampler(_flat_spec([20] * 4), 'train')
