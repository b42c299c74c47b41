"""ORBIT's metrics, computed as microsoft/ORBIT-Dataset's `utils/eval_metrics.py` does.

Each metric takes a label and predicted labels (one per frame, frame order):
  frame accuracy         mean(prediction == label)
  frames to recognition  (0-based index of the first correct frame) / number of frames;
                         1.0 if no frame is correct (so 0.0 when the first frame is right)
  video accuracy         1 if the majority vote equals the label; a tie goes to the lowest
                         class index (numpy's bincount(...).argmax(), as the reference)

Averages, each the mean of its scores with a 95% confidence interval
1.96 * std / sqrt(n) (population std, as the reference's np.std). Two readings, chosen by
`user_aggregation`, each the one of one version of ORBIT's code:

  'videos'  the 2021 code the LITE paper used (commit dc25dae): every metric is computed per
            target video; 'video' averages all (task, video) scores, pooled over tasks and
            users (Table 1's figure); 'user' averages each user's mean video score. ('object'
            and 'task', which that code does not report, average the videos of each
            (user, object) and of each task likewise.) This is the better statistic of the
            two: every video counts once, whatever its length, and frames to recognition
            keeps its meaning (how far into a video recognition comes).
  'frames'  the code since Nov 2022 (the challenge's): 'video' as above; 'user', 'object'
            and 'task' apply each metric to the frames of that group concatenated (tasks in
            order, videos in task order, frames in frame order), labels per frame. So frame
            accuracy is pooled over frames and frames to recognition is the first correct
            frame of the concatenation over its length. Video accuracy is defined there only
            for 'object' (the majority vote of the object's pooled frames); for 'user' and
            'task' that code compares the vote with an array of frame labels and raises, so
            they are reported as undefined (mean None) unless the group has one frame.

Both readings also give 'frame': every frame one score (frame accuracy only; lite_tf's).

`TaskResult` holds one task's predictions; `summarize` gives every average of every metric;
`predictions_json` writes the challenge's submission layout
{user: [{task_object_list, task_macs_to_personalise, task_videos: {video: {frame: label}}}]}.
"""

import collections
import dataclasses

import numpy as np

METRICS = ('frame_accuracy', 'frames_to_recognition', 'video_accuracy')
AVERAGES = ('video', 'user', 'object', 'task', 'frame')
USER_AGGREGATIONS = ('videos', 'frames')


def frame_accuracy(label, predictions):
  """label: one label, or one per prediction (a pooled group's frames)."""
  return float(np.mean(np.asarray(predictions) == np.asarray(label)))


def frames_to_recognition(label, predictions):
  predictions = np.asarray(predictions)
  correct = np.nonzero(predictions == np.asarray(label))[0]
  return float(correct[0] / len(predictions)) if correct.size else 1.0


def video_prediction(predictions):
  """The majority vote; ties go to the lowest class index."""
  return int(np.bincount(np.asarray(predictions, np.int64)).argmax())


def video_accuracy(label, predictions):
  """label: one label (a video or an object). Frame labels (a user's or a task's pooled
  frames) give None, as ORBIT's code cannot score them, unless there is exactly one."""
  label = np.asarray(label)
  if label.ndim and label.size != 1:
    return None
  return 1.0 if video_prediction(predictions) == int(label.reshape(-1)[0]) else 0.0


_METRIC_FNS = {'frame_accuracy': frame_accuracy, 'frames_to_recognition': frames_to_recognition,
               'video_accuracy': video_accuracy}


def confidence_interval(scores):
  """Half-width of the 95% interval: 1.96 * population std / sqrt(n)."""
  scores = np.asarray(scores, np.float64)
  return float(1.96 * np.std(scores) / np.sqrt(len(scores))) if len(scores) else float('nan')


@dataclasses.dataclass
class VideoResult:
  name: str
  label: int
  frame_numbers: list
  predictions: list  # per evaluated frame, in frame order


@dataclasses.dataclass
class TaskResult:
  user: str
  task_index: int
  objects: list  # class names in label order
  videos: list  # [VideoResult]
  macs_to_personalise: int = None


def _mean_ci(scores):
  if any(score is None for score in scores):
    return {'mean': None, 'ci95': None, 'n': len(scores)}
  return {'mean': float(np.mean(scores)) if len(scores) else float('nan'),
          'ci95': confidence_interval(scores), 'n': len(scores)}


def _groups(results):
  """{average: {key: [(task, video)]}} for 'user', 'object' and 'task', in task order."""
  groups = {'user': collections.defaultdict(list), 'object': collections.defaultdict(list),
            'task': collections.defaultdict(list)}
  for task in results:
    for video in task.videos:
      keys = {'user': task.user, 'object': (task.user, task.objects[video.label]),
              'task': (task.user, task.task_index)}
      for average, key in keys.items():
        groups[average][key].append(video)
  return groups


def _pooled_score(fn, average, videos):
  """ORBIT's code since Nov 2022: the metric on the group's frames concatenated, labelled per
  frame ('user', 'task') or with the object's label ('object')."""
  predictions = np.concatenate([np.asarray(v.predictions, np.int64) for v in videos])
  if average == 'object':
    return fn(videos[0].label, predictions)
  labels = np.concatenate([np.full(len(v.predictions), v.label, np.int64) for v in videos])
  return fn(labels, predictions)


def summarize(results, user_aggregation='videos'):
  """{metric: {average: {'mean', 'ci95', 'n'}}} over TaskResults (see the module docstring)."""
  if user_aggregation not in USER_AGGREGATIONS:
    raise ValueError(f'user_aggregation must be one of {list(USER_AGGREGATIONS)}; got '
                     f'{user_aggregation!r}')
  if not results or not any(t.videos for t in results):
    raise ValueError('no target videos to score (every task is empty)')
  groups = _groups(results)
  out = {}
  for metric in METRICS:
    fn = _METRIC_FNS[metric]
    scores = {id(v): fn(v.label, v.predictions) for t in results for v in t.videos}
    summary = {'video': _mean_ci(list(scores.values()))}
    for average, members in groups.items():
      if user_aggregation == 'frames':
        values = [_pooled_score(fn, average, videos) for videos in members.values()]
      else:
        values = [float(np.mean([scores[id(v)] for v in videos])) for videos in members.values()]
      summary[average] = _mean_ci(values)
    if metric == 'frame_accuracy':
      summary['frame'] = _mean_ci(np.concatenate([
          np.asarray(v.predictions) == v.label for t in results for v in t.videos]
      ).astype(np.float64))
    out[metric] = summary
  return out


def predictions_json(results):
  """The challenge's submission layout, one entry per task in task order for each user."""
  out = collections.defaultdict(list)
  for task in sorted(results, key=lambda t: (t.user, t.task_index)):
    entry = {'task_object_list': list(task.objects)}
    if task.macs_to_personalise is not None:
      entry['task_macs_to_personalise'] = int(task.macs_to_personalise)
    entry['task_videos'] = {
        v.name: {str(int(f)): int(p) for f, p in zip(v.frame_numbers, v.predictions)}
        for v in task.videos}
    out[task.user].append(entry)
  return dict(out)
