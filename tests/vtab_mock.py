"""Mock TFDS data for the 18 VTAB-v2 tasks: deterministic raw examples with the features each
task's label function reads, and a plain-numpy re-statement of VTAB's label functions (after
google-research/task_adaptation) to check lite_tf's TensorFlow ones against.

Used in-process by tests/test_vtab.py and, through `python tests/vtab_mock.py <script> args`,
to run a binary under tfds.testing.mock_data (the binary itself is unchanged).
"""

import contextlib
import runpy
import sys

import numpy as np

NUM_EXAMPLES = 1150  # per split: the 1000-example support set and a query split of 1150


def raw_example(dataset, i):
  """Raw example i of `dataset` (the TFDS name, config stripped), with a small image whose
  pixels encode i."""
  rng = np.random.RandomState(i)
  grey = dataset in ('dsprites', 'smallnorb')
  image = np.full([12, 10, 1 if grey else 3], i % 2 if dataset == 'dsprites' else i % 251,
                  np.uint8)
  ex = {'image': image}
  if dataset == 'clevr':
    n = 3 + i % 8
    coords = rng.uniform(7.5, 12.0, [n, 3]).astype(np.float32)
    ex['objects'] = {'size': np.zeros([n], np.int64), 'pixel_coords': coords}
  elif dataset == 'kitti':
    n = i % 4
    ex['objects'] = {'type': rng.randint(0, 8, [n]).astype(np.int64),
                     'location': rng.uniform(2.0, 40.0, [n, 3]).astype(np.float32)}
  elif dataset == 'dsprites':
    ex['label_x_position'] = np.int64(i % 32)
    ex['label_orientation'] = np.int64((i * 7) % 40)
  elif dataset == 'smallnorb':
    ex['label_azimuth'] = np.int64(i % 18)
    ex['label_elevation'] = np.int64((i * 5) % 9)
  else:
    ex['label'] = np.int64((i * 13) % NUM_CLASSES_OF[dataset])
  return ex


NUM_CLASSES_OF = {'caltech101': 102, 'cifar100': 100, 'oxford_flowers102': 102,
                  'oxford_iiit_pet': 37, 'sun397': 397, 'svhn_cropped': 10, 'eurosat': 10,
                  'resisc45': 45, 'patch_camelyon': 2, 'diabetic_retinopathy_detection': 5,
                  'dmlab': 6}


def reference_label(task_name, ex):
  """VTAB's label of a raw example, in numpy (the LITE reference's formulation)."""
  if task_name == 'clevr_count':
    return len(ex['objects']['size']) - 3
  if task_name == 'clevr_distance':
    dist = np.amin(ex['objects']['pixel_coords'][:, 2])
    thrs = np.array([0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0])
    return int(np.amax(np.where((thrs - dist) < 0)))
  if task_name == 'kitti_distance':
    vehicle_z = ex['objects']['location'][:, 2][ex['objects']['type'] < 3]
    dist = np.amin(np.append(vehicle_z, 1000.0))
    thrs = np.array([-100.0, 8.0, 20.0, 999.0])
    return int(np.amax(np.where((thrs - dist) < 0)))
  if task_name == 'dsprites_location':
    return int(np.floor(ex['label_x_position'] / (32 / 16)))
  if task_name == 'dsprites_orientation':
    return int(np.floor(ex['label_orientation'] / (40 / 16)))
  if task_name == 'smallnorb_azimuth':
    return int(ex['label_azimuth'])
  if task_name == 'smallnorb_elevation':
    return int(ex['label_elevation'])
  return int(ex['label'])


REQUESTED_SPLITS = []  # (dataset name, split string) of every mocked read, in order


def _as_dataset(self, split, **kwargs):
  """Replaces the TFDS builder's _as_dataset: NUM_EXAMPLES raw examples; the query-type
  splits are offset so that support and query examples differ."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  del kwargs
  name = self.name
  REQUESTED_SPLITS.append((name, str(split)))
  offset = 0 if str(split).startswith('train[:') else 100000
  examples = [raw_example(name, offset + i) for i in range(NUM_EXAMPLES)]
  signature = tf.nest.map_structure(
      lambda a: tf.TensorSpec([None] * np.ndim(a), tf.as_dtype(np.asarray(a).dtype)),
      examples[0])
  return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=signature)


@contextlib.contextmanager
def mocked():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=_as_dataset):
    yield


if __name__ == '__main__':
  script, args = sys.argv[1], sys.argv[2:]
  sys.argv = [script] + args
  with mocked():
    runpy.run_path(script, run_name='__main__')
