"""ORBIT (Massiceti et al., ICCV 2021): the released folder layout, read lazily.

  <root>/{train,validation,test}/<collector>/<object>/{clean,clutter}/<video>/<frame>.jpg
  <root>/annotations/<split>/<video>.json      (optional)

Names are the release's: an object folder is the collector's own label, spaces and all
(`my black wallet`, `12 measuring cup`, `t. v. remote control`), and that folder name is the
object's name and label everywhere. Video folders and frame files carry its slug, the name
with every ' ' replaced by '-': video `P131--my-black-wallet--clean--<video id>`, frame
`<video>-00001.jpg` (1-based 5-digit index). Video ids are YouTube-style strings that may hold
'-', '--' or '---' and start with '-' or '_', so a name is split as `name.split('--', 3)`
(collector, object slug, type, id and index), and a frame is checked against its folders by
the slug, never by rebuilding a name from it (`t-shirt` and `t shirt` share a slug). An
object is identified by (collector, folder); a user's objects, sorted in Python string order
of the folder names (' ' < '-' < digits < upper case < lower case, as ORBIT sorts them), are
its classes in that order. `<type>` is `clean`, `clutter`, or `clutter-pan` in the unfiltered
release, whose folders have no split level (<root>/<collector>/...; `layout='unfiltered'`
assigns collectors to splits).

An annotation file maps each frame's file name to its labels, as ORBIT's README describes
them: clutter frames have `object_bounding_box` ({x, y, w, h} in the original 1080x1080
frame's pixels, null when the object is out of view; `scale_box` maps it to a frame of side S
as ORBIT's loader does) and `object_not_present_issue`; clean frames have the seven quality
flags (QUALITY_ISSUES), the six besides `object_not_present_issue` null when the object is
not in view.

`scan(root)` walks the folders once and lists every collector, object, video and frame path;
no image is opened. Frames are decoded (in parallel, by TensorFlow) only when a task samples
them (`decode_frames`), resized to the requested side S and kept as uint8; the networks see
them in [-1, 1] (lite_tf.episode.to_model_input).

What the scan refuses and what it skips: a frame or video whose name does not follow the
convention, or whose collector, object slug, type or video differs from its folders, is an
error naming the path; so are two object folders of one collector with the same slug (the
release's names could not tell them apart). Files that are not JPEG/PNG frames (`.DS_Store`,
`Thumbs.db`, notes) are skipped, and so are empty video folders; both are counted in
`OrbitDataset.skipped` and reported by `summary()`. A missing annotation file is an error only
where annotations are needed (frame filters, annotations_to_load).
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
# The original frames' side: annotation boxes are in its pixels.
ORIGINAL_FRAME_SIZE = 1080
_FRAME_SUFFIX = re.compile(r'^(?P<video>.+)-(?P<index>\d{5})\.(?:jpe?g|png)$', re.IGNORECASE)
_EXAMPLE = 'P131--my-black-wallet--clutter--Zj_1Hv-ckB-00001.jpg'


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


def slug(name):
  """The form of an object name in video and frame names: every ' ' replaced by '-'."""
  return name.replace(' ', '-')


def parse_video_name(name, path=None):
  """(collector, object slug, type, video id) of a video folder name
  `<collector>--<object slug>--<type>--<video id>`, split as `name.split('--', 3)`; an error
  naming the path if it does not follow ORBIT's convention."""
  parts = name.split('--', 3)
  if len(parts) != 4 or not all(parts) or parts[2].lower() not in VIDEO_TYPES:
    raise OrbitLayoutError(
        f'{path or name}: name does not follow ORBIT\'s convention '
        '<collector>--<object slug>--<clean|clutter|clutter-pan>--<video id> '
        f'(e.g. {_EXAMPLE.rsplit("-", 1)[0]})')
  return parts[0], parts[1], parts[2].lower(), parts[3]


def parse_frame_name(path):
  """(collector, object slug, type, video id, 0-based index) of a frame file
  `<video>-<5-digit index>.jpg`; an error naming the path if its name does not follow
  ORBIT's convention."""
  match = _FRAME_SUFFIX.match(os.path.basename(path))
  if not match:
    raise OrbitLayoutError(
        f'{path}: frame name does not follow ORBIT\'s convention '
        '<collector>--<object slug>--<clean|clutter|clutter-pan>--<video id>-<5-digit index>.jpg '
        f'(e.g. {_EXAMPLE})')
  return parse_video_name(match['video'], path) + (int(match['index']) - 1,)


def scale_boxes(boxes, frame_size, original_size=ORIGINAL_FRAME_SIZE):
  """Annotation boxes [..., 4] (x, y, w, h in original-frame pixels; NaN rows: no box) in a
  frame of side frame_size, as ORBIT's loader computes them: each value / original_size *
  frame_size in float32, truncated toward zero (torch's Tensor.int()), then x, y clamped to
  [0, frame_size - 1] and w, h to [1, frame_size]. NaN rows stay NaN; float32 out."""
  boxes = np.asarray(boxes, np.float32)
  with np.errstate(invalid='ignore'):
    scaled = np.trunc(boxes / np.float32(original_size) * np.float32(frame_size))
    low = np.array([0, 0, 1, 1], np.float32)
    high = np.array([frame_size - 1, frame_size - 1, frame_size, frame_size], np.float32)
    return np.where(np.isnan(scaled), np.nan, np.clip(scaled, low, high)).astype(np.float32)


def scale_box(box, frame_size, original_size=ORIGINAL_FRAME_SIZE):
  """One annotation box {x, y, w, h} (or None, object out of view) as scale_boxes: [x, y, w, h]
  ints, or None."""
  if box is None:
    return None
  values = scale_boxes([box[k] for k in ('x', 'y', 'w', 'h')], frame_size, original_size)
  return [int(v) for v in values]


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
    objects, slugs = {}, {}
    for obj in sorted(_subfolders(user_dir, self)):
      twin = slugs.setdefault(slug(obj), obj)
      if twin != obj:
        raise OrbitLayoutError(
            f'{os.path.join(user_dir, twin)} and {os.path.join(user_dir, obj)}: two objects of '
            f'{collector} whose names differ only in spaces and hyphens; ORBIT\'s video and '
            f'frame names (slug {slug(obj)!r}) cannot tell them apart: rename one folder')
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
    v_collector, v_slug, v_type, _ = parse_video_name(name, folder)
    if (v_collector, v_slug, v_type) != (collector, slug(obj), video_type):
      raise OrbitLayoutError(
          f'{folder}: video name says collector {v_collector!r}, object {v_slug!r}, type '
          f'{v_type!r}, but it is in the folder of {collector!r} / {obj!r} (slug '
          f'{slug(obj)!r}) / {video_type!r}')
    frames = {}
    for file in os.listdir(folder):
      path = os.path.join(folder, file)
      if not file.lower().endswith(FRAME_EXTENSIONS) or not os.path.isfile(path):
        self._skip('non-frame files', path)
        continue
      match = _FRAME_SUFFIX.match(file)
      if not match or match['video'] != name:
        parse_frame_name(path)  # names the convention if the name breaks it
        raise OrbitLayoutError(
            f'{path}: frame name should be {name}-<5-digit index>{os.path.splitext(file)[1]} '
            f'in video folder {folder}')
      index = int(match['index']) - 1
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
