import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import gin  # pylint: disable=g-import-not-at-top
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Records written by Meta-Dataset's own converter (see ../shared/fixtures/README.md).
FIXTURE = os.path.join(REPO_ROOT, '..', 'shared', 'fixtures', 'meta_dataset', 'glyphs_dtd')


@pytest.fixture(autouse=True)
def _clear_gin():
  gin.clear_config()
  yield
  gin.clear_config()


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
