"""A small ORBIT-layout dataset, rendered deterministically: test and demo data, no download.

It has the released dataset's folders, frame names and annotation files
(lite_tf.data.orbit.dataset describes the layout), so the reader, the task samplers, the metrics and
the binaries run on it exactly as on ORBIT:

  <root>/{train,validation,test}/<collector>/<object>/{clean,clutter}/<video>/<frame>.jpg
  <root>/annotations/<split>/<video>.json

Every collector owns 3-6 objects. An object is a coloured shape bearing a glyph (the demo
data's characters) with its own colours; two collectors may both own a "mug", which looks
different for each, as in ORBIT, where objects are personal. Clean videos show the object
alone on a textured background while the camera pans, zooms, rotates, blurs or changes
exposure; clutter videos show it among distractor objects on a busier background, its
bounding box annotated per frame (the distractors are never the collector's own
objects), and with a stretch of frames where it is out of view
(annotated `object_not_present_issue`). Clean frames also get the other quality flags now and
then (blur for the blurred videos, framing when the object is cut by the border, ...).
"""

import base64
import hashlib
import json
import os

import gin
import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFilter

from lite_tf import atomic
from lite_tf.data import glyphs
from lite_tf.data.orbit import dataset as orbit

_FORMAT_VERSION = 4
# Named as ORBIT's collectors name their objects (the release's folder names): spaces,
# hyphens, digits, a leading digit, a dot, upper case, and pairs whose slugs collide
# ('t-shirt' / 't shirt'; never both for one collector, as lite_tf.data.orbit.dataset refuses that).
OBJECT_NAMES = ('my black wallet', 'keys', 'p939411 white cane', 'my sennheiser pxc 350-2',
                '12 measuring cup', 't. v. remote control', 't-shirt', 't shirt', 'iPhone',
                'Mug', 'mug', 'water bottle', 'house-keys', 'glasses case', 'my watch',
                'bag', '2 pound coin', 'hair brush')
SHAPES = ('disc', 'square', 'triangle', 'diamond', 'hexagon', 'star')
MOTIONS = ('pan', 'zoom', 'rotation', 'blur', 'exposure')
QUALITY_ISSUES = ('object_not_present_issue', 'framing_issue', 'viewpoint_issue',
                  'blur_issue', 'occlusion_issue', 'overexposed_issue', 'underexposed_issue')
DEFAULT_COLLECTORS = {'train': 6, 'validation': 2, 'test': 3}
_PATCH = 64


def _polygon(shape, size):
  c, r = size / 2, size * 0.46
  if shape == 'disc':
    return None
  if shape == 'square':
    angles = np.deg2rad([45, 135, 225, 315])
  elif shape == 'triangle':
    angles = np.deg2rad([90, 210, 330])
  elif shape == 'diamond':
    angles = np.deg2rad([0, 90, 180, 270])
  elif shape == 'hexagon':
    angles = np.deg2rad(np.arange(0, 360, 60))
  else:  # star
    angles = np.deg2rad(np.arange(90, 450, 36))
  radii = [r if (shape != 'star' or i % 2 == 0) else r * 0.45 for i in range(len(angles))]
  return [(c + q * np.cos(a), c - q * np.sin(a)) for q, a in zip(radii, angles)]


class _Appearance:
  """What one object looks like: an RGBA patch [64, 64, 4] uint8."""

  def __init__(self, rng, glyph_bitmaps):
    self.shape = SHAPES[rng.randint(len(SHAPES))]
    self.body = tuple(int(v) for v in rng.randint(30, 226, 3))
    self.mark = tuple(int(255 - v) for v in self.body)
    self.glyph = glyph_bitmaps[rng.randint(len(glyph_bitmaps))]

  def patch(self):
    image = Image.new('RGBA', (_PATCH, _PATCH), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    poly = _polygon(self.shape, _PATCH)
    if poly is None:
      draw.ellipse([2, 2, _PATCH - 3, _PATCH - 3], fill=self.body + (255,))
    else:
      draw.polygon(poly, fill=self.body + (255,))
    ink = Image.fromarray((self.glyph * 255).astype(np.uint8)).resize((_PATCH // 2, _PATCH // 2))
    mark = Image.new('RGBA', ink.size, self.mark + (255,))
    image.paste(mark, (_PATCH // 4, _PATCH // 4), ink)
    return image


def _background(rng, size, busy):
  """A textured background [size, size, 3] uint8: smooth colour noise, stripes if busy."""
  coarse = rng.uniform(0, 255, (4, 4, 3)).astype(np.uint8)
  base = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC),
                    np.float32)
  base = 0.5 * base + 0.5 * rng.uniform(60, 200, 3)
  noise = rng.normal(0, 6 if not busy else 14, (size, size, 1))
  if busy:
    period = rng.uniform(6, 14)
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:size, 0:size]
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    base += 25 * stripes[..., None]
  return np.clip(base + noise, 0, 255).astype(np.uint8)


def _place(canvas, patch, centre, scale, angle):
  """Composites the patch scaled (side scale * 64 px), rotated and centred at `centre`;
  returns the visible bounding box (x, y, w, h) in canvas pixels, or None if out of view."""
  side = max(4, int(round(_PATCH * scale)))
  placed = patch.resize((side, side), Image.Resampling.BILINEAR).rotate(
      angle, resample=Image.Resampling.BILINEAR, expand=True)
  x0 = int(round(centre[0] - placed.size[0] / 2))
  y0 = int(round(centre[1] - placed.size[1] / 2))
  canvas.paste(placed, (x0, y0), placed)
  alpha = np.asarray(placed)[..., 3] > 0
  rows, cols = np.nonzero(alpha)
  if rows.size == 0:
    return None
  left, top = max(0, x0 + cols.min()), max(0, y0 + rows.min())
  right = min(canvas.size[0], x0 + cols.max() + 1)
  bottom = min(canvas.size[1], y0 + rows.max() + 1)
  if right <= left or bottom <= top:
    return None
  return [int(left), int(top), int(right - left), int(bottom - top)]


def _clean_frames(rng, appearance, num_frames, size):
  """Frames [size, size, 3] uint8 and their annotations of one clean video."""
  motion = MOTIONS[rng.randint(len(MOTIONS))]
  background = Image.fromarray(_background(rng, size, busy=False))
  patch = appearance.patch()
  start = rng.uniform(0.3, 0.7, 2) * size
  end = rng.uniform(0.3, 0.7, 2) * size
  frames, notes = [], []
  for i in range(num_frames):
    t = i / max(1, num_frames - 1)
    centre, scale = np.array([size / 2, size / 2]), 0.9 * size / _PATCH
    angle, blur, gain = 0.0, 0.0, 1.0
    if motion == 'pan':
      centre = start + t * (end - start)
      centre = centre + (np.sign(end - start) * size * 0.35 * max(0.0, t - 0.8))
    elif motion == 'zoom':
      scale *= 0.5 + 0.9 * t
    elif motion == 'rotation':
      angle = 360.0 * t
    elif motion == 'blur':
      blur = 3.0 * np.sin(np.pi * t)
    else:
      gain = 0.45 + 1.2 * t
    canvas = background.copy()
    box = _place(canvas, patch, centre, scale, angle)
    if blur > 0.2:
      canvas = canvas.filter(ImageFilter.GaussianBlur(float(blur)))
    pixels = np.clip(np.asarray(canvas.convert('RGB'), np.float32) * gain, 0, 255)
    frames.append(pixels.astype(np.uint8))
    cut = box is not None and (box[0] == 0 or box[1] == 0 or box[0] + box[2] == size
                               or box[1] + box[3] == size)
    if box is None:  # as the release: the other six flags are null when nothing is in view
      notes.append(dict({q: None for q in QUALITY_ISSUES}, object_not_present_issue=True))
      continue
    notes.append({
        'object_not_present_issue': box is None,
        'framing_issue': bool(cut),
        'viewpoint_issue': bool(motion == 'rotation' and 0.4 < t < 0.6),
        'blur_issue': bool(blur > 2.0),
        'occlusion_issue': False,
        'overexposed_issue': bool(gain > 1.4),
        'underexposed_issue': bool(gain < 0.6),
    })
  return frames, notes


def _clutter_frames(rng, appearance, distractors, num_frames, size):
  """Frames and per-frame bounding boxes (None when out of view) of one clutter video."""
  background = _background(rng, size, busy=True)
  patch = appearance.patch()
  layout = [(d.patch(), rng.uniform(0.1, 0.9, 2) * size, rng.uniform(0.25, 0.4) * size / _PATCH,
             rng.uniform(0, 360)) for d in distractors]
  home = rng.uniform(0.3, 0.7, 2) * size
  drift = rng.uniform(-0.15, 0.15, 2) * size
  gone = rng.randint(num_frames // 3, num_frames - num_frames // 4)
  gone = range(gone, gone + max(1, num_frames // 6))
  scale = rng.uniform(0.5, 0.7) * size / _PATCH
  frames, boxes = [], []
  for i in range(num_frames):
    t = i / max(1, num_frames - 1)
    pan = drift * t
    canvas = Image.fromarray(background)
    for d_patch, d_centre, d_scale, d_angle in layout:
      _place(canvas, d_patch, d_centre + pan, d_scale, d_angle)
    centre = home + pan
    if i in gone:
      centre = centre + np.array([3.0 * size, 0.0])  # the camera looks away
    boxes.append(_place(canvas, patch, centre, scale, 20.0 * np.sin(2 * np.pi * t)))
    frames.append(np.asarray(canvas.convert('RGB')))
  return frames, boxes


def _glyph_bitmaps():
  from matplotlib import ft2font  # pylint: disable=g-import-not-at-top
  font = ft2font.FT2Font(os.path.join(glyphs._font_dir(), 'DejaVuSans-Bold.ttf'))  # pylint: disable=protected-access
  chars = ''.join(glyphs.ALPHABETS.values())
  return [b for b in (glyphs._render_glyph(font, c) for c in chars) if b is not None]  # pylint: disable=protected-access


def video_name(collector, obj, video_type, video_id):
  """ORBIT's video folder name: `P131--my-black-wallet--clean--<video id>` (the object's
  slug: spaces replaced by hyphens)."""
  return f'{collector}--{orbit.slug(obj)}--{video_type}--{video_id}'


def frame_name(collector, obj, video_type, video_id, index):
  """ORBIT's frame file name: `<video name>-00001.jpg` (1-based index)."""
  return f'{video_name(collector, obj, video_type, video_id)}-{index + 1:05d}.jpg'


def video_id(key):
  """A YouTube-style 43-character id (base64url: letters, digits, '-' and '_', as the
  release's ids, which may hold '--' and start with '-' or '_')."""
  digest = hashlib.sha256(key.encode()).digest()
  return base64.urlsafe_b64encode(digest).decode()[:43]


def _pick_names(rng, count):
  """count object names for one collector, never two whose slugs collide."""
  order = [str(OBJECT_NAMES[i]) for i in rng.permutation(len(OBJECT_NAMES))]
  chosen = []
  for name in order:
    if len(chosen) == count:
      break
    if all(orbit.slug(name) != orbit.slug(c) for c in chosen):
      chosen.append(name)
  return chosen


def _to_original_pixels(box, size):
  """A box in frame pixels -> the release's 1080x1080 coordinates."""
  scale = orbit.ORIGINAL_FRAME_SIZE / size
  x, y = (min(orbit.ORIGINAL_FRAME_SIZE - 1, int(round(v * scale))) for v in box[:2])
  w, h = (max(1, min(orbit.ORIGINAL_FRAME_SIZE, int(round(v * scale)))) for v in box[2:])
  return {'x': x, 'y': y, 'w': w, 'h': h}


def generate(root, collectors=None, frame_size=96, frames_per_video=(18, 30),
             clutter_frames=(40, 80), clean_videos=(5, 7), clutter_videos=2, objects=(3, 6),
             seed=0, layout='benchmark', clutter_pan_videos=0):
  """Writes the dataset under `root` (which must not exist) and returns a summary dict.

  Args:
    collectors: {split: number of collectors}; default DEFAULT_COLLECTORS. Collector ids are
      ORBIT-style 'P<number>', unique across splits.
    frame_size: side of the square frames (ORBIT's are 1080; readers resize to any S).
    frames_per_video, clutter_frames, clean_videos, objects: inclusive (low, high) ranges
      drawn per clean video, clutter video, object and collector; clutter_videos: per object.
      Clutter videos lose about a sixth of their frames to the out-of-view stretch, so with
      the default range some keep fewer than the challenge's 50 valid frames and are dropped
      by it, as short videos are in ORBIT.
    layout: 'benchmark' (<root>/<split>/<collector>/...) or 'unfiltered' (the unfiltered
      release: <root>/<collector>/..., no split level; the summary says which collector was
      generated for which split).
    clutter_pan_videos: 'clutter-pan' videos per object (the unfiltered release has them).
  """
  collectors = dict(DEFAULT_COLLECTORS if collectors is None else collectors)
  if layout not in ('benchmark', 'unfiltered'):
    raise ValueError(f"layout must be 'benchmark' or 'unfiltered'; got {layout!r}")
  rng = np.random.RandomState(seed)
  bitmaps = _glyph_bitmaps()
  summary = {'splits': {}, 'frames': 0, 'videos': 0}
  with atomic.atomic_folder(root) as tmp:
    number = 100
    for split, count in collectors.items():
      users = {}
      for _ in range(count):
        number += int(rng.randint(1, 9))
        collector = f'P{number}'
        names = _pick_names(rng, rng.randint(objects[0], objects[1] + 1))
        looks = {n: _Appearance(rng, bitmaps) for n in names}
        users[collector] = {}
        for name, look in looks.items():
          users[collector][name] = {'clean': [], 'clutter': [], 'clutter-pan': []}
          kinds = ([('clean', None)] * rng.randint(clean_videos[0], clean_videos[1] + 1)
                   + [('clutter', None)] * clutter_videos
                   + [('clutter-pan', None)] * clutter_pan_videos)
          for kind, _ in kinds:
            vid = video_id(f'{seed}/{collector}/{name}/{kind}/'
                           f'{len(users[collector][name][kind])}')
            video = video_name(collector, name, kind, vid)
            low, high = frames_per_video if kind == 'clean' else clutter_frames
            n = rng.randint(low, high + 1)
            if kind == 'clean':
              frames, notes = _clean_frames(rng, look, n, frame_size)
            else:
              # Distractors are things that are not the collector's own objects, so the
              # object a clutter video is labelled with is the only one of them in view.
              distractors = [_Appearance(rng, bitmaps) for _ in range(3)]
              frames, boxes = _clutter_frames(rng, look, distractors, n, frame_size)
            top = tmp if layout == 'unfiltered' else os.path.join(tmp, split)
            folder = os.path.join(top, collector, name, kind, video)
            os.makedirs(folder)
            annotation = {}
            for i, frame in enumerate(frames):
              file = frame_name(collector, name, kind, vid, i)
              Image.fromarray(frame).save(os.path.join(folder, file), quality=92)
              if kind == 'clean':
                annotation[file] = dict(notes[i], object_bounding_box=None)
              else:
                box = boxes[i]
                annotation[file] = {
                    'object_bounding_box': (None if box is None else
                                            _to_original_pixels(box, frame_size)),
                    'object_not_present_issue': box is None}
            notes_dir = os.path.join(tmp, 'annotations', split)
            os.makedirs(notes_dir, exist_ok=True)
            with open(os.path.join(notes_dir, f'{video}.json'), 'w') as f:
              json.dump(annotation, f, indent=1, sort_keys=True)
            users[collector][name][kind].append(video)
            summary['frames'] += len(frames)
            summary['videos'] += 1
      summary['splits'][split] = users
  return summary


@gin.configurable('orbit_demo_root')
def default_root(cache_dir=None, **kwargs):
  """The cached dataset's folder for these generate() arguments (generated if missing):
  `orbit_episodes.root = @orbit_demo_root()` in gin (cache: $LITE_TF_CACHE or
  ~/.cache/lite_tf, like the glyph demo data)."""
  cache_dir = cache_dir or glyphs.default_cache_dir()
  key = hashlib.sha1(repr((_FORMAT_VERSION, sorted(kwargs.items()))).encode()).hexdigest()
  root = os.path.join(cache_dir, f'orbit_synthetic_{key[:10]}')
  if not os.path.isdir(root):
    generate(root, **kwargs)
  return root
