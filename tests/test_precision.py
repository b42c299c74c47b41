"""Mixed precision (lite_tf/precision.py): LITE's exactness in every policy, float32 where it
matters, loss scaling for float16, and the meta-gradient's agreement with float32.

Tolerances: float32 1e-5 (round-off of the summation order); the reduced-precision policies
compare LITE with exact back-propagation *in the same policy*, where the only differences are
those of the batch composition of each kernel call (chunks against one batch) rounded to
bfloat16 (8 bits of mantissa) or float16 (11): 2e-2 and 5e-3 relative.
"""

import itertools
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT, first_line, relative_error, run_binary, small_episode
from lite_tf import config
from lite_tf import precision
from lite_tf.learners.protonets import ProtoNets
from lite_tf.learners.simple_cnaps import SimpleCnaps
from lite_tf.lite import estimator
from lite_tf.lite import model as lite_model

TOLERANCE = {'float32': 1e-5, 'mixed_bfloat16': 2e-2, 'mixed_float16': 5e-3}
LEARNERS = {
    'protonets': lambda: ProtoNets(backbone='conv4', image_size=16),
    'simple_cnaps': lambda: SimpleCnaps(backbone='conv4', image_size=16, set_encoder_norm='none'),
}


def _build(name, policy, episode):
  """The learner `name` built under `policy`, with the weights of seed 0 (the same in every
  policy: variables are float32 whatever the policy)."""
  keras.config.set_dtype_policy(policy)
  try:
    keras.utils.set_random_seed(0)
    learner = LEARNERS[name]()
    learner(episode.to_dict())
  finally:
    keras.config.set_dtype_policy('float32')
  return learner


def _flat(grads):
  return np.concatenate([np.asarray(g, np.float64).ravel() for g in grads])


@pytest.mark.parametrize('policy', precision.POLICIES)
@pytest.mark.parametrize('name', sorted(LEARNERS))
def test_lite_is_exact_in_every_precision(name, policy):
  """In each policy: the average of LITE over all C(6, 2) subsets is the exact gradient, and
  |H| = N is exact; everything LITE sums stays float32."""
  episode = small_episode(num_support=6, num_query=5)
  learner = _build(name, policy, episode)
  variables = learner.trainable_variables
  assert {v.dtype for v in variables} == {'float32'}
  if policy != 'float32':
    assert learner.backbone.compute_dtype == policy.split('_')[1]
  contributions = learner.support_contributions(
      tf.convert_to_tensor(episode.support_images),
      learner.task_context(learner.context_contributions(episode.support_images))
      if learner.has_context else None)
  assert contributions.dtype == tf.float32
  _, full, _ = estimator.full_task_gradients(learner, episode, variables)
  assert all(g.dtype == tf.float32 for g in full)
  total = None
  subsets = list(itertools.combinations(range(6), 2))
  for subset in subsets:
    _, grads, _ = estimator.lite_task_gradients(
        learner, episode, variables, num_backprop=2, chunk_size=3, query_batch_size=5,
        backprop_indices=tf.constant([subset]), context_indices=tf.constant([subset]))
    total = grads if total is None else [t + g for t, g in zip(total, grads)]
  mean = [t / len(subsets) for t in total]
  if name == 'protonets':  # single sum: unbiased; Simple CNAPs' product of sums is not
    assert relative_error(mean, full) < TOLERANCE[policy]
  _, exact, _ = estimator.lite_task_gradients(learner, episode, variables, 6, 4, 5)
  assert relative_error(exact, full) < TOLERANCE[policy]


@pytest.mark.parametrize('policy', ['mixed_bfloat16', 'mixed_float16'])
@pytest.mark.parametrize('name', sorted(LEARNERS))
def test_meta_gradient_agrees_with_float32(name, policy):
  """The same weights and task: the reduced-precision LITE gradient points where float32's
  does (cosine printed; docs/BENCHMARKS.md reports it at full scale)."""
  episode = small_episode(num_support=12, num_query=6, size=16, way=3)
  grads = {}
  for p in ('float32', policy):
    learner = _build(name, p, episode)
    _, g, _ = estimator.lite_task_gradients(learner, episode, learner.trainable_variables, 4,
                                            5, 3, seed=(0, 1))
    grads[p] = _flat(g)
  a, b = grads['float32'], grads[policy]
  cosine = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
  print(f'{name} {policy}: cosine to float32 {cosine:.5f}')
  assert cosine > 0.99


def test_float16_scales_the_loss_and_keeps_float32_state():
  """mixed_float16: the meta-optimizer is a LossScaleOptimizer; a training step's gradients
  come back unscaled (the same update as float32's to float16 accuracy, checked with SGD)."""
  episode = small_episode(num_support=6, num_query=5)
  updates = {}
  for policy in ('float32', 'mixed_float16'):
    learner = _build('protonets', policy, episode)
    before = [v.numpy() for v in learner.trainable_variables]
    model = lite_model.LiteModel(learner, num_backprop=6, chunk_size=3, query_batch_size=5)
    optimizer = precision.wrap_optimizer(
        lite_model.make_optimizer(learning_rate=0.1, algorithm='sgd'), policy)
    model.compile(optimizer=optimizer)
    if policy == 'mixed_float16':
      assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    model.train_step(episode.to_dict())
    if policy == 'mixed_float16':
      assert float(model.optimizer.dynamic_scale.numpy()) > 1  # scaling was on
      assert not {v.dtype for v in model.optimizer.variables} & {'float16', 'bfloat16'}
    updates[policy] = [v.numpy() - b for v, b in zip(learner.trainable_variables, before)]
  # Unscaled: an update off by the loss scale (2^15 at the start) would be off by 3e4.
  assert relative_error(updates['mixed_float16'], updates['float32']) < 5e-2
  assert np.linalg.norm(_flat(updates['float32'])) > 1e-4  # the step did move the weights


def test_unknown_precision_is_refused_naming_the_binding(tmp_path):
  result = run_binary('train.py', f'--train_dir={tmp_path}',
                      '--gin_config=' + os.path.join(REPO_ROOT, 'gin', 'demo_protonets.gin'),
                      "--gin_bindings=precision.policy='float8'")
  assert result.returncode == 1
  line = first_line(result.stderr)
  assert line.startswith('error:') and 'precision.policy' in line and 'float8' in line, line
  assert "'mixed_bfloat16'" in line


def test_float16_on_a_machine_that_cannot_run_it_is_refused(monkeypatch):
  monkeypatch.setattr(precision, '_probe_float16', lambda device: 'no float16 Conv2D kernel')
  with pytest.raises(precision.PrecisionError, match=r"precision.policy='mixed_float16'.*"
                     r"cannot run float16 \(no float16 Conv2D kernel\).*mixed_bfloat16"):
    config.parse([], ["precision.policy = 'mixed_float16'"])
  assert precision.current() == 'float32'  # nothing was changed


@pytest.mark.parametrize('name', ['maml', 'finetuner'])
def test_self_adapting_learners_refuse_mixed_precision(tmp_path, name):
  from lite_tf.training import train  # pylint: disable=g-import-not-at-top
  config.parse([os.path.join(REPO_ROOT, 'gin', f'demo_{name}.gin')],
               ["precision.policy = 'mixed_bfloat16'"])
  with pytest.raises(ValueError, match=r"precision.policy='mixed_bfloat16'.*float32 only"):
    train.run_training(str(tmp_path))


@pytest.mark.parametrize('flags, native', [('fpu sse2 avx avx2 fma', False),
                                           ('fpu avx2 avx512f avx512_bf16', True),
                                           ('fpu avx2 amx_bf16 amx_tile', True)])
def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path, flags, native):
  cpuinfo = tmp_path / 'cpuinfo'
  cpuinfo.write_text(f'processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\n'
                     f'processor\t: 1\nflags\t\t: {flags}\n')
  assert precision.cpu_has_native_bfloat16(str(cpuinfo)) is native
  assert precision.cpu_has_native_bfloat16(str(tmp_path / 'absent')) is None


@pytest.mark.parametrize('native, warned', [(False, True), (True, False), (None, False)])
def test_emulated_bfloat16_is_warned_about(monkeypatch, native, warned):
  """On a CPU without native bfloat16 (and no GPU) the policy still applies, with a warning
  that it will be slower; a CPU with it, or one whose flags are unknown, gets none."""
  monkeypatch.setattr(precision, 'cpu_has_native_bfloat16', lambda *a: native)
  messages = []
  monkeypatch.setattr(precision.logging, 'warning', lambda msg, *a: messages.append(msg % a))
  try:
    assert precision.apply('mixed_bfloat16') == 'mixed_bfloat16'
    assert precision.current() == 'mixed_bfloat16'
  finally:
    precision.apply('float32')
  if tf.config.list_logical_devices('GPU'):
    assert not messages
  else:
    assert bool(messages) is warned, messages
    if warned:
      assert 'without native bfloat16' in messages[0] and 'avx512_bf16' in messages[0]


def test_applying_bfloat16_leaves_the_tf_runtime_unstarted():
  """config.parse applies the policy before bin/train.py creates its distribution strategy,
  and MultiWorkerMirroredStrategy must configure TF's runtime before it starts: applying
  mixed_bfloat16 (with its CPU check) must not start it."""
  code = ('from lite_tf import precision\n'
          "precision.apply('mixed_bfloat16')\n"
          'from tensorflow.python.eager import context\n'
          'print(context.context()._initialized)\n')  # pylint: disable=protected-access
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                        timeout=120, cwd=REPO_ROOT)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip().splitlines()[-1] == 'False', proc.stdout
