"""bin/convert_to_records.py: image folders -> records that read back pixel for pixel."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image
import pytest

from conftest import REPO_ROOT
from lite_tf import atomic
from lite_tf.data.meta_dataset import dataset_spec
from lite_tf.data.meta_dataset import reader
from lite_tf.data.meta_dataset import records
from lite_tf.data.meta_dataset import sampling


def _make_folder(root, classes=8, per_class=6, size=24, bilevel=False):
  rng = np.random.RandomState(0)
  pixels = {}
  for c in range(classes):
    parts = ([f'alphabet{c % 2}', f'char{c}'] if bilevel else [f'class{c}'])
    directory = os.path.join(root, *parts)
    os.makedirs(directory)
    for i in range(per_class):
      image = rng.randint(0, 256, (size, size, 3), dtype=np.uint8)
      path = os.path.join(directory, f'{i}.png')
      Image.fromarray(image).save(path)
      pixels[path] = image
  return pixels


def _convert(*args):
  return subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'bin', 'convert_to_records.py'),
                         *args], capture_output=True, text=True, timeout=300)


def test_round_trip_pixels_match(tmp_path):
  pixels = _make_folder(str(tmp_path / 'images'))
  with open(tmp_path / 'images' / 'class3' / 'broken.jpg', 'w') as f:
    f.write('not an image')
  result = _convert(f'--input_dir={tmp_path / "images"}', f'--output_dir={tmp_path / "out"}',
                    '--split_ratios=0.5,0.25,0.25', '--seed=1')
  assert result.returncode == 0, result.stderr
  assert 'warning: left out 1 unreadable image(s)' in result.stderr
  assert 'broken.jpg' in result.stderr
  spec = dataset_spec.load(str(tmp_path / 'out'))
  assert [len(spec.class_ids(s)) for s in ('train', 'valid', 'test')] == [4, 2, 2]
  assert sum(spec.images_per_class.values()) == 48
  for class_id, name in spec.class_names.items():
    images, labels = records.read_class(spec, class_id, image_size=24)
    assert set(labels.numpy()) == {class_id}
    source = [pixels[os.path.join(tmp_path, 'images', name, f'{i}.png')] for i in range(6)]
    np.testing.assert_allclose((images.numpy() + 1) * 127.5, np.stack(source), atol=1e-3)
  assert not [f for f in os.listdir(tmp_path / 'out') if f.startswith('.tmp')]
  # Episodes read back through the sampler.
  config = sampling.EpisodeDescriptionConfig(min_ways=2, num_ways=2, num_support=2, num_query=3)
  source = reader.RecordsEpisodeSource(str(tmp_path / 'out'), 'train', image_size=24,
                                       config=config)
  episode = next(source.episodes())
  assert episode['support_images'].shape == (4, 24, 24, 3)


def test_bilevel_layout_and_splits_json(tmp_path):
  _make_folder(str(tmp_path / 'images'), classes=6, bilevel=True)
  splits = tmp_path / 'splits.json'
  splits.write_text(json.dumps({'train': ['alphabet0'], 'valid': [], 'test': ['alphabet1']}))
  result = _convert(f'--input_dir={tmp_path / "images"}', f'--output_dir={tmp_path / "out"}',
                    f'--splits_json={splits}', '--name=omni')
  assert result.returncode == 0, result.stderr
  spec = dataset_spec.load(str(tmp_path / 'out'))
  assert isinstance(spec, dataset_spec.BiLevelDatasetSpec)
  assert [spec.class_names[c] for c in spec.class_ids('train')] == [
      'alphabet0/char0', 'alphabet0/char2', 'alphabet0/char4']
  assert list(spec.class_ids('test')) == [3, 4, 5]




def test_replacing_a_dataset_survives_a_kill_midway(tmp_path):
  """SIGKILL while --overwrite writes the new dataset: the old one still reads, whole; the
  next run clears the unfinished folder and replaces the dataset."""
  _make_folder(str(tmp_path / 'old_images'), classes=4, per_class=3)
  out = tmp_path / 'out'
  assert _convert(f'--input_dir={tmp_path / "old_images"}', f'--output_dir={out}',
                  '--split_ratios=0.5,0.25,0.25').returncode == 0
  old_spec = dataset_spec.load(str(out))
  _make_folder(str(tmp_path / 'new_images'), classes=60, per_class=40, size=64)
  command = [sys.executable, os.path.join(REPO_ROOT, 'bin', 'convert_to_records.py'),
             f'--input_dir={tmp_path / "new_images"}', f'--output_dir={out}', '--overwrite']
  proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  staged = []
  while proc.poll() is None and time.time() < deadline:
    staged = [d for d in tmp_path.iterdir() if d.name.startswith('.out.tmp-')]
    if staged and len(list(staged[0].glob('*.tfrecords'))) >= 3:
      break
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, 'the conversion ended before it could be killed'
  assert staged, 'no temporary folder was seen'
  spec = dataset_spec.load(str(out))  # the old dataset, complete
  assert spec.class_names == old_spec.class_names
  for class_id in range(4):
    images, _ = records.read_class(spec, class_id, image_size=24)
    assert images.shape[0] == 3
  assert _convert(*command[2:]).returncode == 0
  assert sorted(p.name for p in tmp_path.iterdir()) == ['new_images', 'old_images', 'out']
  assert len(dataset_spec.load(str(out)).class_names) == 60


def test_a_kill_between_the_two_renames_is_recovered(tmp_path):
  """The old folder moved aside, the new one not yet in place: the next run puts the old one
  back (a reader then sees the old dataset) and removes the unfinished one."""
  target = tmp_path / 'out'
  (tmp_path / '.out.old-1234abcd').mkdir()
  (tmp_path / '.out.old-1234abcd' / 'dataset_spec.json').write_text('old')
  (tmp_path / '.out.tmp-xyz').mkdir()
  atomic.recover_folder(str(target))
  assert (target / 'dataset_spec.json').read_text() == 'old'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['out']
  with atomic.atomic_folder(str(target)) as work:
    (tmp_path / work / 'dataset_spec.json').write_text('new')
  assert (target / 'dataset_spec.json').read_text() == 'new'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['out']


def test_a_failure_between_the_two_renames_puts_the_old_folder_back(tmp_path, monkeypatch):
  target = tmp_path / 'out'
  target.mkdir()
  (target / 'dataset_spec.json').write_text('old')
  real_rename = os.rename
  calls = []

  def failing_rename(src, dst):
    calls.append((src, dst))
    if len(calls) == 2:  # the new folder into place
      raise OSError(28, 'No space left on device')
    return real_rename(src, dst)

  monkeypatch.setattr(os, 'rename', failing_rename)
  with pytest.raises(OSError):
    with atomic.atomic_folder(str(target)) as work:
      (tmp_path / work / 'dataset_spec.json').write_text('new')
  monkeypatch.undo()
  assert (target / 'dataset_spec.json').read_text() == 'old'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['out']
