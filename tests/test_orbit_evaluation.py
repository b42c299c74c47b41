"""ORBIT evaluation: the Table 1 row, its files, and the binaries end to end."""

import json
import os

import gin
import keras
import pytest

from conftest import REPO_ROOT
from conftest import run_binary
from lite_tf.data import in_memory
from lite_tf.data.orbit import episodes as orbit_episodes
from lite_tf.data.orbit import synthetic as orbit_synthetic
from lite_tf.learners.protonets import ProtoNets
from lite_tf.training import orbit_evaluation

TINY = dict(collectors={'train': 2, 'validation': 1, 'test': 2}, frame_size=32,
            frames_per_video=(9, 12), clutter_frames=(12, 16), clean_videos=(3, 4),
            objects=(3, 3))


@pytest.fixture(scope='module')
def root(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('orbit_eval') / 'orbit')
  orbit_synthetic.generate(path, seed=4, **TINY)
  return path


def test_table_row_files_and_predictions(root, tmp_path):
  gin.bind_parameter('orbit_episodes.root', root)
  gin.bind_parameter('orbit_episodes.image_size', 16)
  keras.utils.set_random_seed(0)
  learner = ProtoNets(backbone='conv4', image_size=16)
  weights = str(tmp_path / 'learner.weights.h5')
  source = orbit_episodes.orbit_episodes('test', target_video_type='clutter')
  learner(in_memory.episode_from_dict(source.episode(0)).to_dict())
  learner.save_weights(weights)
  row, summaries, results = orbit_evaluation.run_orbit_evaluation(learner, weights,
                                                                  model_name='tiny')
  # One pass of the original protocol: 5 tasks for each of the 2 test users, in both modes.
  assert [len(results[m]) for m in ('clean', 'clutter')] == [10, 10]
  for mode in ('clean', 'clutter'):
    for key in ('frame_acc', 'video_acc'):
      value = row[f'{mode}_{key}']
      assert 0.0 <= value <= 1.0 and row[f'{mode}_{key}_ci95'] >= 0.0
    assert set(summaries[mode]) == {'frame_accuracy', 'frames_to_recognition', 'video_accuracy'}
  assert row['steps'] == '1F / 0FB' and row['parameters'] == learner.count_params()
  assert row['macs_to_personalise'] > 0
  out = str(tmp_path / 'eval')
  os.makedirs(out)
  orbit_evaluation.write_report(row, summaries, results, out)
  assert sorted(os.listdir(out)) == ['orbit_results.json', 'orbit_table.csv', 'orbit_table.md',
                                     'orbit_table.png', 'predictions_clean.json',
                                     'predictions_clutter.json']
  with open(os.path.join(out, 'predictions_clutter.json')) as f:
    predictions = json.load(f)
  task = source.task(0)
  first = predictions[task.user][0]
  assert first['task_object_list'] == task.objects
  assert sorted(first['task_videos']) == sorted(v.name for v in task.target_videos)
  video = task.target_videos[0]
  assert sorted(first['task_videos'][video.name], key=int) == [str(n) for n in video.frame_numbers]
  assert 'clutter frame acc' in open(os.path.join(out, 'orbit_table.md')).read()


@pytest.mark.slow
def test_train_and_evaluate_binaries_beat_chance(tmp_path):
  """ProtoNets + LITE on the demo ORBIT data for a few minutes, then the Table 1 row."""
  env_cache = str(tmp_path / 'cache')
  os.environ['LITE_TF_CACHE'] = env_cache
  train_dir = str(tmp_path / 'run')
  gin_file = os.path.join(REPO_ROOT, 'gin', 'orbit_demo_protonets.gin')
  result = run_binary('train.py', f'--train_dir={train_dir}', f'--gin_config={gin_file}')
  assert result.returncode == 0, result.stderr[-3000:]
  result = run_binary('evaluate.py', f'--train_dir={train_dir}')
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(train_dir, 'eval', 'orbit_results.json')) as f:
    table = json.load(f)['table']
  # Chance: 31% (1/way averaged over the demo's test users, 3, 4 and 3 objects, all in a task).
  assert table['clean_frame_acc'] > 0.45 and table['clutter_frame_acc'] > 0.3, table
  # The release's naming end to end: folder names with spaces are the labels, in the
  # predictions file and in personalize.py's output.
  root = orbit_synthetic.default_root(cache_dir=env_cache)
  with open(os.path.join(train_dir, 'eval', 'predictions_clutter.json')) as f:
    predictions = json.load(f)
  for user, tasks in predictions.items():
    assert tasks[0]['task_object_list'] == sorted(os.listdir(os.path.join(root, 'test', user)))
  names = [o for tasks in predictions.values() for o in tasks[0]['task_object_list']]
  assert any(' ' in name for name in names), names
  user = next(u for u, t in predictions.items() if any(' ' in o for o in t[0]['task_object_list']))
  support = os.path.join(root, 'test', user)
  obj = next(o for o in sorted(os.listdir(support)) if ' ' in o)
  clutter = os.path.join(support, obj, 'clutter')
  video = os.path.join(clutter, sorted(os.listdir(clutter))[0])
  output = str(tmp_path / 'personal.json')
  result = run_binary('personalize.py', f'--train_dir={train_dir}', f'--support_dir={support}',
                      f'--query_video={video}', f'--output={output}')
  assert result.returncode == 0, result.stderr[-3000:]
  with open(output) as f:
    personal = json.load(f)
  assert personal['classes'] == sorted(os.listdir(support))
  assert {step['class'] for step in personal['video']} <= set(personal['classes'])
  assert f'adapted to {len(personal["classes"])} classes' in result.stdout


def test_history_pooling_classifies_pooled_features_of_each_frames_history(root):
  """The 2021 code's target-frame history pooling: the mean of the features of a frame and
  its 7 predecessors (the first frame repeated before the start), then the classifier."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from lite_tf.lite import model as lite_model  # pylint: disable=g-import-not-at-top
  from lite_tf.episode import to_model_input  # pylint: disable=g-import-not-at-top
  from lite_tf.learners import protonets  # pylint: disable=g-import-not-at-top
  gin.bind_parameter('orbit_episodes.root', root)
  gin.bind_parameter('orbit_episodes.image_size', 16)
  keras.utils.set_random_seed(0)
  learner = ProtoNets(backbone='conv4', image_size=16)
  source = orbit_episodes.orbit_episodes('test', target_video_type='clutter')
  learner(in_memory.episode_from_dict(source.episode(0)).to_dict())
  meta_model = lite_model.make_meta_model(learner)
  pooled, _ = orbit_evaluation.evaluate_mode(meta_model, source, 1, history_pooling=True)
  alone, _ = orbit_evaluation.evaluate_mode(meta_model, source, 1)
  task, episode = source.task(0), source.episode(0)
  support = learner.support_contributions(to_model_input(episode['support_images']))
  prototypes = protonets.class_means(support, episode['support_labels'], task.way)
  differs = False
  for video, got, single in zip(task.target_videos, pooled[0].videos, alone[0].videos):
    frames = to_model_input(source.decode(video.history.reshape(-1)))
    features = np.asarray(learner.query_features(None, frames)).reshape(
        video.history.shape + (-1,)).mean(axis=1)
    expected = np.argmax(protonets.squared_euclidean_logits(features, prototypes), axis=-1)
    assert got.predictions == expected.tolist()
    assert video.history.shape == (len(video.frames), 8)
    differs |= got.predictions != single.predictions
  assert differs  # pooling changes some prediction: the comparison above is not trivial
