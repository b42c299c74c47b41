"""dataset_spec.json values refused by field: negative image counts, split counts that do not
add up to the classes named."""

import pytest

from lite_tf.data.meta_dataset import dataset_spec


def _flat(**changes):
  spec = {'__class__': 'DatasetSpecification', 'name': 'toy',
          'classes_per_split': {'TRAIN': 2, 'VALID': 1, 'TEST': 1},
          'images_per_class': {'0': 5, '1': 5, '2': 5, '3': 5},
          'class_names': {'0': 'a', '1': 'b', '2': 'c', '3': 'd'}, 'path': '/x',
          'file_pattern': '{}.tfrecords'}
  spec.update(changes)
  return spec


def test_a_valid_spec_reads():
  spec = dataset_spec.from_dict(_flat(), '/x', 'spec.json')
  assert spec.classes_per_split['TRAIN'] == 2


@pytest.mark.parametrize('changes,message', [
    ({'images_per_class': {'0': 5, '1': -3, '2': 5, '3': 5}},
     r"spec.json: images_per_class\[1\] must be a non-negative integer; got -3"),
    ({'classes_per_split': {'TRAIN': 3, 'VALID': 1, 'TEST': 1}},
     r"spec.json: classes_per_split adds up to 5 .* but the spec has 4 classes \(class_names\)"),
    ({'classes_per_split': {'TRAIN': 2, 'VALID': -1, 'TEST': 3}},
     r"spec.json: classes_per_split\['VALID'\] must be a non-negative integer; got -1"),
])
def test_bad_values_are_named(changes, message):
  with pytest.raises(dataset_spec.DatasetSpecError, match=message):
    dataset_spec.from_dict(_flat(**changes), '/x', 'spec.json')


def test_more_ways_than_classes_is_refused_by_name():
  from lite_tf.data.meta_dataset import sampling  # pylint: disable=g-import-not-at-top
  spec = dataset_spec.from_dict(_flat(classes_per_split={'TRAIN': 2, 'VALID': 1, 'TEST': 1}),
                                '/x', 'spec.json')
  config = sampling.EpisodeDescriptionConfig(num_ways=30, min_ways=2)
  with pytest.raises(ValueError, match="EpisodeDescriptionConfig.num_ways=30 but split 'train' "
                     "of dataset 'toy' has only 2 classes"):
    sampling.EpisodeDescriptionSampler(spec, 'train', config)
  with pytest.raises(ValueError, match='EpisodeDescriptionConfig.num_ways must be None'):
    sampling.EpisodeDescriptionConfig(num_ways=1)
