"""ORBIT metrics against hand-computed values (lite_tf.training.orbit_metrics)."""

import json

import numpy as np
import pytest

from lite_tf.training import orbit_metrics as m


def test_per_video_metrics_and_edge_cases():
  assert m.frame_accuracy(1, [1, 0, 1, 1]) == 0.75
  assert m.frames_to_recognition(1, [0, 0, 1, 0, 1]) == 0.4
  assert m.frames_to_recognition(1, [1, 0, 0]) == 0.0  # correct on the first frame
  assert m.frames_to_recognition(1, [0, 0, 2]) == 1.0  # never correct
  assert m.video_accuracy(0, [2, 2, 0, 0]) == 1.0  # a tie goes to the lowest class index
  assert m.video_accuracy(2, [2, 2, 0, 0]) == 0.0
  assert m.video_accuracy(2, [2, 1, 2, 0]) == 1.0


def test_confidence_interval_is_population_std():
  # std of [1, 0, 1, 1] (ddof 0) = sqrt(3/16) = 0.4330; 1.96 * 0.4330 / sqrt(4) = 0.42435
  assert m.confidence_interval([1, 0, 1, 1]) == pytest.approx(0.424352, abs=1e-6)


def _results():
  v = m.VideoResult
  return [
      m.TaskResult('P1', 0, ['cup', 'key'], [v('a', 0, [1, 2, 3, 4], [0, 0, 1, 1]),
                                              v('b', 1, [1, 2, 3], [1, 1, 1])], 1000),
      m.TaskResult('P1', 1, ['cup', 'key'], [v('a', 0, [1, 2, 3, 4], [0, 0, 0, 0]),
                                              v('b', 1, [1, 2, 3], [0, 0, 1])], 1200),
      m.TaskResult('P2', 0, ['pen'], [v('c', 0, [5, 9], [0, 0])]),
  ]


def test_averages_equal_hand_computed_values():
  s = m.summarize(_results())
  frame = s['frame_accuracy']
  # Per video: 1/2, 1, 1, 1/3, 1.
  assert frame['video']['mean'] == pytest.approx((0.5 + 1 + 1 + 1 / 3 + 1) / 5)
  assert frame['video']['n'] == 5
  assert frame['video']['ci95'] == pytest.approx(
      1.96 * np.std([0.5, 1, 1, 1 / 3, 1]) / np.sqrt(5))
  # The paper-era reading: every group averages its videos (user: P1's 4 videos, P2's 1).
  assert frame['user']['mean'] == pytest.approx(((0.5 + 1 + 1 + 1 / 3) / 4 + 1) / 2)
  assert frame['object']['mean'] == pytest.approx(((0.5 + 1) / 2 + (1 + 1 / 3) / 2 + 1) / 3)
  assert frame['task']['mean'] == pytest.approx(((0.5 + 1) / 2 + (1 + 1 / 3) / 2 + 1) / 3)
  assert frame['frame']['mean'] == pytest.approx(12 / 16) and frame['frame']['n'] == 16
  # Frames to recognition: 0, 0, 0, 2/3, 0; video accuracy: the tie in 'a' (task 0) goes to 0.
  assert s['frames_to_recognition']['video']['mean'] == pytest.approx((2 / 3) / 5)
  assert s['video_accuracy']['video']['mean'] == pytest.approx(4 / 5)
  assert s['video_accuracy']['user']['mean'] == pytest.approx((3 / 4 + 1) / 2)
  # Today's reading: frames pooled per group. Users 10/14 and 2/2; objects cup 6/8, key 4/6,
  # pen 2/2; tasks 5/7, 5/7, 2/2.
  today = m.summarize(_results(), user_aggregation='frames')
  assert today['frame_accuracy']['user']['mean'] == pytest.approx((10 / 14 + 1) / 2)
  assert today['frame_accuracy']['object']['mean'] == pytest.approx((6 / 8 + 4 / 6 + 1) / 3)
  assert today['frame_accuracy']['task']['mean'] == pytest.approx((5 / 7 + 5 / 7 + 1) / 3)
  assert today['frame_accuracy']['video'] == frame['video']


def test_pooled_reading_applies_every_metric_to_the_concatenated_frames():
  v = m.VideoResult
  results = [m.TaskResult('P3', 0, ['x', 'y'], [v('d', 1, [1, 2], [0, 1]),
                                                  v('e', 0, [1, 2, 3], [1, 1, 0])])]
  videos = m.summarize(results)
  pooled = m.summarize(results, user_aggregation='frames')
  # Per video: d first right at 1 of 2, e at 2 of 3. Pooled: labels 1 1 0 0 0 against
  # predictions 0 1 1 1 0, first right at index 1 of 5.
  assert videos['frames_to_recognition']['user']['mean'] == pytest.approx((1 / 2 + 2 / 3) / 2)
  assert pooled['frames_to_recognition']['user']['mean'] == pytest.approx(1 / 5)
  assert pooled['frames_to_recognition']['task']['mean'] == pytest.approx(1 / 5)
  # Objects: x = video e alone (first right at 2 of 3), y = video d (1 of 2).
  assert pooled['frames_to_recognition']['object']['mean'] == pytest.approx((2 / 3 + 1 / 2) / 2)
  # Video accuracy: d's tie goes to 0 (wrong), e votes 1 (wrong); per object the same votes;
  # per user and task ORBIT's code cannot score it (an array of frame labels).
  assert pooled['video_accuracy']['object']['mean'] == 0.0
  assert pooled['video_accuracy']['user'] == {'mean': None, 'ci95': None, 'n': 1}
  assert pooled['video_accuracy']['task']['mean'] is None
  assert videos['video_accuracy']['user']['mean'] == 0.0


def test_predictions_json_is_the_challenge_layout():
  out = json.loads(json.dumps(m.predictions_json(_results())))
  assert sorted(out) == ['P1', 'P2']
  assert [t['task_object_list'] for t in out['P1']] == [['cup', 'key'], ['cup', 'key']]
  assert out['P1'][1]['task_macs_to_personalise'] == 1200
  assert 'task_macs_to_personalise' not in out['P2'][0]
  assert out['P1'][0]['task_videos']['a'] == {'1': 0, '2': 0, '3': 1, '4': 1}
  assert out['P2'][0]['task_videos'] == {'c': {'5': 0, '9': 0}}


def test_bad_input_is_named():
  with pytest.raises(ValueError, match='user_aggregation must be one of'):
    m.summarize(_results(), user_aggregation='tasks')
  with pytest.raises(ValueError, match='no target videos'):
    m.summarize([m.TaskResult('P1', 0, ['cup'], [])])
