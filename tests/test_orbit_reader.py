"""ORBIT layout: the synthetic generator and the reader (lite_tf.data.orbit.dataset)."""

import json
import os
import re
import shutil

import numpy as np
import pytest

from lite_tf.data.orbit import dataset as orbit
from lite_tf.data.orbit import synthetic as orbit_synthetic

SMALL = dict(collectors={'train': 3, 'validation': 1, 'test': 2}, frame_size=48,
             frames_per_video=(8, 12), clutter_frames=(10, 14), clean_videos=(4, 5), clutter_videos=2, objects=(3, 4))


@pytest.fixture(scope='module')
def generated(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('orbit') / 'orbit')
  return root, orbit_synthetic.generate(root, seed=3, **SMALL)


def test_reader_finds_every_user_object_video_and_frame(generated):
  """Checked against the generator's own record and against a plain walk of the files."""
  root, summary = generated
  dataset = orbit.OrbitDataset(root)
  on_disk = sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files
                   if f.endswith('.jpg'))
  read = sorted(p for users in dataset.users.values() for u in users
                for kinds in u.objects.values() for videos in kinds.values()
                for v in videos for p in v.frames)
  assert read == on_disk and len(read) == summary['frames']
  for split, users in summary['splits'].items():
    found = {u.collector: u for u in dataset.users[split]}
    assert sorted(found) == sorted(users)
    for collector, objects in users.items():
      assert found[collector].object_names == sorted(objects)
      for name, kinds in objects.items():
        for kind, videos in kinds.items():
          got = found[collector].videos(name, kind)
          assert sorted(v.name for v in got) == sorted(videos)
          for v in got:  # frames in index order, named by the convention
            indices = [orbit.parse_frame_name(p)[4] for p in v.frames]
            assert indices == list(range(len(indices)))
  assert dataset.skipped == {}
  assert dataset.summary()['test']['users'] == 2


def test_splits_never_mix_users(generated, tmp_path):
  root, _ = generated
  splits = {s: {u.collector for u in us} for s, us in orbit.OrbitDataset(root).users.items()}
  assert not (splits['train'] & splits['validation'] or splits['train'] & splits['test']
              or splits['validation'] & splits['test'])
  bad = str(tmp_path / 'mixed')
  shutil.copytree(root, bad)
  user = sorted(os.listdir(os.path.join(bad, 'test')))[0]
  shutil.copytree(os.path.join(bad, 'test', user), os.path.join(bad, 'train', user))
  with pytest.raises(orbit.OrbitLayoutError, match=f'collectors in more than one split.*{user}'):
    orbit.OrbitDataset(bad)


def test_annotations_hold_boxes_and_quality_flags(generated):
  root, _ = generated
  dataset = orbit.OrbitDataset(root)
  user = dataset.users['train'][0]
  obj = user.object_names[0]
  clutter = user.videos(obj, 'clutter')[0]
  notes = dataset.load_annotations(clutter)
  assert sorted(notes) == sorted(os.path.basename(p) for p in clutter.frames)
  absent = [f for f, n in notes.items() if n['object_not_present_issue']]
  assert absent and all(notes[f]['object_bounding_box'] is None for f in absent)
  present = [n['object_bounding_box'] for n in notes.values() if not n['object_not_present_issue']]
  # Boxes in the release's 1080x1080 coordinates, as ORBIT's README specifies them.
  assert all(0 <= b['x'] <= 1079 and 0 <= b['y'] <= 1079 and 1 <= b['w'] <= 1080
             and 1 <= b['h'] <= 1080 for b in present)
  assert max(b['x'] + b['w'] for b in present) > 48  # not frame pixels of the 48-px frames
  for b in present:
    x, y, w, h = orbit.scale_box(b, 48)
    assert 0 <= x <= 47 and 0 <= y <= 47 and 1 <= w <= 48 and 1 <= h <= 48
  clean = dataset.load_annotations(user.videos(obj, 'clean')[0])
  assert all(set(orbit.QUALITY_ISSUES) <= set(n) for n in clean.values())


def test_scale_box_as_orbit():
  # value * S / 1080 truncated toward zero, x, y in [0, S - 1], w, h in [1, S].
  assert orbit.scale_box({'x': 1079, 'y': 0, 'w': 1080, 'h': 5}, 84) == [83, 0, 84, 1]
  assert orbit.scale_box({'x': 539, 'y': 540, 'w': 13, 'h': 1200}, 224) == [111, 112, 2, 224]
  assert orbit.scale_box(None, 84) is None


def test_frames_decode_resized_as_uint8(generated):
  root, _ = generated
  video = orbit.OrbitDataset(root).users['test'][0]
  video = next(iter(video.objects.values()))['clean'][0]
  for size in (84, 32):
    frames = orbit.decode_frames_numpy(video.frames[:3], size)
    assert frames.shape == (3, size, size, 3) and frames.dtype == np.uint8
  assert frames.std() > 5  # not blank


def _copy(root, tmp_path):
  bad = str(tmp_path / 'bad')
  shutil.copytree(root, bad)
  return bad


def _first_video(root):
  dataset = orbit.OrbitDataset(root)
  user = dataset.users['train'][0]
  return dataset, user.videos(user.object_names[0], 'clean')[0]


def test_bad_layouts_name_the_path_or_are_counted(generated, tmp_path):
  root, _ = generated
  bad = _copy(root, tmp_path)
  _, video = _first_video(bad)
  folder = os.path.dirname(video.frames[0])
  # Non-image files and an empty video folder: skipped, counted, reported.
  open(os.path.join(folder, '.DS_Store'), 'w').close()
  open(os.path.join(folder, 'notes.txt'), 'w').close()
  empty = os.path.join(os.path.dirname(folder),
                       f'{video.collector}--{orbit.slug(video.object)}--clean--empty')
  os.makedirs(empty)
  dataset = orbit.OrbitDataset(bad)
  assert dataset.summary()['skipped'] == {'non-frame files': 2, 'empty video folders': 1}
  # A missing annotation file: an error naming it, when annotations are read.
  os.remove(video.annotation_path(bad))
  with pytest.raises(orbit.OrbitLayoutError, match='annotation file .* not found'):
    dataset.load_annotations(video)
  # A frame named against the convention.
  os.rename(video.frames[1], os.path.join(folder, 'frame_0002.jpg'))
  with pytest.raises(orbit.OrbitLayoutError, match=r"frame_0002.jpg: frame name does not follow"):
    orbit.OrbitDataset(bad)


def test_frame_in_the_wrong_folder_is_named(generated, tmp_path):
  root, _ = generated
  bad = _copy(root, tmp_path)
  _, video = _first_video(bad)
  moved = os.path.basename(video.frames[0]).replace(f'--{orbit.slug(video.object)}--',
                                                    '--other--')
  os.rename(video.frames[0], os.path.join(os.path.dirname(video.frames[0]), moved))
  with pytest.raises(orbit.OrbitLayoutError,
                     match=f"{re.escape(moved)}: frame name should be {re.escape(video.name)}-"):
    orbit.OrbitDataset(bad)


def test_video_whose_slug_is_not_its_folders_is_named(tmp_path):
  folder = tmp_path / 'orbit' / 'test' / 'P131' / 'my black wallet' / 'clean'
  video = folder / 'P131--my-black-purse--clean--abc'
  video.mkdir(parents=True)
  (video / 'P131--my-black-purse--clean--abc-00001.jpg').write_bytes(b'')
  with pytest.raises(orbit.OrbitLayoutError, match=(
      r"P131--my-black-purse--clean--abc: video name says collector 'P131', object "
      r"'my-black-purse'.*'my black wallet' \(slug 'my-black-wallet'\)")):
    orbit.OrbitDataset(str(tmp_path / 'orbit'), splits=('test',))


def test_two_objects_one_slug_are_refused_naming_both(tmp_path):
  user = tmp_path / 'orbit' / 'test' / 'P131'
  for name in ('t shirt', 't-shirt'):
    video = f'P131--t-shirt--clean--abc{len(name)}'
    (user / name / 'clean' / video).mkdir(parents=True)
    (user / name / 'clean' / video / f'{video}-00001.jpg').write_bytes(b'')
  with pytest.raises(orbit.OrbitLayoutError, match=(
      f"{re.escape(str(user / 't shirt'))} and {re.escape(str(user / 't-shirt'))}: two "
      "objects of P131")):
    orbit.OrbitDataset(str(tmp_path / 'orbit'), splits=('test',))


def test_generation_is_deterministic(tmp_path):
  tiny = dict(SMALL, collectors={'train': 1, 'validation': 1, 'test': 1})
  a = orbit_synthetic.generate(str(tmp_path / 'a'), seed=5, **tiny)
  b = orbit_synthetic.generate(str(tmp_path / 'b'), seed=5, **tiny)
  assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
  files = sorted(os.path.relpath(os.path.join(d, f), tmp_path / 'a')
                 for d, _, fs in os.walk(tmp_path / 'a') for f in fs)
  for rel in files[::37]:
    with open(tmp_path / 'a' / rel, 'rb') as fa, open(tmp_path / 'b' / rel, 'rb') as fb:
      assert fa.read() == fb.read(), rel


def test_unfiltered_layout_with_clutter_pan_videos(tmp_path):
  tiny = dict(SMALL, collectors={'train': 2, 'validation': 1, 'test': 1})
  root = str(tmp_path / 'unfiltered')
  summary = orbit_synthetic.generate(root, seed=9, layout='unfiltered', clutter_pan_videos=1,
                                     **tiny)
  assert not os.path.exists(os.path.join(root, 'train'))  # no split level
  split_users = {s: sorted(summary['splits'][s]) for s in ('validation', 'test')}
  path = str(tmp_path / 'splits.json')
  with open(path, 'w') as f:
    json.dump(split_users, f)
  for users in (split_users, path):
    dataset = orbit.OrbitDataset(root, layout='unfiltered', split_users=users,
                                 video_types=('clean', 'clutter', 'clutter-pan'))
    for split in orbit.SPLITS:
      assert [u.collector for u in dataset.users[split]] == sorted(summary['splits'][split])
    user = dataset.users['test'][0]
    assert all(len(user.videos(o, 'clutter-pan')) == 1 for o in user.object_names)
  with pytest.raises(orbit.OrbitLayoutError, match='in both validation and test'):
    orbit.OrbitDataset(root, layout='unfiltered',
                       split_users={'validation': split_users['test'], 'test': split_users['test']})


# Names as the real release has them: object folders are the collectors' labels with spaces;
# video and frame names hold the slug (' ' -> '-'); video ids may start with '-' or '_' and
# hold '-', '--' or '---' (seen in the benchmark's cluster-label files, e.g. P806's toothbrush
# and P554's finger-nail clipper). (collector, object folder, type, video id)
REAL_STYLE = [('P806', 'toothbrush', 'clutter', '-VxwMq3r9'),
              ('P554', 'finger-nail clipper', 'clean', 'QNRQHoZXKSb--szdCk2'),
              ('P131', 'my black wallet', 'clean', '_Zj1Hv---mNWe'),
              ('P939', 'p939411 white cane', 'clutter', 'abc-def'),
              ('P939', 'my sennheiser pxc 350-2', 'clean', 'x-1'),
              ('P939', '12 measuring cup', 'clutter', '--lead'),
              ('P939', 't. v. remote control', 'clean', 'Q_q-'),
              ('P177', 'Mug', 'clean', 'up'),
              ('P177', 'mug', 'clean', 'low')]


@pytest.mark.parametrize('collector,obj,kind,video_id', REAL_STYLE)
def test_frame_names_split_as_the_release(collector, obj, kind, video_id):
  name = f'{collector}--{orbit.slug(obj)}--{kind}--{video_id}-00012.jpg'
  assert orbit.parse_frame_name(name) == (collector, orbit.slug(obj), kind, video_id, 11)


def _release_tree(root, entries):
  for collector, obj, kind, video_id in entries:
    video = f'{collector}--{orbit.slug(obj)}--{kind}--{video_id}'
    folder = root / 'test' / collector / obj / kind / video
    folder.mkdir(parents=True)
    for i in (1, 2, 3):
      (folder / f'{video}-{i:05d}.jpg').write_bytes(b'')


def test_scan_reads_release_names(tmp_path):
  """Folder names with spaces, slugs in video and frame names; objects in Python string
  order of the folder names, as ORBIT's sorted(os.listdir(...))."""
  root = tmp_path / 'orbit'
  _release_tree(root, REAL_STYLE)
  dataset = orbit.OrbitDataset(str(root), splits=('test',))
  found = {(u.collector, o, t, v.name, v.num_frames)
           for u in dataset.users['test'] for o in u.object_names
           for t in ('clean', 'clutter') for v in u.videos(o, t)}
  assert found == {(c, o, k, f'{c}--{orbit.slug(o)}--{k}--{i}', 3) for c, o, k, i in REAL_STYLE}
  users = {u.collector: u.object_names for u in dataset.users['test']}
  assert users['P939'] == ['12 measuring cup', 'my sennheiser pxc 350-2', 'p939411 white cane',
                           't. v. remote control']
  assert users['P177'] == ['Mug', 'mug']
  assert sorted(['a b', 'a-b', 'a1', 'aB', 'ab']) == ['a b', 'a-b', 'a1', 'aB', 'ab']
