"""ORBIT task sampling under the training, original (LITE paper) and challenge protocols."""

import dataclasses
import os

import numpy as np
import pytest

from lite_tf.data.orbit import dataset as orbit
from lite_tf.data.orbit import synthetic as orbit_synthetic
from lite_tf.data.orbit import tasks as orbit_tasks


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('orbit_tasks') / 'orbit')
  orbit_synthetic.generate(root, collectors={'train': 3, 'validation': 1, 'test': 2},
                           frame_size=32, frames_per_video=(9, 20), clutter_frames=(40, 70),
                           clean_videos=(4, 7), clutter_videos=2, objects=(3, 5), seed=7)
  return orbit.OrbitDataset(root)


def _parts(path):
  collector, obj, kind, video_id, index = orbit.parse_frame_name(path)
  return f'{collector}--{obj}--{kind}--{video_id}', obj, kind, index


def _users(dataset, split):
  return {u.collector: u for u in dataset.users[split]}


def _assert_clip(clip, obj, kind, video):
  """clip_length contiguous frames of one video (the last frame repeated as padding)."""
  names = {_parts(p)[0] for p in clip}
  assert names == {video.name}, names
  assert {_parts(p)[1] for p in clip} == {orbit.slug(obj)}
  assert {_parts(p)[2] for p in clip} == {kind}
  indices = [_parts(p)[3] for p in clip]
  steps = np.diff(indices)
  assert set(steps) <= {0, 1} and (0 not in steps or indices[-1] == video.num_frames - 1)


def test_training_tasks(dataset):
  config = orbit_tasks.PROTOCOLS['train']
  sampler = orbit_tasks.TaskSampler(dataset, 'train', config, seed=1)
  users = _users(dataset, 'train')
  ways, seen = set(), []
  for task in sampler.tasks(0, 60):
    user = users[task.user]
    seen.append(task.user)
    assert 2 <= task.way <= min(len(user.objects), 15)
    ways.add(task.way)
    assert task.objects == sorted(task.objects) and set(task.objects) <= set(user.objects)
    videos = {v.name: v for n in task.objects for k in ('clean', 'clutter')
              for v in user.videos(n, k)}
    for label, obj in enumerate(task.objects):
      mine = task.context_labels == label
      assert mine.any() and (task.target_labels == label).any()
      context_videos = {task.context_videos[i] for i in np.nonzero(mine)[0]}
      assert 1 <= len(context_videos) <= 15
      for clip, video in zip(task.context_clips[mine], np.asarray(task.context_videos)[mine]):
        assert clip.shape == (8,)
        _assert_clip(clip, obj, 'clean', videos[video])
      per_video = {}
      for clip in task.target_clips[task.target_labels == label]:
        _assert_clip(clip, obj, 'clutter', videos[_parts(clip[0])[0]])
        per_video[_parts(clip[0])[0]] = per_video.get(_parts(clip[0])[0], 0) + 1
      assert all(1 <= n <= 10 for n in per_video.values())
  assert len(ways) > 1  # the way varies
  # Every pass holds each user 50 times, in a shuffled order.
  first_pass = [sampler.task(i).user for i in range(sampler.num_tasks())]
  assert sorted(set(first_pass)) == sorted(users)
  assert all(first_pass.count(u) == 50 for u in users)
  assert first_pass != sorted(first_pass)


def test_original_protocol_test_tasks(dataset):
  sampler = orbit_tasks.TaskSampler(dataset, 'test', orbit_tasks.PROTOCOLS['original'], seed=0)
  users = _users(dataset, 'test')
  assert sampler.num_tasks() == 5 * len(users)
  tasks = list(sampler.tasks(0, sampler.num_tasks()))
  assert [t.user for t in tasks] == [u for u in sorted(users) for _ in range(5)]
  for task in tasks:
    user = users[task.user]
    assert task.objects == user.object_names  # all of the user's objects
    for label, obj in enumerate(task.objects):
      clean = user.videos(obj, 'clean')
      mine = task.context_labels == label
      # Exactly 8 clips of 8 frames from every clean video, as the 2021 code's sample_frames:
      # a video of n < 64 frames is every frame plus 64 - n random duplicates, in frame order;
      # a longer one gives 8 of its clip-aligned clips.
      for video in clean:
        clips = [c for c, v in zip(task.context_clips[mine], np.asarray(task.context_videos)[mine])
                 if v == video.name]
        assert len(clips) == 8
        indices = [[_parts(p)[3] for p in clip] for clip in clips]
        assert {_parts(p)[0] for clip in clips for p in clip} == {video.name}
        flat = sorted(i for clip in indices for i in clip)
        if video.num_frames < 64:
          assert set(flat) == set(range(video.num_frames))
          assert sorted(np.concatenate(indices)) == list(np.concatenate(indices))
        else:
          assert len(set(flat)) == 64
          for clip in indices:
            assert clip[0] % 8 == 0 and clip == list(range(clip[0], clip[0] + 8))
            assert clip[-1] < video.num_frames // 8 * 8
      targets = [t for t in task.target_videos if t.label == label]
      assert sorted(t.name for t in targets) == sorted(
          v.name for v in user.videos(obj, 'clutter') if v.num_frames >= 8)
      for target in targets:
        video = next(v for v in user.videos(obj, 'clutter') if v.name == target.name)
        kept = video.num_frames // 8 * 8  # whole clips only: sample_frames('max')
        assert target.frames == video.frames[:kept]  # in order
        assert target.frame_numbers == list(range(1, kept + 1))
        for i, history in enumerate(target.history):  # causal: itself and 7 predecessors
          assert history[-1] == video.frames[i]
          assert [_parts(p)[3] for p in history] == [max(0, j) for j in range(i - 7, i + 1)]


def test_duplicate_clips_of_long_and_short_videos(dataset):
  config = dataclasses.replace(orbit_tasks.PROTOCOLS['original'], num_clips=3, clip_length=4)
  sampler = orbit_tasks.TaskSampler(dataset, 'test', config, seed=0)
  rng = np.random.default_rng(0)
  frames = [f'f{i:05d}' for i in range(5)]  # 5 frames for 12: 7 duplicates, with replacement
  for _ in range(20):
    clips = sampler._clips(frames, 'duplicate', rng)  # pylint: disable=protected-access
    flat = [p for clip in clips for p in clip]
    assert len(clips) == 3 and flat == sorted(flat) and set(flat) == set(frames)
  frames = [f'f{i:05d}' for i in range(8)]  # 8 frames for 12: 4 duplicates, none twice
  for _ in range(20):
    flat = [p for c in sampler._clips(frames, 'duplicate', rng) for p in c]  # pylint: disable=protected-access
    assert set(flat) == set(frames) and max(flat.count(f) for f in frames) == 2
  frames = [f'f{i:05d}' for i in range(14)]  # 14 frames: 3 of the 3 aligned clips, 2 unused
  seen = set()
  for _ in range(20):
    clips = sampler._clips(frames, 'duplicate', rng)  # pylint: disable=protected-access
    assert [c[0] for c in clips] == ['f00000', 'f00004', 'f00008']
    seen |= {p for c in clips for p in c}
  assert 'f00012' not in seen and 'f00013' not in seen
  frames = [f'f{i:05d}' for i in range(30)]  # 7 aligned clips, 3 drawn
  starts = set()
  for _ in range(40):
    clips = sampler._clips(frames, 'duplicate', rng)  # pylint: disable=protected-access
    assert all(c == frames[frames.index(c[0]):frames.index(c[0]) + 4] for c in clips)
    assert all(int(c[0][1:]) % 4 == 0 for c in clips)
    starts |= {c[0] for c in clips}
  assert len(starts) == 7


def test_train_2021_caps_shots_by_way(tmp_path):
  root = str(tmp_path / 'orbit')
  orbit_synthetic.generate(root, collectors={'train': 1}, frame_size=16,
                           frames_per_video=(5, 6), clutter_frames=(9, 10), clean_videos=(11, 11),
                           clutter_videos=9, objects=(7, 7), seed=2)
  dataset = orbit.OrbitDataset(root, splits=('train',))
  config = dataclasses.replace(orbit_tasks.PROTOCOLS['train_2021'], shot_caps_by_way=True,
                               context_shot_method='max', target_shot_method='max')
  sampler = orbit_tasks.TaskSampler(dataset, 'train', config, seed=1)
  ways = set()
  for task in sampler.tasks(0, 12):
    ways.add(task.way >= 6)
    context, target = (5, 4) if task.way >= 6 else (10, 8)  # of 11 clean, 9 clutter videos
    for label in range(task.way):
      mine = list(np.asarray(task.context_videos)[task.context_labels == label])
      assert len(set(mine)) == context
      assert all(mine.count(v) == 4 for v in set(mine))  # 4 clips a video ('duplicate')
      assert (task.target_labels == label).sum() == 4 * target
  assert ways == {True, False}


def _present(dataset, video_name, frames):
  split_dir = os.path.join(dataset.root, 'annotations', 'test')
  import json  # pylint: disable=g-import-not-at-top
  with open(os.path.join(split_dir, f'{video_name}.json')) as f:
    notes = json.load(f)
  return [p for p in frames if not notes[os.path.basename(p)]['object_not_present_issue']]


@pytest.mark.parametrize('target_frames,frame_cap', [(200, 1000), (20, 1000), (20, 51)])
def test_challenge_protocol(dataset, target_frames, frame_cap):
  # frame_cap 51, below some videos' valid frames: the 50-valid-frame rule still counts all valid
  # frames, and the cap keeps the first 51 valid ones (the reference filters, then caps).
  config = dataclasses.replace(orbit_tasks.PROTOCOLS['challenge'], target_frames=target_frames,
                               frame_cap=frame_cap)
  sampler = orbit_tasks.TaskSampler(dataset, 'test', config, seed=0)
  users = _users(dataset, 'test')
  valid = {}  # the 50-valid-frame rule, from the annotation files
  for user in users.values():
    for obj in user.object_names:
      for video in user.videos(obj, 'clutter'):
        present = _present(dataset, video.name, video.frames)
        valid[video.name] = present if len(present) >= 50 else None
  assert any(v is None for v in valid.values()) and any(valid.values())  # both sides
  if frame_cap < 1000:  # the cap bites: some videos have more valid frames than it keeps
    assert any(v and len(v) > frame_cap for v in valid.values())
  assert sampler.dropped['target videos'] == sum(v is None for v in valid.values())
  kept_users = [c for c, u in users.items()
                if any(valid[v.name] for o in u.object_names for v in u.videos(o, 'clutter'))]
  assert [c for c, _ in sampler.users] == sorted(kept_users)
  assert sampler.dropped['users'] == len(users) - len(kept_users)
  assert sampler.num_tasks() == 50 * len(kept_users)
  for task in list(sampler.tasks(0, sampler.num_tasks()))[::7]:
    user = users[task.user]
    # Every object with a clutter video left (an object without one cannot be a target).
    assert task.objects == [o for o in user.object_names
                            if any(valid[v.name] for v in user.videos(o, 'clutter'))]
    assert task.context_clips.shape[1] == 1  # single frames, every 30th of each clean video
    for label, obj in enumerate(task.objects):
      for video in user.videos(obj, 'clean'):
        frames = [c[0] for c, v in zip(task.context_clips, task.context_videos)
                  if v == video.name]
        assert frames == video.frames[:frame_cap][::30]
      targets = {t.name: t for t in task.target_videos if t.label == label}
      assert sorted(targets) == sorted(v.name for v in user.videos(obj, 'clutter')
                                       if valid[v.name])
      for name, target in targets.items():
        # only frames showing the object, among the first frame_cap of those
        assert set(target.frames) <= set(valid[name][:frame_cap])
        assert len(target.frames) == min(target_frames, frame_cap, len(valid[name]))
        assert target.frames == sorted(target.frames)
        assert [h[-1] for h in target.history] == target.frames and target.history.shape[1] == 1


def test_clean_target_videos_are_held_out_of_the_context(dataset):
  config = dataclasses.replace(orbit_tasks.PROTOCOLS['original'], target_video_type='clean')
  task = orbit_tasks.TaskSampler(dataset, 'test', config).task(0)
  user = _users(dataset, 'test')[task.user]
  for label, obj in enumerate(task.objects):
    clean = sorted(v.name for v in user.videos(obj, 'clean'))
    split = min(5, len(clean) - 1)
    assert sorted(set(np.asarray(task.context_videos)[task.context_labels == label])) == \
        clean[:split]
    assert sorted(t.name for t in task.target_videos if t.label == label) == clean[split:]


def test_object_centric_tasks_mix_users(dataset):
  config = dataclasses.replace(orbit_tasks.PROTOCOLS['train'], task_type='object_centric')
  sampler = orbit_tasks.TaskSampler(dataset, 'train', config, seed=3)
  owners = set()
  for task in sampler.tasks(0, 20):
    assert task.objects == sorted(task.objects)
    owners |= {o.split('/')[0] for o in task.objects}
    for clip, label in zip(task.context_clips, task.context_labels):
      collector, obj = task.objects[label].split('/')
      assert _parts(clip[0])[0].startswith(f'{collector}--{orbit.slug(obj)}--clean--')
  assert len(owners) > 1


def test_tasks_are_seeded_and_resumable(dataset):
  config = orbit_tasks.PROTOCOLS['train']
  a = orbit_tasks.TaskSampler(dataset, 'train', config, seed=5)
  b = orbit_tasks.TaskSampler(dataset, 'train', config, seed=5)
  other = orbit_tasks.TaskSampler(dataset, 'train', config, seed=6)
  whole = list(a.tasks(0, 12))
  resumed = list(b.tasks(7, 12))
  for x, y in zip(whole[7:], resumed):
    assert x.user == y.user and x.objects == y.objects
    np.testing.assert_array_equal(x.context_clips, y.context_clips)
    np.testing.assert_array_equal(x.target_clips, y.target_clips)
  assert any(not np.array_equal(x.context_clips, y.context_clips)
             for x, y in zip(whole, other.tasks(0, 12)))


def test_bad_settings_and_filters_are_named(dataset, tmp_path):
  with pytest.raises(ValueError, match=r"orbit_tasks.context_clip_method must be one of"):
    orbit_tasks.TaskConfig(context_clip_method='every')
  with pytest.raises(ValueError, match=r"unknown criterion 'no_blurr'"):
    orbit_tasks.TaskConfig(target_filter=('no_blurr',))
  with pytest.raises(ValueError, match=r"orbit_tasks.protocol must be one of"):
    orbit_tasks.protocol_config('2019')
  with pytest.raises(ValueError, match=r"unknown settings \['clip_len'\]"):
    orbit_tasks.protocol_config('original', clip_len=4)


def test_a_user_without_clutter_videos_is_skipped_and_counted(dataset, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  root = str(tmp_path / 'orbit')
  shutil.copytree(dataset.root, root)
  user = sorted(os.listdir(os.path.join(root, 'test')))[0]
  for obj in os.listdir(os.path.join(root, 'test', user)):
    shutil.rmtree(os.path.join(root, 'test', user, obj, 'clutter'))
  scanned = orbit.OrbitDataset(root)
  clutter = orbit_tasks.TaskSampler(scanned, 'test', orbit_tasks.PROTOCOLS['original'])
  assert user not in [u for u, _ in clutter.users] and clutter.dropped['users'] == 1
  assert clutter.dropped['objects'] == len(os.listdir(os.path.join(root, 'test', user)))
  # Clean target videos (CLE-VE) need no clutter: the user stays.
  clean = orbit_tasks.TaskSampler(scanned, 'test', dataclasses.replace(
      orbit_tasks.PROTOCOLS['original'], target_video_type='clean'))
  assert user in [u for u, _ in clean.users] and clean.dropped['users'] == 0
  # With no user left, the error says why.
  for other in os.listdir(os.path.join(root, 'test')):
    for obj in os.listdir(os.path.join(root, 'test', other)):
      shutil.rmtree(os.path.join(root, 'test', other, obj, 'clutter'), ignore_errors=True)
  with pytest.raises(ValueError, match=r'no test user has an object with both context'):
    orbit_tasks.TaskSampler(orbit.OrbitDataset(root), 'test', orbit_tasks.PROTOCOLS['original'])


def test_annotations_on_the_task_as_orbit_loads_them(dataset):
  import json  # pylint: disable=g-import-not-at-top
  names = ('object_bounding_box', 'object_not_present_issue', 'blur_issue')
  config = dataclasses.replace(orbit_tasks.PROTOCOLS['original'], annotations_to_load=names)
  sampler = orbit_tasks.TaskSampler(dataset, 'test', config, seed=0)
  task = sampler.task(0)

  def notes_of(path):
    video = os.path.basename(os.path.dirname(path))
    with open(os.path.join(dataset.root, 'annotations', 'test', f'{video}.json')) as f:
      return json.load(f)[os.path.basename(path)]

  boxes = task.context_annotations['object_bounding_box']
  assert boxes.shape == task.context_clips.shape + (4,) and np.isnan(boxes).all()  # clean
  blur = task.context_annotations['blur_issue']
  assert blur.shape == task.context_clips.shape + (1,)
  for clip, flags in zip(task.context_clips, blur):
    for path, flag in zip(clip, flags[:, 0]):
      value = notes_of(path)['blur_issue']
      assert (np.isnan(flag) if value is None else flag == float(value))
  seen_box = seen_none = False
  for target in task.target_videos:
    got = target.annotations['object_bounding_box']
    assert got.shape == (len(target.frames), 4)
    for path, row, absent in zip(target.frames, got,
                                 target.annotations['object_not_present_issue'][:, 0]):
      note = notes_of(path)
      assert absent == float(note['object_not_present_issue'])
      if note['object_bounding_box'] is None:
        assert np.isnan(row).all()
        seen_none = True
      else:
        assert list(row) == [note['object_bounding_box'][k] for k in 'xywh']
        seen_box = True
  assert seen_box and seen_none
  # Rescaled to a frame size as ORBIT's loader does.
  scaled = orbit_tasks.with_boxes_at(sampler.task(0), 84)
  for before, after in zip(task.target_videos, scaled.target_videos):
    np.testing.assert_array_equal(after.annotations['object_bounding_box'],
                                  orbit.scale_boxes(before.annotations['object_bounding_box'], 84))
  # Training-style target clips: aligned clip by clip, frame by frame.
  train = dataclasses.replace(orbit_tasks.PROTOCOLS['train'], annotations_to_load=names,
                              min_target_frames=0)
  task = orbit_tasks.TaskSampler(dataset, 'test', train, seed=0).task(1)
  absent = task.target_annotations['object_not_present_issue']
  assert absent.shape == task.target_clips.shape + (1,)
  for clip, flags in zip(task.target_clips, absent[..., 0]):
    assert [float(notes_of(p)['object_not_present_issue']) for p in clip] == list(flags)
  with pytest.raises(ValueError, match="annotations_to_load: unknown annotation 'box'"):
    dataclasses.replace(config, annotations_to_load=('box',))
