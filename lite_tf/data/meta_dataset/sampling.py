"""Meta-Dataset's episode composition sampling (Triantafillou et al., 2020, Sec. 3.2).

An episode description is a tuple of (class_id, num_support, num_query) triples. Variable
way/shot sampling:
  1. ways uniform in [min_ways, min(max_ways_upper_bound, classes available)]; classes drawn
     uniformly without replacement (Omniglot: first an alphabet uniformly, then ways and
     characters inside it; ImageNet: an internal node of the split's DAG uniformly among those
     spanning min_ways..392 classes, its classes subsampled to max_ways_upper_bound if more);
  2. query shots per class: min(max_num_query, floor(smallest class size / 2));
  3. support set size: sum over classes of ceil(beta * min(max_support_size_contrib_per_class,
     images left after the query)), beta ~ U(0, 1], capped at max_support_set_size;
  4. shots per class: one each, the rest split in proportion to class size times
     exp(U(min_log_weight, max_log_weight)), floored, capped at the images left.

The random draws are made in the same order and with the same numpy calls as Meta-Dataset's
`sampling.py` (including its per-episode "ignore the ontology?" draw on DAG and bi-level
datasets, made even when ignore_hierarchy_probability is 0), so a sampler seeded alike yields
the same descriptions (for DAG sampling, the same in distribution: Meta-Dataset lists the
eligible nodes in set order, which changes from process to process; here they are in wn_id
order).
Every constant is a field of EpisodeDescriptionConfig (gin-configurable, Meta-Dataset's
defaults).
"""

import dataclasses
import math
from typing import Optional, Tuple, Union

import gin
import numpy as np

from lite_tf.data.meta_dataset import dataset_spec as spec_lib


@gin.configurable
@dataclasses.dataclass
class EpisodeDescriptionConfig:
  """Meta-Dataset's EpisodeDescriptionConfig; None for num_ways/num_support/num_query means
  variable (sampled). num_support may be an int or an inclusive (low, high) range."""
  num_ways: Optional[int] = None
  num_support: Optional[Union[int, Tuple[int, int]]] = None
  num_query: Optional[int] = None
  min_ways: int = 5
  max_ways_upper_bound: int = 50
  max_num_query: int = 10
  max_support_set_size: int = 500
  max_support_size_contrib_per_class: int = 100
  min_log_weight: float = math.log(0.5)
  max_log_weight: float = math.log(2.0)
  ignore_bilevel_ontology: bool = False
  ignore_dag_ontology: bool = False
  min_examples_in_class: int = 0
  # Meta-Dataset's ignore_hierarchy_probability: the share of episodes of a DAG or bi-level
  # dataset whose classes are drawn uniformly, ignoring the ontology.
  ignore_hierarchy_probability: float = 0.0
  # Meta-Dataset's MAX_SPANNING_LEAVES_ELIGIBLE: the smallest bound under which every ImageNet
  # class is still reachable.
  max_spanning_leaves_eligible: int = 392

  def __post_init__(self):
    # One class makes every query right: an accuracy of 1.0 +/- 0.0 that means nothing.
    if self.num_ways is not None and (isinstance(self.num_ways, bool)
                                      or not isinstance(self.num_ways, int) or self.num_ways < 2):
      raise ValueError(f'EpisodeDescriptionConfig.num_ways must be None (sampled) or an integer '
                       f'>= 2; got {self.num_ways!r}')
    if isinstance(self.min_ways, bool) or not isinstance(self.min_ways, int) or self.min_ways < 2:
      raise ValueError(f'EpisodeDescriptionConfig.min_ways must be an integer >= 2; got '
                       f'{self.min_ways!r}')


def sample_num_ways(num_classes, min_ways, max_ways, rng):
  """Ways uniform in [min_ways, min(max_ways, num_classes)]."""
  return rng.randint(low=min_ways, high=min(max_ways, num_classes) + 1)


def sample_class_ids(num_ways, candidates, rng):
  """`num_ways` distinct entries of `candidates`, uniformly."""
  return rng.choice(candidates, num_ways, replace=False)


def num_query_per_class(images_per_class, max_num_query, num_support=None, class_ids=None):
  """Balanced query shots: at most max_num_query and half the smallest class (or the smallest
  class minus the largest fixed support shot). `class_ids` name the classes in errors."""
  images_per_class = np.asarray(images_per_class)
  smallest = int(np.argmin(images_per_class))
  which = f'class {class_ids[smallest]}' if class_ids is not None else 'the smallest class'
  if num_support is None:
    if images_per_class.min() < 2:
      raise ValueError(f'{which} has {images_per_class.min()} image(s); variable-shot '
                       'episodes (EpisodeDescriptionConfig.num_support = None) need at least '
                       '2 per class')
    return int(min(max_num_query, (images_per_class // 2).min()))
  largest = num_support if isinstance(num_support, int) else num_support[1]
  if images_per_class.min() - largest < 1:
    raise ValueError(f'{which} has {images_per_class.min()} images but '
                     f'EpisodeDescriptionConfig.num_support = {num_support!r} needs at least '
                     f'{largest + 1} per class (support shots + 1 query)')
  return int(min(max_num_query, images_per_class.min() - largest))


def sample_support_set_size(remaining_per_class, max_contribution_per_class,
                            max_support_set_size, rng):
  """sum_c floor(beta * min(max_contribution, remaining_c) + 1), beta ~ U[0, 1), capped."""
  remaining_per_class = np.asarray(remaining_per_class)
  if max_support_set_size < len(remaining_per_class):
    raise ValueError(f'max_support_set_size={max_support_set_size} is smaller than the '
                     f'{len(remaining_per_class)} ways')
  beta = rng.uniform()
  contributions = np.minimum(max_contribution_per_class, remaining_per_class)
  return int(min(np.floor(beta * contributions + 1).sum(), max_support_set_size))


def sample_support_per_class(images_per_class, remaining_per_class, support_set_size,
                             min_log_weight, max_log_weight, rng):
  """One shot per class plus a share of the rest proportional to size * exp(U(log w))."""
  images_per_class = np.asarray(images_per_class)
  remaining_per_class = np.asarray(remaining_per_class)
  if support_set_size < len(remaining_per_class):
    raise ValueError('support set smaller than the number of ways')
  if remaining_per_class.min() < 1:
    raise ValueError('a class has no image left for the support set')
  extra = support_set_size - len(remaining_per_class)
  weights = images_per_class * np.exp(
      rng.uniform(min_log_weight, max_log_weight, size=images_per_class.shape))
  desired = np.floor(weights / weights.sum() * extra).astype('int32') + 1
  return np.minimum(desired, remaining_per_class)


def dag_sampling_nodes(spec, split, eligible, min_ways, max_spanning_leaves):
  """Class-id lists of the internal nodes of the split's DAG that episodes may be drawn from:
  those spanning between min_ways and max_spanning_leaves eligible classes (sorted by wn_id,
  so that a seed gives the same episodes in every process)."""
  spans = spec.spanning_leaves(split)
  leaves = set(spec.leaves(split))
  nodes = []
  for wn_id in sorted(set(spans) - leaves):
    ids = sorted(spec.class_names_to_ids[leaf] for leaf in spans[wn_id])
    ids = [k for k in ids if k in eligible]
    if min_ways <= len(ids) <= max_spanning_leaves:
      nodes.append(ids)
  if not nodes:
    raise ValueError(f'no node of the {split!r} DAG of {spec.name!r} spans between '
                     f'min_ways={min_ways} and max_spanning_leaves_eligible='
                     f'{max_spanning_leaves} classes; change EpisodeDescriptionConfig.min_ways '
                     'or .max_spanning_leaves_eligible, or set ignore_dag_ontology=True')
  return nodes


class EpisodeDescriptionSampler:
  """Samples episode descriptions for one split of one dataset.

  Class ids in descriptions are dataset-level ids. For a BiLevelDatasetSpec, classes are
  sampled within one superclass (Omniglot's alphabets) unless
  config.ignore_bilevel_ontology; for a HierarchicalDatasetSpec, as the classes below one node
  of the split's DAG (ImageNet) unless config.ignore_dag_ontology.
  """

  def __init__(self, spec, split, config=None, seed=0):
    self.spec = spec
    self.split = split
    self.config = config or EpisodeDescriptionConfig()
    self.rng = np.random.RandomState(seed)
    c = self.config
    if not 0.0 <= c.ignore_hierarchy_probability <= 1.0:
      raise ValueError('EpisodeDescriptionConfig.ignore_hierarchy_probability must be in '
                       f'[0, 1]; got {c.ignore_hierarchy_probability!r}')
    self.class_ids = list(spec.class_ids(split))
    self.eligible = [k for k in self.class_ids if spec.num_images(k) >= c.min_examples_in_class]
    self.bilevel = (isinstance(spec, spec_lib.BiLevelDatasetSpec)
                    and not c.ignore_bilevel_ontology)
    if c.min_ways and len(self.eligible) < c.min_ways:
      raise ValueError(f'min_ways={c.min_ways} but split {split!r} of dataset {spec.name!r} has '
                       f'only {len(self.eligible)} classes with at least '
                       f'{c.min_examples_in_class} images')
    if c.num_ways is not None and c.num_ways > len(self.eligible):
      raise ValueError(f'EpisodeDescriptionConfig.num_ways={c.num_ways} but split {split!r} of '
                       f'dataset {spec.name!r} has only {len(self.eligible)} classes with at '
                       f'least {c.min_examples_in_class} images')
    if self.bilevel:
      if c.num_ways is not None:
        raise ValueError('EpisodeDescriptionConfig.num_ways cannot be fixed with bi-level '
                         'sampling; set ignore_bilevel_ontology=True')
      self.superclasses = list(spec.superclass_ids(split))
      small = [s for s in self.superclasses if spec.classes_per_superclass[s] < c.min_ways]
      if small:
        raise ValueError(f'superclasses {small} of {spec.name!r} have fewer than '
                         f'min_ways={c.min_ways} classes')
    self.dag_nodes = None
    if (isinstance(spec, spec_lib.HierarchicalDatasetSpec) and not c.ignore_dag_ontology):
      if c.num_ways is not None:
        raise ValueError('EpisodeDescriptionConfig.num_ways cannot be fixed with DAG sampling; '
                         'set ignore_dag_ontology=True')
      self.dag_nodes = dag_sampling_nodes(spec, split, set(self.eligible), c.min_ways,
                                          c.max_spanning_leaves_eligible)

  def _follow_hierarchy(self):
    """Meta-Dataset's per-episode draw of whether to use the ontology.

    Meta-Dataset makes this draw for every episode of a DAG or bi-level dataset, even when
    ignore_hierarchy_probability is 0 (p = [1, 0] still consumes one uniform), so it is made
    here too: every later draw of a seeded sampler then matches Meta-Dataset's.
    """
    p = self.config.ignore_hierarchy_probability
    prob = [1.0 - p, p] if p else [1.0, 0.0]
    return bool(self.rng.choice([True, False], p=prob))

  def _sample_classes(self):
    c = self.config
    if self.dag_nodes is not None and self._follow_hierarchy():
      classes = self.dag_nodes[self.rng.randint(len(self.dag_nodes))]
      if len(classes) > c.max_ways_upper_bound:
        classes = self.rng.choice(classes, size=[c.max_ways_upper_bound], replace=False)
      return [int(k) for k in classes]
    if self.dag_nodes is None and self.bilevel and self._follow_hierarchy():
      superclass = self.rng.choice(self.superclasses, 1)[0]
      size = self.spec.classes_per_superclass[superclass]
      ways = sample_num_ways(size, c.min_ways, c.max_ways_upper_bound, self.rng)
      members = sample_class_ids(ways, size, self.rng)
      first = self.spec.class_ids_of_superclass(superclass).start
      return [first + int(m) for m in members]
    ways = c.num_ways
    if ways is None:
      ways = sample_num_ways(len(self.eligible), c.min_ways, c.max_ways_upper_bound, self.rng)
    offset = self.class_ids[0]
    relative = sample_class_ids(ways, [k - offset for k in self.eligible], self.rng)
    return [offset + int(r) for r in relative]

  def sample(self):
    """One description: tuple of (dataset class id, num_support, num_query)."""
    c = self.config
    classes = self._sample_classes()
    sizes = np.array([self.spec.num_images(k) for k in classes])
    query = c.num_query
    if query is None:
      query = num_query_per_class(sizes, c.max_num_query, c.num_support, classes)
    if c.num_support is not None:
      if isinstance(c.num_support, int):
        if np.any(c.num_support + query > sizes):
          raise ValueError(f'classes {[k for k, n in zip(classes, sizes) if c.num_support + query > n]}'
                           f' have fewer than num_support + num_query = {c.num_support + query}'
                           ' images')
        shots = [c.num_support] * len(classes)
      else:
        low, high = c.num_support
        if np.any(high + query > sizes):
          raise ValueError(f'num_support range {c.num_support} plus {query} queries exceeds '
                           'the images of some classes')
        shots = [self.rng.randint(low=low, high=high + 1)] * len(classes)
    else:
      remaining = sizes - query
      size = sample_support_set_size(remaining, c.max_support_size_contrib_per_class,
                                     c.max_support_set_size, self.rng)
      shots = sample_support_per_class(sizes, remaining, size, c.min_log_weight,
                                       c.max_log_weight, self.rng)
    return tuple((k, int(s), int(query)) for k, s in zip(classes, shots))

  def sample_episode_description(self):
    """Meta-Dataset's name and convention: the next description with class ids relative to
    the split (0 .. classes in the split - 1), where `sample` gives dataset-level ids. Both
    advance the same random stream."""
    first = self.class_ids[0]
    return tuple((k - first, s, q) for k, s, q in self.sample())
