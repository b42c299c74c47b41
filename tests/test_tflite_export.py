"""The adapted classifier as a TFLite flatbuffer (lite_tf.export_tflite, bin/personalize.py
--export_tflite): float32 logits equal the classifier's own, int8 predictions agree on most
frames, and the flags are refused by name before any work."""

import json
import os
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import first_line
from conftest import glyph_folders
from conftest import run_binary
from lite_tf import export_tflite
from lite_tf import personalize
from lite_tf.learners import cnaps
from lite_tf.learners import protonets
from lite_tf.learners import simple_cnaps

SIZE = 16
# The untrained Conv-4's features are ~0.2: with Simple CNAPs' beta = 1, Q_k would be nearly
# beta I and its Mahalanobis factors would hardly count in the logits. beta = 1e-3 lets the
# covariances dominate, so the test sees a wrong inverse (servable_task).
BETA = 1e-3
LEARNERS = {
    'protonets': lambda: protonets.ProtoNets(backbone='conv4', image_size=SIZE),
    'cnaps': lambda: cnaps.make_cnaps(backbone='conv4', image_size=SIZE),
    'simple_cnaps': lambda: simple_cnaps.make_simple_cnaps(backbone='conv4', image_size=SIZE,
                                                           beta=BETA),
    'simple_cnaps_direct': lambda: simple_cnaps.make_simple_cnaps(
        backbone='conv4', image_size=SIZE, beta=BETA, solver='direct'),
}


def _frames(num_per_class, way=3, seed=0):
  """uint8 frames [way * num_per_class, S, S, 3]: a colour per class plus noise, so that
  the classes differ and an untrained backbone still separates them most of the time."""
  rng = np.random.RandomState(seed)
  colours = np.random.RandomState(99).uniform(40, 215, (way, 1, 1, 3))
  labels = np.repeat(np.arange(way), num_per_class)
  images = colours[labels] + rng.normal(0, 40, (len(labels), SIZE, SIZE, 3))
  return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int32)


# FiLM (Simple CNAPs' adapted backbone) and prototypes by default; CNAPs' generated head and
# the 'direct' Mahalanobis solver in the slow suite (20 s more).
SLOW = ('cnaps', 'simple_cnaps_direct')


@pytest.fixture(scope='module', params=[
    pytest.param(n, marks=[pytest.mark.slow] * (n in SLOW)) for n in sorted(LEARNERS)])
def adapted(request):
  """(classifier, its float32 flatbuffer, query frames) for each LITE learner."""
  keras.utils.set_random_seed(0)
  learner = LEARNERS[request.param]()
  support, labels = _frames(6)
  personalize.build(learner, support, labels)
  classifier = personalize.AdaptedClassifier(
      learner, personalize.adapt(learner, support, labels), ['mug', 'keys', 'cane'], SIZE)
  query, _ = _frames(10, seed=1)
  return classifier, support, export_tflite.convert(classifier), query


def test_float32_logits_equal_the_classifiers(adapted):
  classifier, _, flatbuffer, query = adapted
  out = export_tflite.interpreter(flatbuffer)(images=query)
  expected = classifier.logits(tf.cast(query, tf.float32)).numpy()
  scale = np.abs(expected).max()
  np.testing.assert_allclose(out['logits'] / scale, expected / scale, atol=1e-4)
  served = classifier.serve(query)  # the SavedModel's signature (test_personalize)
  np.testing.assert_allclose(out['probabilities'], served['probabilities'].numpy(), atol=1e-5)
  assert list(out['class_name']) == list(served['class_name'].numpy())


def test_int8_predictions_agree_with_float32(adapted):
  classifier, support, flatbuffer, query = adapted
  quantized = export_tflite.convert(classifier, 'int8', support)
  assert len(quantized) < 0.4 * len(flatbuffer)  # weights stored as int8
  float_index = export_tflite.interpreter(flatbuffer)(images=query)['class_index']
  int8_index = export_tflite.interpreter(quantized)(images=query)['class_index']
  assert np.mean(int8_index == float_index) >= 0.8, (int8_index, float_index)


def test_the_adapted_state_is_in_the_flatbuffer():
  """Two support sets, one backbone: the flatbuffers classify differently (the state is
  constants of each flatbuffer, not something the runtime reads elsewhere)."""
  keras.utils.set_random_seed(0)
  learner = LEARNERS['protonets']()
  support, labels = _frames(6)
  personalize.build(learner, support, labels)
  swapped = (labels + 1) % 3
  outputs = []
  for support_labels in (labels, swapped):
    classifier = personalize.AdaptedClassifier(
        learner, personalize.adapt(learner, support, support_labels), ['a', 'b', 'c'], SIZE)
    outputs.append(export_tflite.interpreter(export_tflite.convert(classifier))(images=support))
  np.testing.assert_array_equal(outputs[1]['class_index'], (outputs[0]['class_index'] + 1) % 3)


def test_paths_refused_by_name(tmp_path):
  existing = tmp_path / 'old.tflite'
  existing.write_bytes(b'')
  for path, message in [(str(tmp_path / 'model.onnx'), 'must end in .tflite'),
                        (str(existing), 'already exists; choose a new file'),
                        (str(tmp_path / 'no' / 'm.tflite'), 'no such folder')]:
    with pytest.raises(ValueError, match=f'--export_tflite=.*{message}'):
      export_tflite.check_path(path)


def test_binary_exports_a_flatbuffer_that_labels_like_the_binary(trained_demo_dir, tmp_path,
                                                                 glyph_cache):
  support, query, _ = glyph_folders(tmp_path, glyph_cache)
  model, predictions_path = tmp_path / 'objects.tflite', tmp_path / 'predictions.json'
  result = run_binary('personalize.py', f'--train_dir={trained_demo_dir}',
                      f'--support_dir={support}', f'--query={query}',
                      f'--export_tflite={model}', f'--output={predictions_path}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'exported TFLite flatbuffer (float32' in result.stdout, result.stdout
  assert not [f for f in os.listdir(tmp_path) if f.startswith('.tmp-')]
  predictions = json.loads(predictions_path.read_text())['predictions']
  # The flatbuffer takes frames at the learner's size (28: demo_protonets.gin); the binary
  # read the query files resized to it.
  images, _ = personalize.read_query_files([p['file'] for p in predictions], 28)
  out = export_tflite.interpreter(str(model))(images=images)
  assert [n.decode() for n in out['class_name']] == [p['class'] for p in predictions]
  expected = [[p['probabilities'][c] for c in sorted(p['probabilities'])] for p in predictions]
  np.testing.assert_allclose(out['probabilities'], np.asarray(expected), atol=1e-5)


@pytest.mark.parametrize('flags,message', [
    (['--export_tflite={tmp}/model.onnx'], "error: --export_tflite='{tmp}/model.onnx' must end "
                                           'in .tflite'),
    # test_paths_refused_by_name has these two without a process each.
    pytest.param(['--export_tflite={tmp}/old.tflite'], 'already exists; choose a new file',
                 marks=pytest.mark.slow),
    pytest.param(['--export_tflite={tmp}/no/m.tflite'], 'no such folder',
                 marks=pytest.mark.slow),
    (['--tflite_quantize=int8'], 'error: --tflite_quantize=int8 needs --export_tflite'),
    (['--export_tflite={tmp}/m.tflite', '--tflite_quantize=int4'],
     'flag --tflite_quantize=int4: value should be one of <none|int8>'),
], ids=['suffix', 'existing', 'no_folder', 'quantize_alone', 'quantize_value'])
def test_binary_refuses_bad_flags_before_any_work(tmp_path, flags, message):
  (tmp_path / 'old.tflite').write_bytes(b'kept')
  start = time.monotonic()
  # --train_dir and --support_dir point nowhere: the flags are checked before either is read.
  result = run_binary('personalize.py', f'--train_dir={tmp_path}/none',
                      f'--support_dir={tmp_path}/none',
                      *[f.format(tmp=tmp_path) for f in flags])
  assert result.returncode == 1, result.stderr[-3000:]
  assert message.format(tmp=tmp_path) in first_line(result.stderr), result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  assert (tmp_path / 'old.tflite').read_bytes() == b'kept'
  assert time.monotonic() - start < 60


@pytest.mark.slow  # two more conversions (about 20 s)
@pytest.mark.parametrize('statistics', ['frozen_support', 'task_norm_i'])
def test_per_task_batch_norm_statistics_export(statistics):
  """The support set's BatchNorm statistics (and TaskNorm-I's instance moments, computed per
  frame) go into the flatbuffer: its logits equal the classifier's."""
  import gin  # pylint: disable=g-import-not-at-top
  gin.bind_parameter('batch_norm.statistics', statistics)
  keras.utils.set_random_seed(0)
  learner = LEARNERS['protonets']()
  assert learner.uses_task_statistics()
  support, labels = _frames(6)
  personalize.build(learner, support, labels)
  classifier = personalize.AdaptedClassifier(
      learner, personalize.adapt(learner, support, labels), ['a', 'b', 'c'], SIZE)
  query, _ = _frames(10, seed=1)
  out = export_tflite.interpreter(export_tflite.convert(classifier))(images=query)
  expected = classifier.logits(tf.cast(query, tf.float32)).numpy()
  scale = np.abs(expected).max()
  np.testing.assert_allclose(out['logits'] / scale, expected / scale, atol=1e-4)
