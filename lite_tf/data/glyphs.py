"""Built-in demo data: an Omniglot-like glyph dataset rendered from fonts that ship with matplotlib.

Classes are characters, alphabets are scripts, and the examples of a class are that character
drawn in each available font (DejaVu Sans / Sans Mono / Serif and STIX General, four styles
each) with small random affine jitter and colour tint. Rendering is deterministic (fixed seed)
and needs no download; the result is cached as a .npz file.

Splits are by alphabet, as in Omniglot: held-out classes come from scripts never seen in
meta-training.
"""

import dataclasses
import hashlib
import os

import numpy as np
from PIL import Image

from lite_tf import atomic

# Characters chosen so that no two classes are the same shape (Latin 'o' vs 'O', Greek 'Γ' vs
# Cyrillic 'Г', digit '0' vs 'O' ...), since all glyphs are rescaled to fill the image.
ALPHABETS = {
    'latin_upper': 'ABCDEFGHIJKLMNOPQRSTUVWXYZ',
    'latin_lower': 'abdefghijkmnpqrtuy',
    'digits': '23456789',
    'cyrillic_upper': 'БДЖИЙЛЦЧШЩЪЫЭЮЯ',
    'greek_upper': 'ΔΘΛΞΠΣΦΨΩ',
    'greek_lower': 'αβγδεζηθκλμξπρστφχψω',
}
SPLITS = {
    'train': ('latin_upper', 'latin_lower', 'digits', 'cyrillic_upper'),
    'valid': ('greek_upper',),
    'test': ('greek_lower',),
}
FONT_FILES = (
    'DejaVuSans.ttf', 'DejaVuSans-Bold.ttf', 'DejaVuSans-Oblique.ttf',
    'DejaVuSans-BoldOblique.ttf', 'DejaVuSansMono.ttf', 'DejaVuSansMono-Bold.ttf',
    'DejaVuSansMono-Oblique.ttf', 'DejaVuSansMono-BoldOblique.ttf', 'DejaVuSerif.ttf',
    'DejaVuSerif-Bold.ttf', 'DejaVuSerif-Italic.ttf', 'DejaVuSerif-BoldItalic.ttf',
    'STIXGeneral.ttf', 'STIXGeneralBol.ttf', 'STIXGeneralItalic.ttf', 'STIXGeneralBolIta.ttf',
)
_FORMAT_VERSION = 1
_RENDER_SIZE = 64


@dataclasses.dataclass
class GlyphDataset:
  """images: [num_images, size, size, 3] uint8; labels: [num_images] class index;
  class_names[c]: the character; class_alphabets[c]: its script."""
  images: np.ndarray
  labels: np.ndarray
  class_names: list
  class_alphabets: list

  def split_classes(self, split):
    """Class indices of a split ('train', 'valid' or 'test')."""
    if split not in SPLITS:
      raise ValueError(f'unknown split {split!r}; expected one of {sorted(SPLITS)}')
    return [c for c, a in enumerate(self.class_alphabets) if a in SPLITS[split]]

  def images_by_class(self, split):
    """{class index: [num, size, size, 3] uint8} for the classes of a split."""
    return {c: self.images[self.labels == c] for c in self.split_classes(split)}


def _font_dir():
  import matplotlib  # pylint: disable=g-import-not-at-top
  return os.path.join(os.path.dirname(matplotlib.__file__), 'mpl-data', 'fonts', 'ttf')


def _render_glyph(font, char):
  """Anti-aliased coverage bitmap [h, w] float in [0, 1], cropped to the ink."""
  font.set_size(_RENDER_SIZE, 72)
  font.set_text(char, 0.0)
  font.draw_glyphs_to_bitmap(antialiased=True)
  bitmap = np.asarray(font.get_image(), np.float32) / 255.0
  rows, cols = np.nonzero(bitmap > 0.05)
  if rows.size == 0:
    return None
  return bitmap[rows.min():rows.max() + 1, cols.min():cols.max() + 1]


def _jitter(bitmap, size, rng):
  """Places the glyph in a size x size image with random scale, rotation and shift."""
  canvas = 2 * _RENDER_SIZE
  h, w = bitmap.shape
  scale = rng.uniform(0.65, 0.85) * canvas / max(h, w)
  angle = np.deg2rad(rng.uniform(-10.0, 10.0))
  shift = rng.uniform(-0.06, 0.06, size=2) * canvas
  # Inverse map from output pixel (x, y) to glyph pixel, as PIL's AFFINE transform expects.
  cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
  cx, cy = canvas / 2 + shift[0], canvas / 2 + shift[1]
  a, b = cos, sin
  d, e = -sin, cos
  c = w / 2 - a * cx - b * cy
  f = h / 2 - d * cx - e * cy
  glyph = Image.fromarray((bitmap * 255).astype(np.uint8))
  placed = glyph.transform((canvas, canvas), Image.Transform.AFFINE, (a, b, c, d, e, f),
                           resample=Image.Resampling.BILINEAR)
  placed = placed.resize((size, size), Image.Resampling.BOX)
  return np.asarray(placed, np.float32) / 255.0


def _fonts():
  from matplotlib import ft2font  # pylint: disable=g-import-not-at-top
  return [ft2font.FT2Font(os.path.join(_font_dir(), name)) for name in FONT_FILES]


def _char_images(fonts, char, size, jitters_per_font, rng):
  """The images [size, size, 3] uint8 of one character: each font that has it, jittered and
  tinted `jitters_per_font` times."""
  images = []
  for font in fonts:
    if font.get_char_index(ord(char)) == 0:
      continue  # the font lacks this character
    bitmap = _render_glyph(font, char)
    if bitmap is None:
      continue
    for _ in range(jitters_per_font):
      ink = _jitter(bitmap, size, rng)[..., None]
      background = rng.uniform(0.75, 1.0, size=3)
      foreground = rng.uniform(0.0, 0.35, size=3)
      rgb = background * (1.0 - ink) + foreground * ink
      images.append(np.round(rgb * 255).astype(np.uint8))
  return images


def render(size=28, seed=0, jitters_per_font=2):
  """Renders the dataset; returns a GlyphDataset with images [num, size, size, 3] uint8."""
  rng = np.random.RandomState(seed)
  fonts = _fonts()
  images, labels, class_names, class_alphabets = [], [], [], []
  for alphabet, chars in ALPHABETS.items():
    for char in chars:
      label = len(class_names)
      class_names.append(char)
      class_alphabets.append(alphabet)
      drawn = _char_images(fonts, char, size, jitters_per_font, rng)
      images += drawn
      labels += [label] * len(drawn)
  return GlyphDataset(np.stack(images), np.asarray(labels, np.int32), class_names,
                      class_alphabets)


def iter_char_images(chars, size, jitters_per_font, seed=0):
  """Yields (char, images [k, size, size, 3] uint8) for each of `chars`, one character at a
  time (large images or many jitters need not all be in memory): k is up to
  len(FONT_FILES) * jitters_per_font, fewer where fonts lack the character."""
  rng = np.random.RandomState(seed)
  fonts = _fonts()
  for char in chars:
    yield char, np.stack(_char_images(fonts, char, size, jitters_per_font, rng))


def default_cache_dir():
  return os.environ.get('LITE_TF_CACHE', os.path.join(os.path.expanduser('~'), '.cache',
                                                      'lite_tf'))


def load(size=28, cache_dir=None, seed=0):
  """Loads the glyph dataset from the cache, rendering (and caching atomically) if needed."""
  cache_dir = cache_dir or default_cache_dir()
  key = hashlib.sha1(repr((_FORMAT_VERSION, ALPHABETS, FONT_FILES, seed)).encode()).hexdigest()
  path = os.path.join(cache_dir, f'glyphs_s{size}_{key[:10]}.npz')
  if os.path.exists(path):
    with np.load(path, allow_pickle=False) as f:
      return GlyphDataset(f['images'], f['labels'], [str(c) for c in f['class_names']],
                          [str(a) for a in f['class_alphabets']])
  dataset = render(size=size, seed=seed)
  with atomic.atomic_path(path, suffix='.npz') as tmp:
    np.savez(tmp, images=dataset.images, labels=dataset.labels,
             class_names=np.asarray(dataset.class_names),
             class_alphabets=np.asarray(dataset.class_alphabets))
  return dataset
