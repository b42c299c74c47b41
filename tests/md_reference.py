"""Meta-Dataset's episode description sampler followed step by step (meta_dataset/data/
sampling.py, EpisodeDescriptionSampler.sample_episode_description with its default
constants: min_ways 5, max_ways_upper_bound 50, max_num_query 10, max_support_set_size 500,
max_support_size_contrib_per_class 100, log-weights log 0.5 .. log 2), written out with the
same numpy calls in the same order, independently of lite_tf's sampler."""

import math

import numpy as np


def use_hierarchy(rng, ignore_p):
  """The per-episode draw made for DAG and bi-level datasets, even when ignore_p is 0."""
  prob = [1.0 - ignore_p, ignore_p] if ignore_p else [1.0, 0.0]
  return rng.choice([True, False], p=prob)


def uniform_classes(rng, split_classes, max_ways=50):
  ways = rng.randint(low=5, high=min(max_ways, len(split_classes)) + 1)
  relative = rng.choice([k - split_classes[0] for k in split_classes], ways, replace=False)
  return [split_classes[0] + r for r in relative]


def variable_shots(rng, classes, images_per_class):
  """Query shots, support set size and shots per class for the chosen classes."""
  images = np.array([images_per_class[k] for k in classes])
  query = min(10, (images // 2).min())
  remaining = images - query
  beta = rng.uniform()
  support = min(np.floor(beta * np.minimum(100, remaining) + 1).sum(), 500)
  weights = images * np.exp(rng.uniform(math.log(0.5), math.log(2.0), size=images.shape))
  shots = np.floor(weights / weights.sum() * (support - len(classes))).astype('int32') + 1
  shots = np.minimum(shots, remaining)
  return tuple((int(k), int(s), int(query)) for k, s in zip(classes, shots))


def bilevel_episodes(spec, split_superclasses, seed, count, ignore_p=0.0):
  """Episodes of a bi-level (Omniglot-like) spec: an alphabet, then ways, then characters."""
  rng = np.random.RandomState(seed)
  last = max(spec.classes_per_superclass)
  starts = np.cumsum([0] + [spec.classes_per_superclass[s] for s in range(last + 1)])
  split_classes = list(range(starts[split_superclasses[0]], starts[split_superclasses[-1] + 1]))
  episodes = []
  for _ in range(count):
    if use_hierarchy(rng, ignore_p):
      superclass = rng.choice(split_superclasses, 1)[0]
      size = spec.classes_per_superclass[superclass]
      ways = rng.randint(low=5, high=min(50, size) + 1)
      classes = [starts[superclass] + i for i in rng.choice(size, ways, replace=False)]
    else:
      classes = uniform_classes(rng, split_classes)
    episodes.append(variable_shots(rng, classes, spec.images_per_class))
  return episodes


def dag_episodes(nodes, split_classes, images_per_class, seed, count, max_ways, ignore_p):
  """Episodes of a DAG (ImageNet-like) spec given its eligible nodes (lists of class ids in
  Meta-Dataset's order): a node uniformly (Meta-Dataset's rng.choice over the node list),
  its classes subsampled to max_ways if more."""
  rng = np.random.RandomState(seed)
  table = np.empty(len(nodes), dtype=object)
  table[:] = [list(n) for n in nodes]
  episodes = []
  for _ in range(count):
    if use_hierarchy(rng, ignore_p):
      classes = rng.choice(table)
      if len(classes) > max_ways:
        classes = rng.choice(classes, size=[max_ways], replace=False)
    else:
      classes = uniform_classes(rng, split_classes, max_ways)
    episodes.append(variable_shots(rng, classes, images_per_class))
  return episodes
