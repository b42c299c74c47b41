"""The built-in glyph demo data."""

import os

import numpy as np

from lite_tf.data import glyphs
from lite_tf.data import in_memory


def test_render_is_deterministic_and_well_formed(glyph_cache):
  a = glyphs.load(size=28, cache_dir=glyph_cache)
  b = glyphs.render(size=28)
  np.testing.assert_array_equal(a.images, b.images)
  assert a.images.dtype == np.uint8 and a.images.shape[1:] == (28, 28, 3)
  counts = np.bincount(a.labels)
  assert counts.min() >= 20, 'every class has at least 20 examples'
  assert len(set(a.class_names)) == len(a.class_names)
  # Images of one class differ (fonts, jitter) and are not blank.
  first = a.images[a.labels == 0]
  assert np.std(first.astype(np.float32), axis=0).mean() > 5
  assert all(img.min() < 100 for img in a.images[:50])


def test_cache_is_written_once(glyph_cache):
  glyphs.load(size=28, cache_dir=glyph_cache)
  # Other tests share the cache at other sizes (glyphs_s16_*.npz): one file per size.
  files = [f for f in os.listdir(glyph_cache) if f.startswith('glyphs_s28_') and f.endswith('.npz')]
  assert len(files) == 1 and not [f for f in os.listdir(glyph_cache) if f.startswith('.')]


def test_splits_hold_disjoint_alphabets(glyph_cache):
  data = glyphs.load(size=28, cache_dir=glyph_cache)
  splits = {s: set(data.split_classes(s)) for s in ('train', 'valid', 'test')}
  assert not splits['train'] & splits['test'] and not splits['train'] & splits['valid']
  alphabets = {s: {data.class_alphabets[c] for c in cs} for s, cs in splits.items()}
  assert not alphabets['train'] & alphabets['test']
  assert len(splits['test']) >= 5 and len(splits['valid']) >= 5


def test_episode_sampler_shapes_and_determinism(glyph_cache):
  data = glyphs.load(size=28, cache_dir=glyph_cache)
  sampler = in_memory.EpisodeSampler(data.images_by_class('test'), way=5, shot=2, query_shot=3,
                                     seed=4)
  e = sampler.episode(7)
  assert e['support_images'].shape == (10, 28, 28, 3) and e['query_images'].shape == (15, 28,
                                                                                          28, 3)
  assert e['support_images'].min() >= -1 and e['support_images'].max() <= 1
  assert sorted(set(e['support_labels'])) == list(range(5))
  np.testing.assert_array_equal(e['query_images'], sampler.episode(7)['query_images'])
  assert not np.array_equal(e['query_images'], sampler.episode(8)['query_images'])
  assert set(e['support_class_ids']) <= set(data.split_classes('test'))
