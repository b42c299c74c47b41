"""Every gin file under gin/ parses against the registered configurables and builds what it
configures; one binding swaps the learner or the backbone."""

import glob
import os

import gin
import pytest

from conftest import FIXTURE
from conftest import REPO_ROOT
from lite_tf import config
from lite_tf.learners import base

GIN_FILES = sorted(glob.glob(os.path.join(REPO_ROOT, 'gin', '**', '*.gin'), recursive=True))


def test_there_are_gin_files():
  assert GIN_FILES


def _build_learner():
  return gin.query_parameter('run_training.learner').scoped_configurable_fn()


@pytest.mark.parametrize('path', GIN_FILES, ids=os.path.basename)
def test_gin_file_parses_and_builds(path):
  config.parse([path], [])
  from lite_tf.lite import model  # pylint: disable=g-import-not-at-top

  bindings = gin.config_str()
  if 'run_pretraining.' in bindings:
    if 'labelled_batches.records_dir' in bindings and not os.path.isdir(FIXTURE):
      pytest.skip(f'Meta-Dataset fixture not found at {FIXTURE}')
    source = gin.query_parameter('run_pretraining.batch_source').scoped_configurable_fn
    dataset, num_classes = source()
    images, labels = next(iter(dataset))
    assert num_classes > 1 and images.shape[0] == labels.shape[0]

    return
  if 'vtab_md_suite.enabled' in bindings:  # an evaluation fragment for bin/evaluate.py
    from lite_tf.training import vtab_md_evaluation  # pylint: disable=g-import-not-at-top
    assert vtab_md_evaluation.is_vtab_md_run()
    assert gin.query_parameter('run_vtab_md_evaluation.md_episodes') == 600
    return
  if 'gradient_study.' in bindings:  # bin/gradient_study.py's config
    learner = gin.query_parameter('gradient_study.learner').scoped_configurable_fn()
    assert isinstance(learner, base.Learner)
    assert gin.query_parameter('gradient_study.subset_sizes') == [1, 5, 10, 20, 40, 60, 80, 100]
    assert gin.query_parameter('glyph_episodes.way') * gin.query_parameter(
        'glyph_episodes.shot') == 100
    return
  if 'run_training.' not in bindings:  # a fragment meant to be included (gin/learners.gin)
    assert os.path.basename(path) == 'learners.gin'
    return
  learner = _build_learner()
  meta_model = model.make_meta_model(learner)
  assert isinstance(meta_model, model.EpisodicModel)
  if isinstance(learner, base.Learner):
    assert meta_model.num_backprop > 0


@pytest.mark.parametrize('learner,cls', [('protonets', 'ProtoNets'), ('cnaps', 'Cnaps'),
                                          ('simple_cnaps', 'SimpleCnaps')])
def test_one_binding_swaps_the_learner(learner, cls):
  config.parse([os.path.join(REPO_ROOT, 'gin', 'demo_simple_cnaps.gin')],
               [f'run_training.learner = @{learner}()'])
  built = _build_learner()
  assert type(built).__name__ == cls
  assert built.backbone.name == 'conv4' and built.image_size == 28


@pytest.mark.parametrize('backbone', ['resnet18', 'efficientnet_b0'])
def test_one_binding_swaps_the_backbone(backbone):
  config.parse([os.path.join(REPO_ROOT, 'gin', 'demo_simple_cnaps.gin')],
               [f"BACKBONE = '{backbone}'"])
  assert _build_learner().backbone.name == backbone


SAVED_CONFIGS = os.path.join(REPO_ROOT, 'tests', 'data', 'operative_configs')


@pytest.mark.parametrize('name', ['demo_protonets.gin', 'orbit_demo_protonets.gin'])
def test_an_operative_config_saved_before_the_data_move_still_parses(name):
  """Gin names do not depend on the module a configurable lives in: a train_dir's
  operative_config.gin from before lite_tf/data was split by source still parses, and its
  bindings are the ones it holds."""
  path = os.path.join(SAVED_CONFIGS, name)
  config.parse([path], [])
  with open(path, encoding='utf-8') as f:
    saved = f.read()
  assert config.changed_bindings(saved, gin.config_str()) == []
