"""Every gin file under gin/ parses against the registered configurables and builds a model."""

import glob
import os

import gin
import pytest

from conftest import REPO_ROOT
from lite_tf import config
from lite_tf.learners import base

GIN_FILES = sorted(glob.glob(os.path.join(REPO_ROOT, 'gin', '**', '*.gin'), recursive=True))


def test_there_are_gin_files():
  assert GIN_FILES


@pytest.mark.parametrize('path', GIN_FILES, ids=os.path.basename)
def test_gin_file_parses_and_builds_learner(path):
  config.parse([path], [])
  learner = gin.query_parameter('run_training.learner').scoped_configurable_fn()
  from lite_tf.lite import model  # pylint: disable=g-import-not-at-top
  meta_model = model.make_meta_model(learner)
  assert isinstance(meta_model, model.EpisodicModel)
  if isinstance(learner, base.Learner):
    assert meta_model.num_backprop > 0
