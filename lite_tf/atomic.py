"""Writing files so that nothing is ever left half-written: a temporary name beside the
target, renamed onto it only when the write succeeded.

Temporary names start with `.tmp-` (files) or `.<name>.tmp-` / `.<name>.old-` (folders), so
`remove_orphans` can clear what a killed process left behind without touching anything else.
Files and folders get the permissions the process's umask gives a plain `open` or `mkdir`
(mkstemp alone would leave them 0600).
"""

import contextlib
import errno
import glob
import json
import os
import shutil
import tempfile
import uuid

TMP_PREFIX = '.tmp-'


def current_umask():
  """The process's umask, read without changing it where /proc allows."""
  try:
    with open('/proc/self/status', encoding='ascii') as f:
      for line in f:
        if line.startswith('Umask:'):
          return int(line.split()[1], 8)
  except OSError:
    pass
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def _honour_umask(path, directory=False):
  os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def check_free_space(directory, num_bytes, what):
  """Raises OSError(ENOSPC) naming `what` when `directory`'s file system has less than
  `num_bytes` free: some writers (HDF5) crash rather than fail cleanly on a full disk."""
  try:
    free = shutil.disk_usage(directory).free
  except OSError:
    return
  if free < num_bytes:
    raise OSError(errno.ENOSPC, f'no space left on the device for {what}: '
                  f'{num_bytes / 2**20:.1f} MiB needed, {free / 2**20:.1f} MiB free',
                  directory)


@contextlib.contextmanager
def atomic_path(path, suffix=''):
  """Yields a temporary path in `path`'s folder; renames it onto `path` if the block
  succeeds, removes it otherwise. `suffix` keeps extensions that writers insist on."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=suffix, dir=directory)
  os.close(fd)
  try:
    yield tmp
    _honour_umask(tmp)
    os.replace(tmp, path)
  except BaseException as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    if isinstance(e, OSError) and e.errno is not None and not e.filename:
      raise OSError(e.errno, f'{e.strerror} (writing {path}; nothing was replaced)',
                    path) from e
    raise


def write_text(path, text):
  with atomic_path(path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
    f.write(text)


def write_json(path, payload, indent=2):
  with atomic_path(path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
    json.dump(payload, f, indent=indent)


def _staging_names(path):
  parent, base = os.path.split(os.path.abspath(path))
  return parent, f'.{base}.tmp-', f'.{base}.old-'


def recover_folder(path):
  """Clears what a killed `atomic_folder` left beside `path`: its unfinished new folder, and
  the previous folder moved aside (put back if `path` itself is gone, else removed)."""
  parent, tmp_prefix, old_prefix = _staging_names(path)
  for stale in glob.glob(os.path.join(glob.escape(parent), glob.escape(tmp_prefix) + '*')):
    shutil.rmtree(stale, ignore_errors=True)
  for old in sorted(glob.glob(os.path.join(glob.escape(parent), glob.escape(old_prefix) + '*'))):
    if not os.path.exists(path):
      os.rename(old, path)
    else:
      shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(path):
  """Yields an empty temporary folder beside `path`; when the block succeeds it replaces
  `path` (the old folder, if any, is moved aside, the new one renamed into place, then the
  old one removed), so `path` holds the old contents or the new ones, never a mix. On failure
  the temporary folder is removed and `path` is untouched."""
  parent, tmp_prefix, old_prefix = _staging_names(path)
  os.makedirs(parent, exist_ok=True)
  recover_folder(path)
  tmp = tempfile.mkdtemp(prefix=tmp_prefix, dir=parent)
  old = None
  try:
    yield tmp
    _honour_umask(tmp, directory=True)
    if os.path.exists(path):
      old = os.path.join(parent, old_prefix + uuid.uuid4().hex[:8])
      os.rename(path, old)
    os.rename(tmp, path)
  except BaseException:
    if old is not None and not os.path.exists(path):
      os.rename(old, path)  # failed between the two renames: the old folder goes back
      old = None
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


def remove_orphans(directory):
  """Removes the temporary files of interrupted atomic writes in `directory` (`.tmp-*`
  files) and TensorFlow checkpoint writes (`ckpt-*_temp` folders); nothing else."""
  if not os.path.isdir(directory):
    return []
  removed = []
  for entry in os.listdir(directory):
    full = os.path.join(directory, entry)
    if entry.startswith(TMP_PREFIX) and os.path.isfile(full):
      os.remove(full)
      removed.append(full)
    elif entry.startswith('ckpt-') and entry.endswith('_temp') and os.path.isdir(full):
      shutil.rmtree(full, ignore_errors=True)
      removed.append(full)
  return removed
