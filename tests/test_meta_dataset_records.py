"""Reading records written by Meta-Dataset's own converter (../shared/fixtures/meta_dataset)."""

import io
import json
import os
import shutil

import gin
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from lite_tf.data.meta_dataset import dataset_spec
from lite_tf.data.meta_dataset import records



def test_spec_matches_converter_output(fixture_dir):
  spec = dataset_spec.load(fixture_dir)
  assert isinstance(spec, dataset_spec.DatasetSpec)
  assert spec.name == 'glyphs_dtd' and spec.path == fixture_dir
  assert [len(spec.class_ids(s)) for s in ('train', 'valid', 'test')] == [33, 7, 7]
  assert list(spec.class_ids('valid')) == list(range(33, 40))
  assert all(spec.num_images(c) == 20 for c in range(47))
  splits = json.load(open(os.path.join(fixture_dir, 'glyphs_dtd_splits.json')))
  assert [spec.class_names[c] for c in spec.class_ids('train')] == splits['train']
  assert sorted(spec.class_names[c] for c in spec.class_ids('test')) == sorted(splits['test'])


def test_spec_round_trip_keeps_format(fixture_dir, tmp_path):
  spec = dataset_spec.load(fixture_dir)
  dataset_spec.save(spec, str(tmp_path))
  original = json.load(open(os.path.join(fixture_dir, 'dataset_spec.json')))
  written = json.load(open(tmp_path / 'dataset_spec.json'))
  assert list(written) == list(original)
  assert {k: v for k, v in written.items() if k != 'path'} == {
      k: v for k, v in original.items() if k != 'path'}


@pytest.mark.parametrize('class_id', [0, 35, 46])
def test_read_class_shapes_range_labels_and_pixels(fixture_dir, class_id):
  spec = dataset_spec.load(fixture_dir)
  images, labels = records.read_class(spec, class_id, image_size=84)
  assert images.shape == (20, 84, 84, 3) and images.dtype == tf.float32
  assert float(tf.reduce_min(images)) >= -1.0 and float(tf.reduce_max(images)) <= 1.0
  assert set(labels.numpy().tolist()) == {class_id}
  # At the stored size, pixels equal a plain JPEG decode of the record's bytes.
  raw = next(iter(tf.data.TFRecordDataset(spec.class_file(class_id))))
  jpeg = tf.io.parse_single_example(raw, records.FEATURES)['image'].numpy()
  reference = np.asarray(tf.io.decode_jpeg(jpeg, channels=3), np.float32) / 127.5 - 1.0
  np.testing.assert_allclose(images[0].numpy(), reference, atol=1e-6)
  assert np.asarray(Image.open(io.BytesIO(jpeg))).shape == (84, 84, 3)


def _stored_pixels(spec, class_id):
  raws = list(tf.data.TFRecordDataset(spec.class_file(class_id)))
  return [tf.io.decode_image(tf.io.parse_single_example(r, records.FEATURES)['image'],
                             channels=3) for r in raws]


@pytest.mark.parametrize('size', [32, 126])
def test_resize_to_other_sizes_matches_meta_datasets_v1_align_corners_op(fixture_dir, size):
  """Meta-Dataset's decoder: tf.compat.v1 resize_images(BILINEAR, align_corners=True), then
  2 * (x / 255 - 0.5). The TF2 half-pixel resize stays available through gin."""
  spec = dataset_spec.load(fixture_dir)
  stored = _stored_pixels(spec, 3)
  v1 = [tf.compat.v1.image.resize(image, [size, size], method=tf.image.ResizeMethod.BILINEAR,
                                  align_corners=True) for image in stored]
  expected = np.stack([2 * (np.asarray(x, np.float32) / 255.0 - 0.5) for x in v1])
  images, _ = records.read_class(spec, 3, image_size=size)
  assert images.shape == (20, size, size, 3)
  np.testing.assert_allclose(images.numpy(), expected, atol=1e-6)

  gin.bind_parameter('decode_example.resize_method', 'half_pixel')
  half, _ = records.read_class(spec, 3, image_size=size)
  half_expected = np.stack([np.asarray(tf.image.resize(tf.cast(x, tf.float32), [size, size]))
                            for x in stored]) / 127.5 - 1.0
  np.testing.assert_allclose(half.numpy(), half_expected, atol=1e-5)
  assert np.abs(half.numpy() - expected).max() > 0.05  # the two conventions do differ here


def test_align_corners_resize_by_hand():
  """3x3 -> 5x5: output pixel (i, j) reads input coordinate (i / 2, j / 2), so corners and
  every other pixel keep input values, the rest are means of neighbours."""
  image = np.arange(9, dtype=np.float32).reshape(3, 3, 1) * 10
  out = records.resize_bilinear(tf.constant(image), 5).numpy()[..., 0]
  coordinate = np.arange(5) / 2
  lo = np.floor(coordinate).astype(int)
  hi = np.minimum(lo + 1, 2)
  t = coordinate - lo
  rows = image[lo, :, 0] * (1 - t)[:, None] + image[hi, :, 0] * t[:, None]
  expected = rows[:, lo] * (1 - t)[None] + rows[:, hi] * t[None]
  np.testing.assert_allclose(out, expected, atol=1e-5)
  assert out[0, 0] == 0 and out[4, 4] == 80 and out[2, 2] == 40


def test_unknown_resize_method_names_the_binding():
  with pytest.raises(ValueError, match="decode_example.resize_method must be one of"):
    records.resize_bilinear(tf.zeros([4, 4, 3]), 8, 'nearest')


def test_missing_or_garbled_spec(tmp_path):
  with pytest.raises(dataset_spec.DatasetSpecError, match='dataset_spec.json: no such file'):
    dataset_spec.load(str(tmp_path))
  (tmp_path / 'dataset_spec.json').write_text('{"name": "x", ')
  with pytest.raises(dataset_spec.DatasetSpecError, match='dataset_spec.json: not valid JSON'):
    dataset_spec.load(str(tmp_path))
  (tmp_path / 'dataset_spec.json').write_text('{"name": "x", "__class__": "DatasetSpecification"}')
  with pytest.raises(dataset_spec.DatasetSpecError, match='missing fields'):
    dataset_spec.load(str(tmp_path))


def test_unknown_split(fixture_dir):
  with pytest.raises(dataset_spec.DatasetSpecError, match="unknown split 'tset'"):
    dataset_spec.load(fixture_dir).class_ids('tset')


def test_missing_and_corrupt_class_files(fixture_dir, tmp_path):
  copy = tmp_path / 'glyphs'
  shutil.copytree(fixture_dir, copy)
  os.remove(copy / '5.tfrecords')
  data = (copy / '6.tfrecords').read_bytes()
  (copy / '6.tfrecords').write_bytes(data[:len(data) // 2])
  spec = dataset_spec.load(str(copy))
  with pytest.raises(records.RecordsError, match=r'5.tfrecords: missing records file of class 5'):
    records.read_class(spec, 5, 84)
  with pytest.raises(records.RecordsError, match=r'6.tfrecords: corrupt or truncated .* class 6'):
    records.read_class(spec, 6, 84)


def test_bilevel_spec_round_trip(tmp_path):
  spec = dataset_spec.BiLevelDatasetSpec(
      name='omni', superclasses_per_split={'TRAIN': 2, 'VALID': 1, 'TEST': 1},
      classes_per_superclass={0: 3, 1: 2, 2: 4, 3: 1},
      images_per_class={c: 20 for c in range(10)},
      superclass_names={i: f'alphabet{i}' for i in range(4)},
      class_names={c: f'char{c}' for c in range(10)}, path='ignored')
  dataset_spec.save(spec, str(tmp_path))
  loaded = dataset_spec.load(str(tmp_path))
  assert isinstance(loaded, dataset_spec.BiLevelDatasetSpec)
  assert list(loaded.class_ids('train')) == [0, 1, 2, 3, 4]
  assert list(loaded.class_ids('valid')) == [5, 6, 7, 8]
  assert list(loaded.class_ids('test')) == [9]
  assert list(loaded.class_ids_of_superclass(1)) == [3, 4]
