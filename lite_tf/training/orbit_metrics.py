"""ORBIT's metrics, computed as microsoft/ORBIT-Dataset's `utils/eval_metrics.py` does.

Per target video, from its frames' predicted labels (frame order):
  frame accuracy         mean(prediction == label)
  frames to recognition  (0-based index of the first correct frame) / number of frames;
                         1.0 if no frame is correct (so 0.0 when the first frame is right)
  video accuracy         1 if the majority vote equals the label; a tie goes to the lowest
                         class index (numpy's bincount(...).argmax(), as the reference)

Averages, each with a 95% confidence interval 1.96 * std / sqrt(n) (population std, as the
reference's np.std):
  'video'   one score per (task, video), pooled over tasks and users: the headline figure, what
            the LITE paper's Table 1 reports and what both code versions call the video average;
  'user'    one score per user; two readings:
              user_aggregation='videos' (the 2021 code the paper used): the mean of the user's
                video scores over its tasks;
              user_aggregation='frames' (the code since Nov 2022): frame accuracy over all the
                user's frames pooled (video-level metrics, which that code no longer computes,
                fall back to the mean of the user's videos);
  'object'  per (user, object): frames pooled for frame accuracy, videos averaged otherwise
            (since Nov 2022);
  'task'    per task, likewise (since Nov 2022);
  'frame'   every frame one score (frame accuracy only).

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
  return float(np.mean(np.asarray(predictions) == label))


def frames_to_recognition(label, predictions):
  correct = np.nonzero(np.asarray(predictions) == label)[0]
  return float(correct[0] / len(predictions)) if correct.size else 1.0


def video_prediction(predictions):
  """The majority vote; ties go to the lowest class index."""
  return int(np.bincount(np.asarray(predictions, np.int64)).argmax())


def video_accuracy(label, predictions):
  return 1.0 if video_prediction(predictions) == label else 0.0


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
  return {'mean': float(np.mean(scores)) if len(scores) else float('nan'),
          'ci95': confidence_interval(scores), 'n': len(scores)}


def summarize(results, user_aggregation='videos'):
  """{metric: {average: {'mean', 'ci95', 'n'}}} over TaskResults (see the module docstring)."""
  if user_aggregation not in USER_AGGREGATIONS:
    raise ValueError(f'user_aggregation must be one of {list(USER_AGGREGATIONS)}; got '
                     f'{user_aggregation!r}')
  if not results or not any(t.videos for t in results):
    raise ValueError('no target videos to score (every task is empty)')
  out = {}
  for metric in METRICS:
    fn = _METRIC_FNS[metric]
    per_video = []
    groups = {'user': collections.defaultdict(list), 'object': collections.defaultdict(list),
              'task': collections.defaultdict(list)}
    pooled = {'user': collections.defaultdict(list), 'object': collections.defaultdict(list),
              'task': collections.defaultdict(list)}
    frames = []
    for task in results:
      for video in task.videos:
        score = fn(video.label, video.predictions)
        per_video.append(score)
        correct = list(np.asarray(video.predictions) == video.label)
        keys = {'user': task.user, 'object': (task.user, task.objects[video.label]),
                'task': (task.user, task.task_index)}
        for average, key in keys.items():
          groups[average][key].append(score)
          pooled[average][key] += correct
        frames += correct
    summary = {'video': _mean_ci(per_video)}
    for average in ('user', 'object', 'task'):
      use_frames = metric == 'frame_accuracy' and (average != 'user'
                                                   or user_aggregation == 'frames')
      source = pooled if use_frames else groups
      summary[average] = _mean_ci([np.mean(v) for v in source[average].values()])
    if metric == 'frame_accuracy':
      summary['frame'] = _mean_ci(np.asarray(frames, np.float64))
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
