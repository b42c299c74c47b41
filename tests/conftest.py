import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# oneDNN on, explicitly (TensorFlow's default x86 build): the configuration in which a Conv2D
# on a zero-row batch returns a wrong shape on AVX-512 CPUs.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
# Every backbone and set encoder fails loudly on an empty batch, on any CPU
# (lite_tf.backbones.film.check_nonempty); inherited by the binaries the tests start.
os.environ['LITE_TF_CHECK_EMPTY_BATCHES'] = '1'

import re  # pylint: disable=g-import-not-at-top
import subprocess  # pylint: disable=g-import-not-at-top
import sys

import gin
import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Records written by Meta-Dataset's own converter (see ../shared/fixtures/README.md).
FIXTURE = os.path.join(REPO_ROOT, '..', 'shared', 'fixtures', 'meta_dataset', 'glyphs_dtd')


@pytest.fixture(autouse=True)
def _clear_gin():
  gin.clear_config()
  yield
  gin.clear_config()
  if 'keras' in sys.modules:  # a test's precision policy must not leak into the next
    sys.modules['keras'].config.set_dtype_policy('float32')


@pytest.fixture(scope='session')
def glyph_cache(tmp_path_factory):
  """A per-run cache directory for the rendered demo data."""
  path = tmp_path_factory.mktemp('glyph_cache')
  os.environ['LITE_TF_CACHE'] = str(path)
  return str(path)


@pytest.fixture(scope='session')
def fixture_dir():
  """The Meta-Dataset fixture folder, or a skip saying where it was looked for."""
  if not os.path.exists(os.path.join(FIXTURE, 'dataset_spec.json')):
    pytest.skip(f'Meta-Dataset fixture not found at {FIXTURE} (../shared/ beside the repo)')
  return FIXTURE


def small_episode(num_support=6, num_query=7, size=16, way=3, seed=0):
  """A random episode for property tests: support labels cycle over the classes."""
  from lite_tf.episode import Episode  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(seed)
  support_labels = np.arange(num_support) % way
  query_labels = rng.randint(0, way, num_query)
  return Episode.from_numpy(rng.uniform(-1, 1, (num_support, size, size, 3)), support_labels,
                            rng.uniform(-1, 1, (num_query, size, size, 3)), query_labels, way)


def small_protonets(seed):
  """ProtoNets on Conv-4 at 16x16, built, with weights from the Keras seed `seed`."""
  import keras  # pylint: disable=g-import-not-at-top
  from lite_tf.learners.protonets import ProtoNets  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(seed)
  model = ProtoNets(backbone='conv4', image_size=16)
  model(small_episode().to_dict())
  return model


def relative_error(grads, reference):
  """||grads - reference|| / ||reference|| over a list of tensors taken as one vector."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  diff = sum(float(tf.reduce_sum(tf.square(g - r))) for g, r in zip(grads, reference))
  norm = sum(float(tf.reduce_sum(tf.square(r))) for r in reference)
  return np.sqrt(diff / norm)


def run_binary(script, *args):
  """Runs bin/<script> with args in a fresh process; returns the CompletedProcess."""
  return subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'bin', script), *args],
                        capture_output=True, text=True, timeout=900)


@pytest.fixture(scope='session')
def trained_demo_dir(tmp_path_factory, glyph_cache):
  """A train_dir of a short ProtoNets run on the demo data (shared by the binaries' tests)."""
  train_dir = tmp_path_factory.mktemp('trained')
  result = run_binary('train.py', f'--train_dir={train_dir}',
                      f"--gin_config={os.path.join(REPO_ROOT, 'gin', 'demo_protonets.gin')}",
                      '--gin_bindings=run_training.num_steps=50',
                      '--gin_bindings=run_training.steps_per_log=25',
                      '--gin_bindings=run_training.valid_episodes=2',
                      '--gin_bindings=run_training.test_episodes=2')
  assert result.returncode == 0, result.stderr[-3000:]
  return train_dir


def glyph_folders(tmp_path, glyph_cache):
  """bin/personalize.py's inputs from the demo data: support/<class>/ of 5 images (40x40) for
  3 test classes, query/ of 3 more per class (28x28); returns (support, query, {query file:
  class})."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from lite_tf.data import glyphs  # pylint: disable=g-import-not-at-top
  data = glyphs.load(size=28, cache_dir=glyph_cache)
  by_class = data.images_by_class('test')
  classes = sorted(by_class)[:3]
  support, query, truth = tmp_path / 'support', tmp_path / 'query', {}
  for c in classes:
    os.makedirs(support / data.class_names[c].encode('unicode_escape').decode())
  for c in classes:
    name = data.class_names[c].encode('unicode_escape').decode()
    images = by_class[c]
    for i, image in enumerate(images[:5]):
      Image.fromarray(image).resize((40, 40)).save(support / name / f'{i}.png')
    os.makedirs(query, exist_ok=True)
    for i, image in enumerate(images[5:8]):
      path = query / f'{c}_{i}.png'
      Image.fromarray(image).save(path)
      truth[str(path)] = name
  return support, query, truth


# TensorFlow's C++ runtime writes these at import, before any Python code of the binary can
# say anything (TF_CPP_MIN_LOG_LEVEL does not reach them): they are not the binary's output.
_TF_STARTUP = re.compile(r'^([IWEF]\d{4} [\d:.]+ +\d+ \S+\] |WARNING: All log messages before '
                         r'absl::InitializeLog)')


def first_line(stderr):
  """The first line of stderr that the binary itself wrote."""
  return next((line for line in stderr.splitlines()
               if line.strip() and not _TF_STARTUP.match(line)), '')
