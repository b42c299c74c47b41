"""Image folders -> Meta-Dataset records (one TFRecord file per class + dataset_spec.json).

Layouts:
  root/<class>/<image>                  -> DatasetSpec (flat)
  root/<superclass>/<class>/<image>     -> BiLevelDatasetSpec (superclasses are split)
  root/<wn_id>/<image> + an is-a file   -> HierarchicalDatasetSpec (ImageNet's layout; classes
                                           split by two roots of the DAG, see ontology.py)

Class ids follow Meta-Dataset: TRAIN classes first, then VALID, then TEST; within a split,
sorted by name (for bi-level: superclasses sorted by name, classes by name inside each).
JPEG and PNG files are stored byte for byte, as Meta-Dataset's converters do; other formats
are re-encoded as PNG. Files that cannot be decoded are skipped and reported. The dataset is
written into a temporary folder beside the output folder and renamed into place only when
complete (an existing dataset there is replaced only with overwrite=True, and a reader sees
the old dataset or the new one, never a mix).
"""

import contextlib
import dataclasses
import io
import json
import os

import numpy as np
from PIL import Image
from PIL import UnidentifiedImageError
import tensorflow as tf

from lite_tf import atomic
from lite_tf import progress
from lite_tf.data.meta_dataset import dataset_spec as spec_lib
from lite_tf.data.meta_dataset import ontology

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.tif', '.tiff', '.webp')


@dataclasses.dataclass
class ConversionReport:
  spec: object
  skipped: list  # (path, reason)
  num_images: int
  excluded: int = 0  # files named in the exclusion lists


def read_exclusion_lists(paths):
  """File names to leave out, from lists in the format of Meta-Dataset's
  ImageNet_*_duplicates.txt: one 'dir/file.JPEG  # comment' per line, '#' lines ignored.
  Names are matched on the file's base name, as Meta-Dataset's converter does."""
  names = set()
  for path in paths or ():
    try:
      with open(path, encoding='utf-8') as f:
        for line in f:
          entry = line.split('#', 1)[0].strip()
          if entry:
            names.add(os.path.basename(entry))
    except OSError as e:
      raise ValueError(f'--exclude_lists {path}: cannot read ({e})') from e
  return names


def _list_images(directory):
  return sorted(os.path.join(directory, f) for f in os.listdir(directory)
                if f.lower().endswith(IMAGE_EXTENSIONS)
                and os.path.isfile(os.path.join(directory, f)))


def _subdirs(directory):
  return sorted(d for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d)))


def _top_folders(input_dir):
  """The sorted subfolders of --input_dir, or an error naming the flag."""
  if not os.path.isdir(input_dir):
    raise ValueError(f'--input_dir {input_dir!r} is not a directory')
  folders = _subdirs(input_dir)
  if not folders:
    raise ValueError(f'--input_dir {input_dir!r} has no class folders')
  return folders


def _encoded(path):
  """Bytes to store for an image file (unchanged JPEG/PNG, else PNG), or raises ValueError."""
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise ValueError(f'not a readable file ({e.strerror})') from e
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()
      fmt = image.format
      if fmt in ('JPEG', 'PNG') and image.mode in ('RGB', 'L', 'RGBA', 'P', 'LA'):
        return data
      out = io.BytesIO()
      image.convert('RGB').save(out, format='PNG')
      return out.getvalue()
  except (UnidentifiedImageError, OSError, SyntaxError) as e:
    raise ValueError(f'not a readable image ({e})') from e


def _example(encoded, label):
  return tf.train.Example(features=tf.train.Features(feature={
      'image': tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
      'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
  })).SerializeToString()


def _write_class(paths, label, output_path, skipped):
  count = 0
  with atomic.atomic_path(output_path) as tmp, tf.io.TFRecordWriter(tmp) as writer:
    for path in paths:
      try:
        encoded = _encoded(path)
      except ValueError as e:
        skipped.append((path, str(e)))
        continue
      writer.write(_example(encoded, label))
      count += 1
  return count


def _convert_class(directory, class_id, output_dir, skipped, excluded):
  """Writes output_dir/<class_id>.tfrecords from the images of `directory` whose names are not
  in `excluded`; returns (written, left out). Unreadable files are added to `skipped`; none
  readable is an error."""
  paths = _list_images(directory)
  kept = [p for p in paths if os.path.basename(p) not in excluded]
  count = _write_class(kept, class_id, os.path.join(output_dir, f'{class_id}.tfrecords'),
                       skipped)
  if count == 0:
    raise ValueError(f'class folder {directory!r} has no readable images')
  return count, len(paths) - len(kept)


@contextlib.contextmanager
def _output_folder(output_dir, overwrite, input_dir):
  """The folder the dataset is written to. Normally a temporary folder beside --output_dir
  that replaces it on success; an empty --output_dir in a folder that cannot be written (or a
  mount point) is written in place, as there is nothing in it to damage."""
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise ValueError(f'--output_dir {output_dir!r} is a file, not a folder')
  real = os.path.realpath(output_dir)  # a symlinked folder: its target is replaced
  source = os.path.realpath(input_dir)
  if os.path.commonpath([real, source]) in (real, source):
    raise ValueError(f'--input_dir {input_dir!r} and --output_dir {output_dir!r} overlap; '
                     'write the records to a separate folder')
  atomic.recover_folder(real)
  entries = os.listdir(real) if os.path.isdir(real) else []
  if entries and not overwrite:
    raise ValueError(f'--output_dir {output_dir!r} is not empty ({len(entries)} entries); pass '
                     '--overwrite to replace what it holds')
  if entries and not os.path.exists(os.path.join(real, spec_lib.SPEC_FILENAME)):
    raise ValueError(f'--output_dir {output_dir!r} holds no dataset ({spec_lib.SPEC_FILENAME} '
                     'is missing): --overwrite replaces only a records dataset; choose an empty '
                     'or new folder')
  parent = os.path.dirname(real)
  if not entries and os.path.isdir(real) and (os.path.ismount(real)
                                              or not os.access(parent, os.W_OK)):
    yield real
    return
  if entries and os.path.ismount(real):
    raise ValueError(f'--output_dir {output_dir!r} is a mount point holding a dataset; it cannot '
                     'be replaced whole: convert into a new folder inside it')
  try:
    with atomic.atomic_folder(real) as work:
      yield work
  except PermissionError as e:
    if e.filename and os.path.commonpath([os.path.abspath(e.filename), parent]) == parent:
      raise ValueError(f'--output_dir {output_dir!r}: cannot write in {parent!r} '
                       f'({e.strerror})') from e
    raise


def warn_empty_splits(spec):
  """Warnings for splits without classes (a dataset that cannot be validated or tested)."""
  return [f'warning: the {s.lower()} split has no classes' for s in spec_lib.SPLITS
          if not len(spec.class_ids(s))]  # pylint: disable=g-explicit-length-test


def split_names(names, ratios, seed):
  """Splits names into train/valid/test by ratios (rounded; every split non-empty when the
  ratio is positive and names allow) with a seeded permutation."""
  if len(ratios) != 3 or any(r < 0 for r in ratios) or not np.isclose(sum(ratios), 1.0):
    raise ValueError(f'--split_ratios must be three non-negative numbers summing to 1; got '
                     f'{list(ratios)}')
  names = sorted(names)
  order = np.random.RandomState(seed).permutation(len(names))
  n_train = int(round(ratios[0] * len(names)))
  n_valid = int(round(ratios[1] * len(names)))
  shuffled = [names[i] for i in order]
  return {'train': sorted(shuffled[:n_train]),
          'valid': sorted(shuffled[n_train:n_train + n_valid]),
          'test': sorted(shuffled[n_train + n_valid:])}


def _splits_from_file(path, names):
  try:
    with open(path, encoding='utf-8') as f:
      splits = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f'--splits_json {path}: cannot read a JSON object ({e})') from e
  if not isinstance(splits, dict) or sorted(splits) != ['test', 'train', 'valid']:
    raise ValueError(f'--splits_json {path}: expected keys train, valid, test')
  listed = [n for s in ('train', 'valid', 'test') for n in splits[s]]
  unknown = sorted(set(listed) - set(names))
  missing = sorted(set(names) - set(listed))
  duplicated = sorted({n for n in listed if listed.count(n) > 1})
  if unknown or missing or duplicated:
    raise ValueError(f'--splits_json {path}: names not in the input folder {unknown[:10]}, '
                     f'folders not in any split {missing[:10]}, in several splits '
                     f'{duplicated[:10]}')
  return {s: sorted(splits[s]) for s in ('train', 'valid', 'test')}


def convert(input_dir, output_dir, name, split_ratios=(0.7, 0.15, 0.15), seed=22,
            splits_json=None, exclude=(), overwrite=False):
  """Converts an image-folder tree, leaving out files whose base name is in `exclude`;
  returns a ConversionReport. A non-empty `output_dir` is replaced only if `overwrite`."""
  top = _top_folders(input_dir)
  bilevel = all(not _list_images(os.path.join(input_dir, d)) and _subdirs(os.path.join(input_dir, d))
                for d in top)
  splits = (_splits_from_file(splits_json, top) if splits_json
            else split_names(top, split_ratios, seed))
  with _output_folder(output_dir, overwrite, input_dir) as work:
    return _convert_into(work, input_dir, output_dir, name, splits, bilevel, exclude)


def _convert_into(work, input_dir, output_dir, name, splits, bilevel, exclude):
  skipped, images_per_class, class_names, num_excluded = [], {}, {}, 0
  superclass_names, classes_per_superclass = {}, {}
  class_id = 0
  groups = [group for split in ('train', 'valid', 'test') for group in splits[split]]
  shown = progress.Progress(len(groups), f'converting {name}',
                            'superclasses' if bilevel else 'classes')
  for done, group in enumerate(groups, 1):
    if bilevel:
      superclass_id = len(superclass_names)
      superclass_names[superclass_id] = group
      members = [(os.path.join(input_dir, group, c), f'{group}/{c}')
                 for c in _subdirs(os.path.join(input_dir, group))]
      classes_per_superclass[superclass_id] = len(members)
    else:
      members = [(os.path.join(input_dir, group), group)]
    for directory, class_name in members:
      images_per_class[class_id], left_out = _convert_class(directory, class_id, work,
                                                            skipped, exclude)
      num_excluded += left_out
      class_names[class_id] = class_name
      class_id += 1
    shown.update(done)
  shown.close()
  counts = {s.upper(): len(splits[s]) for s in ('train', 'valid', 'test')}
  if bilevel:
    spec = spec_lib.BiLevelDatasetSpec(
        name=name, superclasses_per_split=counts, classes_per_superclass=classes_per_superclass,
        images_per_class=images_per_class, superclass_names=superclass_names,
        class_names=class_names, path=output_dir)
  else:
    spec = spec_lib.DatasetSpec(name=name, classes_per_split=counts,
                                images_per_class=images_per_class, class_names=class_names,
                                path=output_dir)
  atomic.write_json(os.path.join(work, f'{name}_splits.json'), splits)
  spec_lib.save(spec, work)
  return ConversionReport(spec=spec, skipped=skipped, num_images=sum(images_per_class.values()),
                          excluded=num_excluded)


def _read_pairs(path, flag, separator):
  pairs = []
  try:
    with open(path, encoding='utf-8') as f:
      for number, line in enumerate(f, 1):
        if not line.strip():
          continue
        fields = line.rstrip('\n').split(separator, 1)
        if len(fields) != 2 or not all(x.strip() for x in fields):
          raise ValueError(f'{flag} {path}, line {number}: expected two fields separated by '
                           f'{separator!r}; got {line.strip()[:80]!r}')
        pairs.append((fields[0].strip(), fields[1].strip()))
  except OSError as e:
    raise ValueError(f'{flag} {path}: cannot read ({e})') from e
  return pairs


def convert_hierarchical(input_dir, output_dir, name, is_a_path, valid_root, test_root,
                         words_path=None, exclude=(), overwrite=False, train_split_only=False):
  """Converts root/<wn_id>/<image> folders under a WordNet-style is-a relation (lines
  'parent child', as ImageNet's wordnet.is_a.txt) into records with a hierarchical spec.

  The classes below `valid_root` go to VALID, those below `test_root` to TEST (Meta-Dataset
  uses n02075296 'carnivore' and n03183080 'device' for ILSVRC 2012), the rest to TRAIN.
  Files whose base name is in `exclude` are left out (Meta-Dataset leaves out the ImageNet
  images that also appear in Caltech-101/256 and CUB). train_split_only=True puts every class
  in TRAIN under one graph, VALID and TEST empty (Meta-Dataset's ilsvrc_2012_v2, which MD-v2
  trains on; valid_root and test_root are then unused). Returns a ConversionReport.
  """
  classes = _top_folders(input_dir)
  words = dict(_read_pairs(words_path, '--words', '\t')) if words_path else {}
  graph = ontology.graph_from_is_a(_read_pairs(is_a_path, '--is_a', ' '), words)
  unknown = [c for c in classes if c not in graph]
  if unknown:
    raise ValueError(f'--input_dir class folders {unknown[:10]} are not in --is_a {is_a_path}')
  if train_split_only:
    subgraphs = {'TRAIN': ontology.sampling_graph(graph, classes), 'VALID': {}, 'TEST': {}}
    splits = {'TRAIN': sorted(classes), 'VALID': [], 'TEST': []}
  else:
    subgraphs, splits = ontology.split_subgraphs(graph, classes, valid_root, test_root)
  with _output_folder(output_dir, overwrite, input_dir) as work:
    return _convert_hierarchical_into(work, input_dir, output_dir, name, subgraphs, splits,
                                      exclude)


def _convert_hierarchical_into(work, input_dir, output_dir, name, subgraphs, splits, exclude):
  skipped, leaf_images, class_names, num_excluded = [], {}, {}, 0
  ordered = [wn_id for split in spec_lib.SPLITS for wn_id in splits[split]]
  with progress.Progress(len(ordered), f'converting {name}', 'classes') as shown:
    for class_id, wn_id in enumerate(ordered):
      leaf_images[wn_id], left_out = _convert_class(os.path.join(input_dir, wn_id), class_id,
                                                    work, skipped, exclude)
      num_excluded += left_out
      class_names[class_id] = wn_id
      shown.update(class_id + 1)
  spec = spec_lib.HierarchicalDatasetSpec(
      name=name, split_subgraphs=subgraphs,
      images_per_class={s: ontology.spanning_images(subgraphs[s], leaf_images)
                        for s in spec_lib.SPLITS},
      class_names=class_names, path=output_dir)
  atomic.write_json(os.path.join(work, f'{name}_splits.json'),
                    {s.lower(): splits[s] for s in spec_lib.SPLITS})
  spec_lib.save(spec, work)
  return ConversionReport(spec=spec, skipped=skipped, num_images=sum(leaf_images.values()),
                          excluded=num_excluded)
