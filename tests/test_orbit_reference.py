"""lite_tf's ORBIT reader, sampling and metrics against what microsoft/ORBIT-Dataset's own code
read and reported from the same release-style tree (tests/data/orbit_reference: its README
has the provenance), item by item."""

import dataclasses
import json
import os

import numpy as np
import pytest

from lite_tf.data.orbit import dataset as orbit
from lite_tf.data.orbit import tasks as orbit_tasks
from lite_tf.training import orbit_metrics

HERE = os.path.join(os.path.dirname(__file__), 'data', 'orbit_reference')
TREE = os.path.join(HERE, 'tree')

# The settings the reference loader ran (ORBIT's code since Nov 2022: every target video needs
# 50 frames after filtering, a context video one): (target type, context filter, target filter).
SETTINGS = {
    'clu_ve': ('clutter', (), ()),
    'cle_ve': ('clean', (), ()),
    'challenge': ('clutter', (), ('no_object_not_present_issue',)),
    'filtered_context': ('clutter', ('no_blur_issue', 'framing_issue'),
                         ('no_object_not_present_issue',)),
}


@pytest.fixture(scope='module')
def reference():
  with open(os.path.join(HERE, 'reference.json')) as f:
    return json.load(f)


@pytest.fixture(scope='module')
def dataset():
  return orbit.OrbitDataset(TREE)


def _config(setting, **changes):
  target, context_filter, target_filter = SETTINGS[setting]
  return dataclasses.replace(
      orbit_tasks.PROTOCOLS['challenge'], target_video_type=target, min_target_frames=50,
      context_filter=context_filter, target_filter=target_filter, **changes)


def test_provenance_is_recorded(reference):
  provenance = reference['provenance']
  assert provenance['repository'] == 'microsoft/ORBIT-Dataset'
  assert provenance['commit'].startswith('97ccae1')
  assert provenance['paper_commit'].startswith('dc25dae')
  assert all(provenance['head_files_match_commit'].values())


def test_tree_has_the_release_naming(dataset):
  names = {o for users in dataset.users.values() for u in users for o in u.object_names}
  assert {'12 measuring cup', 'My keys', 't. v. remote control', 'my sennheiser pxc 350-2',
          'p939411 white cane', 't-shirt', 't shirt'} <= names


@pytest.mark.parametrize('setting', sorted(SETTINGS))
@pytest.mark.parametrize('split', orbit.SPLITS)
def test_reader_and_filters_read_what_orbit_reads(reference, dataset, setting, split):
  """Users kept, objects in label order, context and target videos per object, frames kept
  per video, under each filter setting and the 50-valid-frame rule."""
  expected = reference['loader'][setting][split]
  assert 'error' not in expected
  try:
    sampler = orbit_tasks.TaskSampler(dataset, split, _config(setting), seed=0)
    users = sampler.users
  except ValueError as e:  # every user dropped
    assert 'no' in str(e) and not expected['users']
    return
  assert [collector for collector, _ in users] == expected['users']
  for collector, objects in users:
    assert sorted(objects) == list(objects) == expected['objects'][collector]
    for name, (context, target) in objects.items():
      want = expected['videos'][collector][name]
      assert [v.name for v, _ in context] == want['context'], (collector, name)
      assert [v.name for v, _ in target] == want['target'], (collector, name)
      for video, frames in context + target:
        assert [os.path.basename(p) for p in frames] == expected['frames'][video.name]
  kept = {v for u in expected['videos'].values() for o in u.values() for s in o.values()
          for v in s}
  assert kept == set(expected['frames'])


def test_boxes_scaled_as_orbit_at_every_frame_size(reference, dataset):
  boxes = reference['boxes']
  checked = 0
  for user in dataset.users['test']:
    for name in user.object_names:
      for video in user.videos(name, 'clutter'):
        notes = dataset.load_annotations(video)
        for frame, note in notes.items():
          for size, expected in boxes.items():
            if frame in expected:
              assert orbit.scale_box(note['object_bounding_box'], int(size)) == expected[frame], \
                  (frame, size)
              checked += 1
  assert checked == sum(len(b) for b in boxes.values()) and checked > 600 * 3


@pytest.mark.parametrize('run', ['clu_ve_np', 'cle_ve_np_blur'])
def test_frame_annotations_as_orbit_loads_them(reference, dataset, run):
  """The runs where ORBIT's loader returns annotations (clip length 1): every frame's flags."""
  entry = next(r for r in reference['annotations'] if r['name'] == run)
  videos = {v.name: v for u in dataset.users['test'] for o in u.object_names
            for t in ('clean', 'clutter') for v in u.videos(o, t)}
  names = entry['annotations_to_load']
  checked = 0
  for task in entry['tasks']:
    frames = dict(task['context'])
    for per_video in task['target'].values():
      frames.update(per_video)
    for frame, expected in frames.items():
      video = videos[frame.rsplit('-', 1)[0]]
      got = orbit_tasks.frame_annotations(dataset.load_annotations(video), [frame], names,
                                          'test')
      for name in names:
        value = float(got[name][0, 0])
        assert (np.isnan(value) if expected[name] == 'nan' else value == expected[name])
        checked += 1
  assert checked > 100


def _results(predictions, dedup):
  """TaskResults of the reference's fixed predictions (argmax of its logits). dedup: as ORBIT's
  append_video does, frames sorted by path and each counted once (lite_tf's evaluation never
  repeats or reorders a frame); else the rows as given."""
  results = []
  for task in predictions:
    videos = []
    for video in task['videos']:
      frames, labels = video['frames'], np.argmax(np.asarray(video['logits']), axis=-1)
      if dedup:
        frames, first = np.unique(frames, return_index=True)
        labels = labels[first]
      numbers = [int(f.rsplit('-', 1)[1].split('.')[0]) for f in frames]
      videos.append(orbit_metrics.VideoResult(video['video'], video['label'], numbers,
                                              labels.tolist()))
    results.append(orbit_metrics.TaskResult(task['user'], task['task'], task['object_list'],
                                            videos))
  return results


METRIC_NAMES = {'frame_acc': 'frame_accuracy', 'frames_to_recognition': 'frames_to_recognition',
                'video_acc': 'video_accuracy'}


def test_metrics_equal_orbits_current_code(reference):
  """user_aggregation='frames' against HEAD's TestEvaluator.get_mean_stats, every average."""
  metrics = reference['metrics']
  summary = orbit_metrics.summarize(_results(metrics['predictions'], dedup=True), 'frames')
  for stat, averages in metrics['current'].items():
    ours = summary[METRIC_NAMES[stat]]
    if 'error' in averages:  # video accuracy: ORBIT's code raises for tasks and users
      assert stat == 'video_acc' and 'truth value of an array' in averages['error']
      assert ours['user']['mean'] is None and ours['task']['mean'] is None
      continue
    for average, (mean, ci) in averages.items():
      assert ours[average]['mean'] == pytest.approx(mean, abs=1e-6), (stat, average)
      assert ours[average]['ci95'] == pytest.approx(ci, abs=1e-6), (stat, average)
  # Per video, ORBIT's per-video scores (video accuracy included) one by one.
  per_video = metrics['current_per_video']
  for stat in METRIC_NAMES:
    expected = [v[stat] for v in per_video]
    assert summary[METRIC_NAMES[stat]]['video']['mean'] == pytest.approx(np.mean(expected),
                                                                         abs=1e-6)
    assert summary[METRIC_NAMES[stat]]['video']['n'] == len(expected)


@pytest.mark.parametrize('key,dedup', [('paper', False), ('paper_on_head_frames', True)])
def test_metrics_equal_the_2021_code(reference, key, dedup):
  """user_aggregation='videos' against dc25dae's TestEvaluator (user and video averages), on
  the rows as given and on the rows ORBIT's current code keeps."""
  metrics = reference['metrics']
  summary = orbit_metrics.summarize(_results(metrics['predictions'], dedup), 'videos')
  for stat, averages in metrics[key].items():
    for average, (mean, ci) in averages.items():
      ours = summary[METRIC_NAMES[stat]][average]
      assert ours['mean'] == pytest.approx(mean, abs=1e-6), (stat, average)
      assert ours['ci95'] == pytest.approx(ci, abs=1e-6), (stat, average)


def test_predictions_file_equals_orbits(reference):
  metrics = reference['metrics']
  ours = orbit_metrics.predictions_json(_results(metrics['predictions'], dedup=True))
  assert ours == metrics['results_json']


def _sampler(dataset, **changes):
  config = dataclasses.replace(orbit_tasks.PROTOCOLS['original'], **changes)
  return orbit_tasks.TaskSampler(dataset, 'test', config, seed=0)


def test_2021_sampling_of_target_and_context_frames(reference, dataset):
  """dc25dae's sample_frames: 'max' keeps whole clips only; a fixed number of clips gets
  random duplicates first. Draws differ (numpy, not Python's random); what every draw of the
  reference shows must hold for every draw of ours."""
  sampler = _sampler(dataset)
  rng = np.random.default_rng(0)
  for length, entry in reference['paper_sampling'].items():
    length = int(length)
    frames = [f'f{i:05d}' for i in range(length)]
    kept = min(length, 1000) // 8 * 8
    assert entry['max']['indices'] == list(range(kept))
    for num_clips in ('8', '4'):
      ours = dataclasses.replace(sampler.config, num_clips=int(num_clips))
      sampler.config = ours
      for draw in entry[num_clips].values():
        theirs = np.asarray(draw['indices']).reshape(-1, 8)
        mine = np.asarray([[int(p[1:]) for p in clip] for clip in
                           sampler._clips(frames[:1000], 'duplicate', rng)])  # pylint: disable=protected-access
        for clips in (theirs, mine):
          assert clips.shape == (int(num_clips), 8)
          assert all(list(c) == sorted(c) for c in clips)  # frame order within a clip
          if length >= int(num_clips) * 8:  # no duplicates: aligned whole clips
            assert all(c[0] % 8 == 0 and list(c) == list(range(c[0], c[0] + 8)) for c in clips)
            assert clips.max() < kept
          else:  # every frame once at least, the rest duplicates
            assert set(clips.ravel()) == set(range(length))
  sampler.config = orbit_tasks.PROTOCOLS['original']


@pytest.mark.parametrize('length', [5, 8, 13, 63, 64, 70, 1005])
def test_current_max_and_uniform_clips(reference, dataset, length):
  """ORBIT's current sample_clips_from_a_video: 'max' pads with the last frame; 'uniform'
  (clip length 1, the challenge's context) every 30th frame of the first 1000."""
  frames = [f'f{i:05d}' for i in range(length)]
  sampler = _sampler(dataset, clip_length=8)
  mine = [int(p[1:]) for c in sampler._clips(frames[:1000], 'max', None) for p in c]  # pylint: disable=protected-access
  assert mine == reference['head_sampling'][f'clip8/len{length}/max/sf1']['returned']
  for factor in (1, 30):
    sampler = _sampler(dataset, clip_length=1, subsample_factor=factor, clip_cap=200)
    mine = [int(p[1:]) for c in sampler._clips(frames[:1000], 'uniform', None) for p in c]  # pylint: disable=protected-access
    assert mine == reference['head_sampling'][f'clip1/len{length}/uniform/sf{factor}']['returned']
