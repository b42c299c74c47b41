"""ORBIT tasks: which frames of which videos form a task's context (support) and target (query)
sets, under the benchmark's protocols. Tasks are descriptions (frame paths and labels); pixels
are read only when a task is turned into an episode.

A task belongs to one collector (user-centric, the benchmark) or draws objects from every
collector of the split (object-centric, a training option). Its objects, sorted by name, are
its classes in that order. Per object, context videos come from its clean videos; target videos
from its clutter videos (CLU-VE, `target_video_type='clutter'`) or from clean videos held out
of the context (CLE-VE: the first min(5, n-1) clean videos by name are context, the rest
target), as in microsoft/ORBIT-Dataset's `data/datasets.py`.

Videos become clips of `clip_length` contiguous frames. A video's frames are filtered by the
annotations first; the minimum (min_target_frames) is checked on all the frames that pass, and
then the first `frame_cap` of them are kept (the reference's order). Clips are chosen by
`clip_method`:
  'max'       every clip, in order, the last padded with copies of the video's last frame;
  'random'    a random number (1 to clip_cap) of clips at random positions;
  'fixed'     num_clips clips at random positions (all if fewer);
  'uniform'   every subsample_factor-th clip from the first, at most clip_cap;
  'duplicate' exactly num_clips clips, as the 2021 code's sample_frames: a video with fewer
              than num_clips * clip_length frames first gets that many more of its frames
              drawn at random (without replacement while it has enough, else with) and
              sorted in beside their originals; then num_clips of the clip-aligned positions
              at random (frames past the last whole clip are never used).
The padded methods pad with copies of the last frame to a whole number of clips. The
reference's random/uniform methods pick clip indices but use them as frame indices, which is
the same only for clip_length 1; here they always pick clips.

At test time the target set is per video (`TargetVideo`): its evaluated frames in frame order
(`target_whole_clips`: only the first floor(n / clip_length) * clip_length, as the 2021 code's
sample_frames('max')), each predicted from the frame alone by lite_tf's evaluation. Every
frame also carries its causal history (the frame and its clip_length - 1 predecessors, the
first frame repeated before the start), which the 2021 code's frame-history pooling uses
(`orbit_evaluation`'s option).

`annotations_to_load` (object_bounding_box and the quality issues, as ORBIT's loader offers
them) puts per-frame annotations on the task, aligned with its clips and target frames:
`OrbitTask.context_annotations` / `target_annotations` and `TargetVideo.annotations`, each
{name: float32 [..., 4] boxes (x, y, w, h in the original 1080-px frame; OrbitEpisodes
rescales them to its frame size as ORBIT does) or [..., 1] flags (1 true, 0 false)}, NaN
where a frame has no such annotation or it is null.

Protocols (`protocol_config`):
  'original'  the LITE paper's (ORBIT's 2021 code, commit dc25dae): 5 tasks per test user, all
              of a user's objects and context videos, 8 clips of 8 frames per context video
              ('duplicate': short videos repeat frames), every frame of every target video in
              whole clips (the first floor(n/8)*8 of the first 1000).
  'challenge' the ORBIT challenge protocol (Dec 2022 onwards): 50 tasks per test user, all
              objects, context frames every 30th frame (clip_length 1), target: clutter frames
              where the object is present (`no_object_not_present_issue`), videos with fewer
              than 50 such frames dropped, 200 of them at random (all if 50-200), each frame
              predicted from itself.
  'train'     training tasks of ORBIT's 2022 code (commit 5a2b4e8): random way (2 to
              min(objects, 15)) per user, a random number of context and target videos
              (capped at 15), a random number of 8-frame clips (at most 10) from each; target
              videos need 50 frames, as the current code's loader requires of every target
              video (that code trains on single frames by default: see the README).
  'train_2021' training tasks of the 2021 code: random way and shots as 'train', 4 clips per
              context and target video ('duplicate'); `shot_caps_by_way` adds its
              --with_train_shot_caps (context videos capped at 5 if way >= 6 else 10, target
              at 4 if way >= 6 else 8), which its 84x84 runs used with object_cap 10.

Frame filters use the annotations: a criterion is an issue name (QUALITY_ISSUES, e.g.
`blur_issue`), `no_<issue>`, `no_issues` (all seven `no_` criteria) or `mixed_issues` (all seven
issues); a frame is kept if any criterion holds for it, as in the reference.
"""

import dataclasses
import os

import gin
import numpy as np

from lite_tf.data.orbit import dataset as orbit

WAY_METHODS = ('random', 'max')
SHOT_METHODS = ('random', 'max', 'fixed', 'specific')
CLIP_METHODS = ('max', 'random', 'fixed', 'uniform', 'duplicate')
TARGET_VIDEO_TYPES = ('clutter', 'clean')
TASK_TYPES = ('user_centric', 'object_centric')
CLEAN_CONTEXT_SPLIT = 5  # CLE-VE: first min(5, n - 1) clean videos are context
# What ORBIT's loader can load per frame (annotations_to_load), and each one's width.
ANNOTATIONS = ('object_bounding_box',) + orbit.QUALITY_ISSUES
ANNOTATION_DIMS = {'object_bounding_box': 4}


def expand_criteria(criteria, name='filter'):
  """Frame-filter criteria with 'no_issues' / 'mixed_issues' expanded; unknown names refused."""
  out = set()
  for c in criteria:
    if c == 'no_issues':
      out.update(f'no_{q}' for q in orbit.QUALITY_ISSUES)
    elif c == 'mixed_issues':
      out.update(orbit.QUALITY_ISSUES)
    elif c in orbit.QUALITY_ISSUES or (c.startswith('no_') and c[3:] in orbit.QUALITY_ISSUES):
      out.add(c)
    else:
      raise ValueError(f'orbit_tasks.{name}: unknown criterion {c!r}; expected one of '
                       f'{list(orbit.QUALITY_ISSUES)}, their no_ forms, no_issues or '
                       'mixed_issues')
  return out


def _frame_tags(note):
  return ({q for q in orbit.QUALITY_ISSUES if note.get(q) is True}
          | {f'no_{q}' for q in orbit.QUALITY_ISSUES if note.get(q) is False})


@dataclasses.dataclass(frozen=True)
class TaskConfig:
  """How tasks are drawn (one per protocol in PROTOCOLS; any field can be changed)."""
  num_tasks_per_user: int = 5
  shuffle_users: bool = False  # a new user order every pass (training)
  task_type: str = 'user_centric'
  way_method: str = 'max'
  object_cap: int = 15
  target_video_type: str = 'clutter'
  context_shot_method: str = 'max'
  target_shot_method: str = 'max'
  context_shot: int = 5
  target_shot: int = 2
  shot_cap: int = 15
  clip_length: int = 8
  context_clip_method: str = 'fixed'
  target_clip_method: str = 'max'
  num_clips: int = 8
  clip_cap: int = 10
  subsample_factor: int = 30
  frame_cap: int = 1000
  # Test-style target sets: per video, frames with their causal history.
  per_video_targets: bool = True
  target_frames: int = 0  # > 0: that many random frames per target video (all if fewer)
  min_target_frames: int = 0  # target videos with fewer (after filtering) are dropped
  context_filter: tuple = ()
  target_filter: tuple = ()
  # Test-style targets: only the frames of whole clips (the 2021 code's sample_frames('max')).
  target_whole_clips: bool = False
  # The 2021 code's --with_train_shot_caps: shot_cap by way (see the module docstring).
  shot_caps_by_way: bool = False
  annotations_to_load: tuple = ()

  def __post_init__(self):
    for name, value, allowed in (('task_type', self.task_type, TASK_TYPES),
                                 ('way_method', self.way_method, WAY_METHODS),
                                 ('target_video_type', self.target_video_type,
                                  TARGET_VIDEO_TYPES),
                                 ('context_shot_method', self.context_shot_method, SHOT_METHODS),
                                 ('target_shot_method', self.target_shot_method, SHOT_METHODS),
                                 ('context_clip_method', self.context_clip_method, CLIP_METHODS),
                                 ('target_clip_method', self.target_clip_method, CLIP_METHODS)):
      if value not in allowed:
        raise ValueError(f'orbit_tasks.{name} must be one of {list(allowed)}; got {value!r}')
    for name in ('num_tasks_per_user', 'object_cap', 'clip_length', 'num_clips', 'clip_cap',
                 'subsample_factor', 'frame_cap', 'shot_cap', 'context_shot', 'target_shot'):
      if getattr(self, name) < 1:
        raise ValueError(f'orbit_tasks.{name} must be >= 1; got {getattr(self, name)}')
    for name in ('context_filter', 'target_filter'):
      for criterion in getattr(self, name):
        expand_criteria([criterion], name)
    for name in self.annotations_to_load:
      if name not in ANNOTATIONS:
        raise ValueError(f'orbit_tasks.annotations_to_load: unknown annotation {name!r}; '
                         f'expected some of {list(ANNOTATIONS)}')


PROTOCOLS = {
    'original': TaskConfig(context_clip_method='duplicate', target_whole_clips=True),
    'challenge': TaskConfig(num_tasks_per_user=50, clip_length=1, context_clip_method='uniform',
                            clip_cap=200, target_frames=200, min_target_frames=50,
                            target_filter=('no_object_not_present_issue',)),
    'train': TaskConfig(num_tasks_per_user=50, shuffle_users=True, way_method='random',
                        context_shot_method='random', target_shot_method='random',
                        context_clip_method='random', target_clip_method='random',
                        per_video_targets=False, min_target_frames=50),
    'train_2021': TaskConfig(num_tasks_per_user=50, shuffle_users=True, way_method='random',
                             context_shot_method='random', target_shot_method='random',
                             context_clip_method='duplicate', target_clip_method='duplicate',
                             num_clips=4, per_video_targets=False),
}


@gin.configurable('orbit_tasks')
def protocol_config(protocol='original', **overrides):
  """The TaskConfig of a named protocol ('original', 'challenge', 'train') with overrides,
  e.g. `orbit_tasks.protocol = 'challenge'`, `orbit_tasks.overrides = {'clip_length': 4}`."""
  if protocol not in PROTOCOLS:
    raise ValueError(f'orbit_tasks.protocol must be one of {sorted(PROTOCOLS)}; got '
                     f'{protocol!r}')
  fields = {f.name for f in dataclasses.fields(TaskConfig)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f'orbit_tasks: unknown settings {unknown}; known: {sorted(fields)}')
  return dataclasses.replace(PROTOCOLS[protocol], **overrides)


@dataclasses.dataclass
class TargetVideo:
  """A target video at test time: the frames evaluated, in frame order, and their histories."""
  name: str
  label: int
  frames: list  # paths of the evaluated frames
  history: np.ndarray  # [len(frames), clip_length] paths: earlier frames, then the frame
  frame_numbers: list  # 1-based, from the file names
  num_video_frames: int
  annotations: dict = None  # {name: [len(frames), dim]} (annotations_to_load)


@dataclasses.dataclass
class OrbitTask:
  """One task: classes are `objects` in order; clips are [num, clip_length] arrays of paths."""
  index: int
  user: str
  objects: list
  context_clips: np.ndarray
  context_labels: np.ndarray
  context_videos: list
  target_clips: np.ndarray = None  # training-style target sets
  target_labels: np.ndarray = None
  target_videos: list = None  # test-style: [TargetVideo]
  # annotations_to_load: {name: [clips, clip_length, dim]}, aligned with the clips.
  context_annotations: dict = None
  target_annotations: dict = None

  @property
  def way(self):
    return len(self.objects)


def frame_annotations(notes, paths, names, source):
  """{name: float32 [len(paths), dim]} of the frames' annotations (module docstring); a frame
  missing from the annotation file is an error naming the file (source)."""
  out = {name: np.full([len(paths), ANNOTATION_DIMS.get(name, 1)], np.nan, np.float32)
         for name in names}
  for row, path in enumerate(paths):
    note = notes.get(os.path.basename(path))
    if note is None:
      raise orbit.OrbitLayoutError(f'{source}: no annotation for frame {os.path.basename(path)}')
    for name in names:
      value = note.get(name)
      if value is None:
        continue
      if name == 'object_bounding_box':
        out[name][row] = [value['x'], value['y'], value['w'], value['h']]
      else:
        out[name][row] = float(bool(value))
  return out


def with_boxes_at(task, frame_size):
  """The task with its annotation boxes in a frame of side frame_size (orbit.scale_boxes)."""
  groups = [task.context_annotations, task.target_annotations]
  groups += [v.annotations for v in task.target_videos or ()]
  for group in groups:
    if group and 'object_bounding_box' in group:
      group['object_bounding_box'] = orbit.scale_boxes(group['object_bounding_box'], frame_size)
  return task


class TaskSampler:
  """Seeded ORBIT tasks of one split: task i depends only on (seed, i), so a run resumes at
  any task (`tasks(start=i)`).

  Videos and frames are filtered once, at construction: a context video needs one frame left,
  a target video min(1, min_target_frames) frames; objects without both, and users without
  objects, are left out and counted in `dropped`.
  """

  def __init__(self, dataset, split, config=None, seed=0):
    self.dataset = dataset
    self.split = split
    self.config = config or PROTOCOLS['original']
    self.seed = seed
    if split not in dataset.users:
      raise ValueError(f'split {split!r} was not scanned; scanned: {sorted(dataset.users)}')
    self.dropped = {'target videos': 0, 'context videos': 0, 'objects': 0, 'users': 0}
    self.users = []  # [(collector, {object: (context videos, target videos)})]
    for user in dataset.users[split]:
      objects = {}
      for name in user.object_names:
        pools = self._pools(user, name)
        if pools is not None:
          objects[name] = pools
        else:
          self.dropped['objects'] += 1
      if objects:
        self.users.append((user.collector, objects))
      else:
        self.dropped['users'] += 1
    if not self.users:
      raise ValueError(f'{dataset.root}: no {split} user has an object with both context '
                       f'(clean) and target ({self.config.target_video_type}) videos left '
                       f'after the filters; dropped: {self.dropped}')

  def _filtered(self, video, criteria):
    """The video's frames that pass the annotation filter, all of them (the reference filters
    first, then checks the minimum and caps the filtered frames, in _pools)."""
    frames = video.frames
    if not criteria:
      return frames
    notes = self.dataset.load_annotations(video)
    wanted = expand_criteria(criteria)
    kept = []
    for path in frames:
      name = os.path.basename(path)
      if name not in notes:
        raise orbit.OrbitLayoutError(f'{video.annotation_path(self.dataset.root)}: no '
                                     f'annotation for frame {name}')
      if _frame_tags(notes[name]) & wanted:
        kept.append(path)
    return kept

  def _pools(self, user, name):
    c = self.config
    clean = sorted(user.videos(name, 'clean'), key=lambda v: v.name)
    if c.target_video_type == 'clean':
      split = min(CLEAN_CONTEXT_SPLIT, len(clean) - 1)
      context, target = clean[:split], clean[split:]
    else:
      context, target = clean, sorted(user.videos(name, 'clutter'), key=lambda v: v.name)
    context_pool, target_pool = [], []
    for video in context:
      frames = self._filtered(video, c.context_filter)
      if frames:
        context_pool.append((video, frames[:c.frame_cap]))
      else:
        self.dropped['context videos'] += 1
    # Whole-clip targets need one clip (the 2021 code leaves out a shorter video).
    least = c.clip_length if c.target_whole_clips and c.per_video_targets else 1
    for video in target:
      frames = self._filtered(video, c.target_filter)
      if len(frames) >= max(least, c.min_target_frames):
        target_pool.append((video, frames[:c.frame_cap]))
      else:
        self.dropped['target videos'] += 1
    if not context_pool or not target_pool:
      return None
    return context_pool, target_pool

  @property
  def num_users(self):
    return len(self.users)

  def num_tasks(self):
    """Tasks in one pass: num_tasks_per_user for every user."""
    return self.num_users * self.config.num_tasks_per_user

  def _rng(self, index):
    return np.random.default_rng([self.seed, index])

  def _user_of(self, index):
    """User-centric: every pass holds each user num_tasks_per_user times, user by user, or
    (shuffle_users) in a seeded order drawn anew for every pass."""
    per_pass = self.num_tasks()
    pass_index, within = divmod(index, per_pass)
    if not self.config.shuffle_users:
      return within // self.config.num_tasks_per_user
    order = np.random.default_rng([self.seed, 2**31 - 1, pass_index]).permutation(per_pass)
    return order[within] // self.config.num_tasks_per_user

  def task(self, index):
    """Task `index` (any non-negative integer; a pass holds num_tasks())."""
    c = self.config
    rng = self._rng(index)
    if c.task_type == 'object_centric':
      pool = [(u, n, p) for u, objects in self.users for n, p in objects.items()]
      way = self._way(len(pool), rng)
      chosen = sorted(rng.choice(len(pool), way, replace=False),
                      key=lambda i: (pool[i][0], pool[i][1]))
      user = 'object_centric'
      objects = [(f'{pool[i][0]}/{pool[i][1]}', pool[i][2]) for i in chosen]
    else:
      user, user_objects = self.users[self._user_of(index)]
      names = sorted(user_objects)
      way = self._way(len(names), rng)
      picked = sorted(rng.choice(len(names), way, replace=False)) if way < len(names) else \
          range(len(names))
      objects = [(names[i], user_objects[names[i]]) for i in picked]
    context_cap, target_cap = c.shot_cap, c.shot_cap
    if c.shot_caps_by_way:
      context_cap, target_cap = (5, 4) if len(objects) >= 6 else (10, 8)
    context_clips, context_labels, context_videos = [], [], []
    target_clips, target_labels, target_videos, target_clip_videos = [], [], [], []
    for label, (_, (context_pool, target_pool)) in enumerate(objects):
      for video, frames in self._choose(context_pool, c.context_shot_method, c.context_shot,
                                        context_cap, rng):
        clips = self._clips(frames, c.context_clip_method, rng)
        context_clips += clips
        context_labels += [label] * len(clips)
        context_videos += [video.name] * len(clips)
      for video, frames in self._choose(target_pool, c.target_shot_method, c.target_shot,
                                        target_cap, rng):
        if c.per_video_targets:
          target_videos.append(self._target_video(video, frames, label, rng))
        else:
          clips = self._clips(frames, c.target_clip_method, rng)
          target_clips += clips
          target_labels += [label] * len(clips)
          target_clip_videos += [video] * len(clips)
    task = OrbitTask(index, user, [name for name, _ in objects], np.array(context_clips),
                     np.array(context_labels, np.int32), context_videos)
    if c.per_video_targets:
      task.target_videos = target_videos
    else:
      task.target_clips = np.array(target_clips)
      task.target_labels = np.array(target_labels, np.int32)
    if c.annotations_to_load:
      self._annotate(task, objects, target_clip_videos)
    return task

  def _annotate(self, task, objects, target_clip_videos):
    """Puts annotations_to_load on the task (see the module docstring)."""
    videos = {}
    for _, (context_pool, target_pool) in objects:
      for video, _ in context_pool + target_pool:
        videos[video.name] = video
    notes = {}

    def load(video, paths):
      if video.name not in notes:
        notes[video.name] = self.dataset.load_annotations(video)
      return frame_annotations(notes[video.name], paths, self.config.annotations_to_load,
                               video.annotation_path(self.dataset.root))

    def per_clip(clips, clip_videos):
      rows = [load(video, clip) for clip, video in zip(clips, clip_videos)]
      return {name: np.stack([r[name] for r in rows]) if rows else
              np.zeros([0, self.config.clip_length, ANNOTATION_DIMS.get(name, 1)], np.float32)
              for name in self.config.annotations_to_load}

    task.context_annotations = per_clip(task.context_clips,
                                        [videos[n] for n in task.context_videos])
    if task.target_videos is not None:
      for target in task.target_videos:
        target.annotations = load(videos[target.name], target.frames)
    else:
      task.target_annotations = per_clip(task.target_clips, target_clip_videos)

  def tasks(self, start=0, stop=None):
    """Tasks start, start + 1, ... (stop: exclusive; None: one pass from 0 for evaluation,
    endless for training)."""
    index = start
    while stop is None or index < stop:
      yield self.task(index)
      index += 1

  def _way(self, num_objects, rng):
    cap = min(num_objects, self.config.object_cap)
    if self.config.way_method == 'max' or cap < 2:
      return cap
    return int(rng.integers(2, cap + 1))

  def _choose(self, pool, method, shot, shot_cap, rng):
    cap = min(len(pool), shot_cap)
    if method == 'max':
      return [pool[i] for i in rng.permutation(len(pool))[:cap]] if len(pool) > cap else pool
    if method == 'specific':
      return pool[:min(shot, cap)]
    count = min(shot, cap) if method == 'fixed' else int(rng.integers(1, cap + 1))
    return [pool[i] for i in sorted(rng.choice(len(pool), count, replace=False))]

  def _clips(self, frames, method, rng):
    """[clips] of clip_length paths each from a video's (filtered) frames."""
    c = self.config
    frames = list(frames)
    if method == 'duplicate':
      return self._duplicated_clips(frames, rng)
    remainder = len(frames) % c.clip_length
    if remainder:
      frames += [frames[-1]] * (c.clip_length - remainder)
    clips = [frames[i:i + c.clip_length] for i in range(0, len(frames), c.clip_length)]
    m = len(clips)
    if method == 'max':
      return clips
    if method == 'uniform':
      return clips[::min(c.subsample_factor, m)][:c.clip_cap]
    count = min(m, c.num_clips) if method == 'fixed' else int(rng.integers(1, min(m, c.clip_cap)
                                                                              + 1))
    return [clips[i] for i in sorted(rng.choice(m, count, replace=False))]

  def _duplicated_clips(self, frames, rng):
    """The 2021 code's sample_frames(num_clips): exactly num_clips clips (module docstring)."""
    c = self.config
    order = list(range(len(frames)))
    missing = c.num_clips * c.clip_length - len(frames)
    if missing > 0:
      order += [int(i) for i in rng.choice(len(frames), missing,
                                           replace=missing > len(frames))]
    order.sort()
    ends = sorted(rng.choice(len(order) // c.clip_length, c.num_clips, replace=False))
    return [[frames[i] for i in order[e * c.clip_length:(e + 1) * c.clip_length]]
            for e in ends]

  def _target_video(self, video, frames, label, rng):
    c = self.config
    if c.target_whole_clips:
      frames = frames[:len(frames) // c.clip_length * c.clip_length]
    if c.target_frames and len(frames) > c.target_frames:
      frames = [frames[i] for i in sorted(rng.choice(len(frames), c.target_frames,
                                                     replace=False))]
    position = {p: i for i, p in enumerate(video.frames)}
    history = []
    for path in frames:
      i = position[path]
      history.append([video.frames[max(0, j)] for j in range(i - c.clip_length + 1, i + 1)])
    return TargetVideo(video.name, label, list(frames), np.array(history),
                       [orbit.parse_frame_name(p)[4] + 1 for p in frames], video.num_frames)
