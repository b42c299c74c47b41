"""Writing files so that nothing is ever left half-written: a temporary name beside the
target, renamed onto it only when the write succeeded."""

import contextlib
import json
import os
import tempfile


@contextlib.contextmanager
def atomic_path(path, suffix=''):
  """Yields a temporary path in `path`'s folder; renames it onto `path` if the block
  succeeds, removes it otherwise. `suffix` keeps extensions that writers insist on."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix='.tmp-', suffix=suffix, dir=directory)
  os.close(fd)
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_text(path, text):
  with atomic_path(path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
    f.write(text)


def write_json(path, payload, indent=2):
  with atomic_path(path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
    json.dump(payload, f, indent=indent)
