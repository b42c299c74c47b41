"""Meta-Dataset dataset specifications (`dataset_spec.json`), read and written in its format.

Meta-Dataset's converter serializes a spec with its `to_dict()`: a JSON object with the spec's
fields in order, `classes_per_split` keyed by split name ('TRAIN', 'VALID', 'TEST'), class ids
as string keys, and `__class__` naming the spec type. As Meta-Dataset's own loader does, the
records folder is the folder the spec was read from, not the `path` stored in the file.

Class ids are contiguous per split: TRAIN classes first, then VALID, then TEST.

All three of Meta-Dataset's spec types are read and written: DatasetSpecification (flat),
BiLevelDatasetSpecification (superclasses, e.g. Omniglot's alphabets) and
HierarchicalDatasetSpecification (ImageNet: one WordNet DAG per split, see ontology.py).
"""

import dataclasses
import json
import os
from typing import Dict, Union

from lite_tf import atomic
from lite_tf.data.meta_dataset import ontology

SPEC_FILENAME = 'dataset_spec.json'
SPLITS = ('TRAIN', 'VALID', 'TEST')
FILE_PATTERNS = ('{}.tfrecords', '{}_{}.tfrecords')


class DatasetSpecError(ValueError):
  """A dataset_spec.json that is missing, garbled or inconsistent."""


def split_name(split):
  """'TRAIN', 'VALID' or 'TEST' for a split given as a string in any case or as an enum whose
  `.name` is one of those (Meta-Dataset's `learning_spec.Split.TRAIN` and the like)."""
  name = getattr(split, 'name', split)
  name = name.upper() if isinstance(name, str) else None
  if name not in SPLITS:
    raise DatasetSpecError(f'unknown split {split!r}; expected one of train, valid, test (any '
                           'case) or an enum member named TRAIN, VALID or TEST')
  return name


class MetaDatasetNames:
  """Meta-Dataset's DatasetSpecification method names, as aliases (README: "Meta-Dataset's
  names")."""

  def get_classes(self, split):
    """The split's dataset-level class ids (a range), as Meta-Dataset's get_classes."""
    return self.class_ids(split)

  def get_total_images_per_class(self, class_id=None, pool=None):
    """Images of a class (Meta-Dataset's name); pools (example-level splits) are refused."""
    if pool is not None:
      raise DatasetSpecError(f'{self.name}: example-level pools (pool={pool!r}) are not '
                             'supported')
    if class_id is None:
      return sum(self.num_images(k) for s in SPLITS for k in self.class_ids(s))
    return self.num_images(class_id)


def _contiguous_ids(split, counts):
  """Ids of `split` given per-split counts in TRAIN, VALID, TEST order."""
  split = split_name(split)
  offset = 0
  for name in SPLITS:
    if name == split:
      return range(offset, offset + counts[name])
    offset += counts[name]


@dataclasses.dataclass
class DatasetSpec(MetaDatasetNames):
  """Meta-Dataset's DatasetSpecification: a flat set of classes split into train/valid/test."""
  name: str
  classes_per_split: Dict[str, int]
  images_per_class: Dict[int, Union[int, Dict[str, int]]]
  class_names: Dict[int, str]
  path: str
  file_pattern: str = '{}.tfrecords'

  def class_ids(self, split):
    """Dataset-level class ids of a split, as a range."""
    return _contiguous_ids(split, self.classes_per_split)

  def num_images(self, class_id):
    n = self.images_per_class[class_id]
    if isinstance(n, dict):
      raise DatasetSpecError(f'{self.name}: class {class_id} has example-level pools {n}; '
                             'pools are not supported')
    return n

  def class_file(self, class_id):
    """The TFRecord file of a class (first shard name for the sharded pattern)."""
    if self.file_pattern == '{}.tfrecords':
      return os.path.join(self.path, self.file_pattern.format(class_id))
    return os.path.join(self.path, self.file_pattern.format(class_id, 0))

  def to_dict(self):
    return {
        'name': self.name,
        'classes_per_split': {s: self.classes_per_split[s] for s in SPLITS},
        'images_per_class': {str(k): v for k, v in self.images_per_class.items()},
        'class_names': {str(k): v for k, v in self.class_names.items()},
        'path': self.path,
        'file_pattern': self.file_pattern,
        '__class__': 'DatasetSpecification',
    }


@dataclasses.dataclass
class BiLevelDatasetSpec(MetaDatasetNames):
  """Meta-Dataset's BiLevelDatasetSpecification: classes grouped into superclasses, and
  superclasses (not classes) split into train/valid/test. Class ids are contiguous within a
  superclass, superclasses in id order."""
  name: str
  superclasses_per_split: Dict[str, int]
  classes_per_superclass: Dict[int, int]
  images_per_class: Dict[int, int]
  superclass_names: Dict[int, str]
  class_names: Dict[int, str]
  path: str
  file_pattern: str = '{}.tfrecords'

  def superclass_ids(self, split):
    return _contiguous_ids(split, self.superclasses_per_split)

  def class_ids_of_superclass(self, superclass_id):
    start = sum(self.classes_per_superclass[s] for s in range(superclass_id))
    return range(start, start + self.classes_per_superclass[superclass_id])

  def class_ids(self, split):
    superclasses = self.superclass_ids(split)
    if not len(superclasses):  # pylint: disable=g-explicit-length-test
      return range(0)
    return range(self.class_ids_of_superclass(superclasses[0]).start,
                 self.class_ids_of_superclass(superclasses[-1]).stop)

  num_images = DatasetSpec.num_images
  class_file = DatasetSpec.class_file

  def get_superclasses(self, split):
    """The split's superclass ids (a range), as Meta-Dataset's get_superclasses."""
    return self.superclass_ids(split)

  def get_class_ids_from_superclass_subclass_inds(self, split, superclass_id, class_inds):
    """Meta-Dataset's mapping of a superclass and indices of classes inside it to (class ids
    relative to the split, dataset-level class ids)."""
    members = self.class_ids_of_superclass(superclass_id)
    absolute = [members.start + int(i) for i in class_inds]
    first = self.class_ids(split).start
    return [k - first for k in absolute], absolute

  def to_dict(self):
    return {
        'name': self.name,
        'superclasses_per_split': {s: self.superclasses_per_split[s] for s in SPLITS},
        'classes_per_superclass': {str(k): v for k, v in self.classes_per_superclass.items()},
        'images_per_class': {str(k): v for k, v in self.images_per_class.items()},
        'superclass_names': {str(k): v for k, v in self.superclass_names.items()},
        'class_names': {str(k): v for k, v in self.class_names.items()},
        'path': self.path,
        'file_pattern': self.file_pattern,
        '__class__': 'BiLevelDatasetSpecification',
    }


@dataclasses.dataclass
class HierarchicalDatasetSpec(MetaDatasetNames):
  """Meta-Dataset's HierarchicalDatasetSpecification (ImageNet).

  Each split has its own class DAG (`split_subgraphs[split]`: wn_id -> ontology.Synset); its
  leaves are the split's classes. `images_per_class[split]` maps every node of that graph to the
  number of images it spans (a leaf: its own images). `class_names` maps class id -> wn_id; ids
  are contiguous per split, TRAIN then VALID then TEST (Meta-Dataset's converter numbers each
  split's leaves in wn_id order).
  """
  name: str
  split_subgraphs: Dict[str, ontology.Graph]
  images_per_class: Dict[str, Dict[str, int]]
  class_names: Dict[int, str]
  path: str
  file_pattern: str = '{}.tfrecords'

  def __post_init__(self):
    self.classes_per_split = {s: len(ontology.leaves(self.split_subgraphs[s])) for s in SPLITS}
    self.class_names_to_ids = {wn_id: k for k, wn_id in self.class_names.items()}
    self._spans = {}

  def class_ids(self, split):
    return _contiguous_ids(split, self.classes_per_split)

  def split_of(self, class_id):
    for split in SPLITS:
      if class_id in self.class_ids(split):
        return split
    raise DatasetSpecError(f'{self.name}: no class id {class_id}')

  def num_images(self, class_id):
    return self.images_per_class[self.split_of(class_id)][self.class_names[class_id]]

  def leaves(self, split):
    """Sorted wn_ids of the split's classes."""
    return ontology.leaves(self.split_subgraphs[split_name(split)])

  def spanning_leaves(self, split):
    """wn_id -> frozenset of leaf wn_ids below it, for every node of the split's graph."""
    split = split_name(split)
    if split not in self._spans:
      self._spans[split] = ontology.spanning_leaves(self.split_subgraphs[split])
    return self._spans[split]

  class_file = DatasetSpec.class_file

  def to_dict(self):
    return {
        'name': self.name,
        'split_subgraphs': {s: ontology.export_graph(self.split_subgraphs[s]) for s in SPLITS},
        'images_per_class': {s: dict(self.images_per_class[s]) for s in SPLITS},
        'class_names': {str(k): v for k, v in self.class_names.items()},
        'path': self.path,
        'file_pattern': self.file_pattern,
        '__class__': 'HierarchicalDatasetSpecification',
    }


def _hierarchical_from_dict(d, directory, path):
  _require(d, ('name', 'split_subgraphs', 'images_per_class', 'class_names'), path)
  _check_splits(d['split_subgraphs'], 'split_subgraphs', path)
  _check_splits(d['images_per_class'], 'images_per_class', path)
  try:
    graphs = {s: ontology.import_graph(d['split_subgraphs'][s], f'{path}: split_subgraphs[{s}]')
              for s in SPLITS}
  except ontology.OntologyError as e:
    raise DatasetSpecError(str(e)) from e
  images = {}
  for s in SPLITS:
    counts = d['images_per_class'][s]
    if not isinstance(counts, dict):
      raise DatasetSpecError(f'{path}: images_per_class[{s}] must map wn_ids to image counts')
    missing = [w for w in ontology.leaves(graphs[s]) if w not in counts]
    if missing:
      raise DatasetSpecError(f'{path}: images_per_class[{s}] lacks classes {missing[:10]}')
    images[s] = {w: int(n) for w, n in counts.items()}
  spec = HierarchicalDatasetSpec(
      name=d['name'], split_subgraphs=graphs, images_per_class=images,
      class_names=_int_keys(d['class_names'], 'class_names', path), path=directory,
      file_pattern=d.get('file_pattern', '{}.tfrecords'))
  for s in SPLITS:
    ids = sorted(spec.class_names_to_ids.get(w, -1) for w in spec.leaves(s))
    if ids != list(spec.class_ids(s)):
      unnamed = [w for w in spec.leaves(s) if w not in spec.class_names_to_ids]
      raise DatasetSpecError(
          f'{path}: the {s} leaves must have class ids {spec.class_ids(s).start}..'
          f'{spec.class_ids(s).stop - 1} in class_names'
          + (f'; leaves without an id: {unnamed[:10]}' if unnamed else f'; got {ids[:10]}...'))
  return spec


def _int_keys(mapping, field, path):
  try:
    return {int(k): v for k, v in mapping.items()}
  except (AttributeError, ValueError) as e:
    raise DatasetSpecError(f'{path}: field {field!r} must map class ids to values') from e


def _require(d, keys, path):
  missing = [k for k in keys if k not in d]
  if missing:
    raise DatasetSpecError(f'{path}: missing fields {missing}')


def _check_splits(counts, field, path):
  if sorted(counts) != sorted(SPLITS):
    raise DatasetSpecError(f'{path}: {field} must have keys {list(SPLITS)}; got {sorted(counts)}')


def _check_counts(counts, field, path):
  """Every value of `field` a non-negative integer (a dict of pools: each of its values)."""
  for key, value in counts.items():
    for v in (value.values() if isinstance(value, dict) else [value]):
      if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise DatasetSpecError(f'{path}: {field}[{key!r}] must be a non-negative integer; got '
                               f'{v!r}')


def _check_total(counts, field, expected, what, path):
  total = sum(counts.values())
  if total != expected:
    raise DatasetSpecError(f'{path}: {field} adds up to {total} ({dict(counts)}) but the spec '
                           f'has {expected} {what}')


def from_dict(d, directory, path='dataset_spec'):
  """Builds a spec from a Meta-Dataset `to_dict()` dict; records live in `directory`."""
  kind = d.get('__class__')
  if kind == 'DatasetSpecification':
    _require(d, ('name', 'classes_per_split', 'images_per_class', 'class_names'), path)
    _check_splits(d['classes_per_split'], 'classes_per_split', path)
    _check_counts(d['classes_per_split'], 'classes_per_split', path)
    spec = DatasetSpec(
        name=d['name'], classes_per_split=dict(d['classes_per_split']),
        images_per_class=_int_keys(d['images_per_class'], 'images_per_class', path),
        class_names=_int_keys(d['class_names'], 'class_names', path), path=directory,
        file_pattern=d.get('file_pattern', '{}.tfrecords'))
    _check_counts(spec.images_per_class, 'images_per_class', path)
    _check_total(spec.classes_per_split, 'classes_per_split', len(spec.class_names),
                 'classes (class_names)', path)
  elif kind == 'BiLevelDatasetSpecification':
    _require(d, ('name', 'superclasses_per_split', 'classes_per_superclass',
                 'images_per_class', 'superclass_names', 'class_names'), path)
    _check_splits(d['superclasses_per_split'], 'superclasses_per_split', path)
    _check_counts(d['superclasses_per_split'], 'superclasses_per_split', path)
    spec = BiLevelDatasetSpec(
        name=d['name'], superclasses_per_split=dict(d['superclasses_per_split']),
        classes_per_superclass=_int_keys(d['classes_per_superclass'], 'classes_per_superclass',
                                         path),
        images_per_class=_int_keys(d['images_per_class'], 'images_per_class', path),
        superclass_names=_int_keys(d['superclass_names'], 'superclass_names', path),
        class_names=_int_keys(d['class_names'], 'class_names', path), path=directory,
        file_pattern=d.get('file_pattern', '{}.tfrecords'))
    _check_counts(spec.images_per_class, 'images_per_class', path)
    _check_counts(spec.classes_per_superclass, 'classes_per_superclass', path)
    _check_total(spec.superclasses_per_split, 'superclasses_per_split',
                 len(spec.superclass_names), 'superclasses (superclass_names)', path)
    _check_total(spec.classes_per_superclass, 'classes_per_superclass', len(spec.class_names),
                 'classes (class_names)', path)
  elif kind == 'HierarchicalDatasetSpecification':
    spec = _hierarchical_from_dict(d, directory, path)
  else:
    raise DatasetSpecError(f'{path}: unknown or missing __class__ {kind!r}; expected '
                           'DatasetSpecification, BiLevelDatasetSpecification or '
                           'HierarchicalDatasetSpecification')
  if spec.file_pattern not in FILE_PATTERNS:
    raise DatasetSpecError(f'{path}: file_pattern must be one of {list(FILE_PATTERNS)}; got '
                           f'{spec.file_pattern!r}')
  if not isinstance(spec, HierarchicalDatasetSpec):
    all_ids = set(range(sum(len(spec.class_ids(s)) for s in SPLITS)))
    missing = sorted(all_ids - set(spec.images_per_class))
    if missing:
      raise DatasetSpecError(f'{path}: images_per_class lacks class ids {missing[:10]}')
  return spec


def load(directory):
  """Reads `directory/dataset_spec.json`; errors name the file and what is wrong."""
  path = os.path.join(directory, SPEC_FILENAME)
  if not os.path.exists(path):
    raise DatasetSpecError(f'{path}: no such file (expected a Meta-Dataset dataset spec)')
  try:
    with open(path, encoding='utf-8') as f:
      d = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DatasetSpecError(f'{path}: not valid JSON: {e}') from e
  if not isinstance(d, dict):
    raise DatasetSpecError(f'{path}: expected a JSON object')
  return from_dict(d, directory, path)


def load_dataset_spec(dataset_records_path, convert_from_pkl=False, data_root=None):
  """Meta-Dataset's name for `load`. Only `dataset_spec.json` is read (not the pickled
  specs of old converters); `data_root` is accepted and unused, as the records are always read
  from `dataset_records_path`."""
  del data_root
  if convert_from_pkl:
    raise DatasetSpecError(f'{dataset_records_path}: convert_from_pkl=True is not supported; '
                           'lite_tf reads dataset_spec.json (Meta-Dataset converters write it)')
  return load(dataset_records_path)


def save(spec, directory):
  """Writes `directory/dataset_spec.json` atomically (temporary file, then rename)."""
  atomic.write_json(os.path.join(directory, SPEC_FILENAME), spec.to_dict())
