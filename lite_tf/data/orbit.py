"""ORBIT (Massiceti et al., ICCV 2021): the released folder layout, read lazily.

  <root>/{train,validation,test}/<collector>/<object>/{clean,clutter}/<video>/<frame>.jpg
  <root>/annotations/<split>/<video>.json      (optional)

Videos are folders of frames named `<collector>--<object>--<type>--<video id>-<index>.jpg`
(index from 00001), e.g. `P177--bag--clutter--<id>-00001.jpg`; `<type>` is `clean`,
`clutter`, or `clutter-pan` in the unfiltered release, whose folders have no split level
(<root>/<collector>/...; `layout='unfiltered'` assigns collectors to splits). An annotation file maps each frame's
file name to its labels: `object_bounding_box` (clutter frames; {x, y, w, h} in frame pixels,
null when the object is out of view) and the seven quality flags of clean frames
(QUALITY_ISSUES, e.g. `object_not_present_issue`).

`scan(root)` walks the folders once and lists every collector, object, video and frame path;
no image is opened. Frames are decoded (in parallel, by TensorFlow) only when a task samples
them (`decode_frames`), resized to the requested side S and kept as uint8; the networks see
them in [-1, 1] (lite_tf.episode.to_model_input).

What the scan refuses and what it skips: a frame whose name does not follow the convention, or
names another collector, object or video type than its folders, is an error naming the path;
files that are not JPEG/PNG frames (`.DS_Store`, `Thumbs.db`, notes) are skipped, and so are
empty video folders; both are counted in `OrbitDataset.skipped` and reported by `summary()`.
A missing annotation file is an error only where annotations are needed (frame filters).
"""

import collections
import dataclasses
import json
import os
import re

import numpy as np
import tensorflow as tf

SPLITS = ('train', 'validation', 'test')
VIDEO_TYPES = ('clean', 'clutter', 'clutter-pan')
QUALITY_ISSUES = ('object_not_present_issue', 'framing_issue', 'viewpoint_issue',
                  'blur_issue', 'occlusion_issue', 'overexposed_issue', 'underexposed_issue')
# The benchmark's user split (ORBIT's released dataset): collectors per split, and the
# validation and test collectors (microsoft/ORBIT-Dataset data/orbit_benchmark_mode_splits.json).
BENCHMARK_COLLECTORS = {'train': 44, 'validation': 6, 'test': 17}
BENCHMARK_SPLIT_USERS = {
    'validation': ('P867', 'P579', 'P235', 'P778', 'P189', 'P194'),
    'test': ('P198', 'P953', 'P233', 'P204', 'P999', 'P452', 'P900', 'P753', 'P271', 'P554',
             'P642', 'P485', 'P421', 'P609', 'P901', 'P177', 'P455'),
}
LAYOUTS = ('benchmark', 'unfiltered')
FRAME_EXTENSIONS = ('.jpg', '.jpeg', '.png')
_FRAME_NAME = re.compile(r'^(?P<collector>P\d+)--(?P<object>.+?)--(?P<type>clean|clutter-pan|'
                         r'clutter)--(?P<video_id>.+)-(?P<index>\d{5})'
                         r'\.(?:jpe?g|png)$', re.IGNORECASE)


class OrbitLayoutError(ValueError):
  """The folder does not follow ORBIT's layout; the message names the path."""


@dataclasses.dataclass
class Video:
  """One video: its frames' paths in frame order."""
  split: str
  collector: str
  object: str
  type: str
  name: str
  frames: list

  @property
  def num_frames(self):
    return len(self.frames)

  def annotation_path(self, root):
    return os.path.join(root, 'annotations', self.split, f'{self.name}.json')


@dataclasses.dataclass
class User:
  """A collector: {object name: {video type: [Video]}}, objects in sorted order."""
  collector: str
  split: str
  objects: dict

  @property
  def object_names(self):
    return sorted(self.objects)

  def videos(self, object_name, video_type):
    return self.objects[object_name].get(video_type, [])


def parse_frame_name(path):
  """(collector, object, type, video id, 0-based index) of a frame file; an error naming the
  path if its name does not follow ORBIT's convention."""
  match = _FRAME_NAME.match(os.path.basename(path))
  if not match:
    raise OrbitLayoutError(
        f'{path}: frame name does not follow ORBIT\'s convention '
        '<collector>--<object>--<clean|clutter|clutter-pan>--<video id>-<5-digit index>.jpg '
        '(e.g. P177--bag--clutter--abc123-00001.jpg)')
  return (match['collector'], match['object'], match['type'].lower(), match['video_id'],
          int(match['index']) - 1)


class OrbitDataset:
  """The scanned dataset: `users[split]` lists User records, collectors in sorted order."""

  def __init__(self, root, splits=SPLITS, video_types=('clean', 'clutter'), layout='benchmark',
               split_users=None):
    """Args:
      root: the dataset folder.
      splits: which splits to scan.
      video_types: which video folders to read ('clutter-pan': the unfiltered release's).
      layout: 'benchmark' (<root>/<split>/<collector>/...) or 'unfiltered' (the unfiltered
        release: <root>/<collector>/..., no split level; collectors are assigned to splits by
        split_users).
      split_users: unfiltered layout: {split: [collector ids]}, or the path of a JSON file
        holding it (as ORBIT's data/orbit_benchmark_mode_splits.json); default: the
        benchmark's validation and test collectors (BENCHMARK_SPLIT_USERS), every other
        collector in train.
    """
    if not os.path.isdir(root):
      raise OrbitLayoutError(f'ORBIT root {root!r} is not a directory')
    if layout not in LAYOUTS:
      raise ValueError(f'ORBIT layout must be one of {list(LAYOUTS)}; got {layout!r}')
    self.root = root
    self.layout = layout
    self.users = {}
    self.skipped = collections.Counter()
    self.skipped_paths = collections.defaultdict(list)
    assignment = _split_assignment(root, split_users) if layout == 'unfiltered' else None
    for split in splits:
      folder = root if layout == 'unfiltered' else os.path.join(root, split)
      if not os.path.isdir(folder):
        raise OrbitLayoutError(f'{folder}: missing split folder (expected {root}/'
                               f'{{{",".join(SPLITS)}}}/<collector>/<object>/'
                               '{clean,clutter}/<video>/<frame>.jpg)')
      collectors = sorted(c for c in _subfolders(folder, self) if c != 'annotations')
      if assignment is not None:
        collectors = [c for c in collectors if assignment.get(c, 'train') == split]
      self.users[split] = [self._scan_user(split, os.path.join(folder, c), c, video_types)
                           for c in collectors]
    collectors = collections.defaultdict(list)
    for split, users in self.users.items():
      for user in users:
        collectors[user.collector].append(split)
    mixed = {c: s for c, s in collectors.items() if len(s) > 1}
    if mixed:
      raise OrbitLayoutError(f'{root}: collectors in more than one split: {mixed}')

  def _skip(self, kind, path):
    self.skipped[kind] += 1
    self.skipped_paths[kind].append(path)

  def _scan_user(self, split, user_dir, collector, video_types):
    objects = {}
    for obj in sorted(_subfolders(user_dir, self)):
      objects[obj] = {}
      for video_type in sorted(_subfolders(os.path.join(user_dir, obj), self)):
        type_dir = os.path.join(user_dir, obj, video_type)
        if video_type not in VIDEO_TYPES:
          raise OrbitLayoutError(f'{type_dir}: unknown video type {video_type!r}; expected '
                                 f'one of {list(VIDEO_TYPES)}')
        if video_type not in video_types:
          continue
        videos = []
        for name in sorted(_subfolders(type_dir, self)):
          video = self._scan_video(split, os.path.join(type_dir, name), collector, obj,
                                   video_type, name)
          if video is not None:
            videos.append(video)
        objects[obj][video_type] = videos
    return User(collector, split, objects)

  def _scan_video(self, split, folder, collector, obj, video_type, name):
    frames = {}
    for file in os.listdir(folder):
      path = os.path.join(folder, file)
      if not file.lower().endswith(FRAME_EXTENSIONS) or not os.path.isfile(path):
        self._skip('non-frame files', path)
        continue
      f_collector, f_object, f_type, _, index = parse_frame_name(path)
      if (f_collector, f_object, f_type) != (collector, obj, video_type):
        raise OrbitLayoutError(
            f'{path}: frame name says collector {f_collector!r}, object {f_object!r}, type '
            f'{f_type!r}, but it is in the folder of {collector!r} / {obj!r} / {video_type!r}')
      if index in frames:
        raise OrbitLayoutError(f'{path}: frame index {index + 1} appears twice in {folder}')
      frames[index] = path
    if not frames:
      self._skip('empty video folders', folder)
      return None
    return Video(split, collector, obj, video_type, name, [frames[i] for i in sorted(frames)])

  def summary(self):
    """Counts per split (users, objects, videos by type, frames) and what was skipped."""
    out = {}
    for split, users in self.users.items():
      counts = collections.Counter()
      for user in users:
        counts['users'] += 1
        for obj in user.objects.values():
          counts['objects'] += 1
          for video_type, videos in obj.items():
            counts[f'{video_type} videos'] += len(videos)
            counts['frames'] += sum(v.num_frames for v in videos)
      out[split] = dict(counts)
    out['skipped'] = dict(self.skipped)
    return out

  def load_annotations(self, video):
    """{frame file name: annotation dict} of a video; an error naming the file if missing."""
    path = video.annotation_path(self.root)
    if not os.path.exists(path):
      raise OrbitLayoutError(f'{path}: annotation file of video {video.name} not found '
                             f'(expected {self.root}/annotations/<split>/<video>.json; or '
                             'turn the frame filters off)')
    try:
      with open(path) as f:
        notes = json.load(f)
    except (OSError, ValueError) as e:
      raise OrbitLayoutError(f'{path}: unreadable annotation file ({e})') from None
    if not isinstance(notes, dict):
      raise OrbitLayoutError(f'{path}: expected a JSON object keyed by frame file name')
    return notes


def _split_assignment(root, split_users):
  """{collector: split} for the unfiltered layout (see OrbitDataset)."""
  if split_users is None:
    split_users = BENCHMARK_SPLIT_USERS
  elif isinstance(split_users, str):
    try:
      with open(split_users) as f:
        split_users = json.load(f)
    except (OSError, ValueError) as e:
      raise OrbitLayoutError(f'{split_users}: unreadable split file ({e})') from None
  if not isinstance(split_users, dict) or set(split_users) - set(SPLITS):
    raise OrbitLayoutError(f'{root}: split_users must map splits {list(SPLITS)} to lists of '
                           f'collector ids; got {split_users!r:.200}')
  assignment = {}
  for split, collectors in split_users.items():
    for collector in collectors:
      if assignment.setdefault(collector, split) != split:
        raise OrbitLayoutError(f'split_users puts collector {collector} in both '
                               f'{assignment[collector]} and {split}')
  return assignment


def _subfolders(path, dataset):
  out = []
  for name in os.listdir(path):
    full = os.path.join(path, name)
    if os.path.isdir(full):
      out.append(name)
    else:
      dataset._skip('non-frame files', full)  # pylint: disable=protected-access
  return out


def decode_frames(paths, image_size, parallel=16):
  """Frames [n, S, S, 3] uint8 from JPEG/PNG paths (a [n] string tensor), decoded and
  resized (antialiased bilinear) in parallel by TensorFlow."""

  def one(path):
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image = tf.image.resize(image, [image_size, image_size], antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

  return tf.map_fn(one, paths, fn_output_signature=tf.TensorSpec(
      [image_size, image_size, 3], tf.uint8), parallel_iterations=parallel)


def decode_frames_numpy(paths, image_size):
  """decode_frames for a Python list of paths, as a numpy array."""
  if not paths:
    return np.zeros([0, image_size, image_size, 3], np.uint8)
  return decode_frames(tf.constant(list(paths)), image_size).numpy()
