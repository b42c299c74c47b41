"""Personalising from a user's object videos, and causal streaming of a query video."""

import os

import keras
import numpy as np
import pytest

from lite_tf import personalize
from lite_tf.data.orbit import dataset as orbit
from lite_tf.data.orbit import synthetic as orbit_synthetic
from lite_tf.learners.protonets import ProtoNets


@pytest.fixture(scope='module')
def user_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('orbit_personalize') / 'orbit')
  orbit_synthetic.generate(root, collectors={'train': 1, 'validation': 1, 'test': 1},
                           frame_size=32, frames_per_video=(9, 12), clutter_frames=(10, 12),
                           clean_videos=(3, 3), objects=(3, 3), seed=1)
  test = os.path.join(root, 'test')
  return os.path.join(test, os.listdir(test)[0])


def test_support_from_video_folders_uses_clean_videos_every_kth_frame(user_dir):
  images, labels, names = personalize.read_support_folder(user_dir, 16, frames_every=4,
                                                          max_frames_per_video=2)
  assert names == sorted(os.listdir(user_dir))
  assert any(' ' in n for n in names), names  # the release's folder names are the labels
  for label, name in enumerate(names):
    clean = os.path.join(user_dir, name, 'clean')
    expected = sum(min(2, len(personalize.frame_paths(os.path.join(clean, v))[::4]))
                   for v in os.listdir(clean))
    assert (labels == label).sum() == expected
  assert images.shape[1:] == (16, 16, 3) and images.dtype == np.uint8


def test_video_files_and_empty_videos_are_named(user_dir, tmp_path):
  folder = tmp_path / 'objects'
  (folder / 'my mug').mkdir(parents=True)
  (folder / 'my mug' / 'clip.mp4').write_bytes(b'\0')
  with pytest.raises(ValueError, match='my mug/clip.mp4: video files need a decoder'):
    personalize.read_support_folder(str(folder), 16)
  (folder / 'my mug' / 'clip.mp4').unlink()
  (folder / 'my mug' / 'video1').mkdir()
  with pytest.raises(ValueError, match='video1: a video folder with no frames'):
    personalize.read_support_folder(str(folder), 16)


def test_streaming_is_causal_and_votes_like_orbit(user_dir):
  images, labels, names = personalize.read_support_folder(user_dir, 16)
  keras.utils.set_random_seed(0)
  learner = ProtoNets(backbone='conv4', image_size=16)
  personalize.build(learner, images, labels)
  task = personalize.adapt(learner, images, labels)
  classifier = personalize.AdaptedClassifier(learner, task, names, 16)
  obj = names[0]
  video = os.path.join(user_dir, obj, 'clutter', os.listdir(os.path.join(user_dir, obj,
                                                                          'clutter'))[0])
  steps = list(personalize.stream_video(classifier, video, names, batch_size=4))
  frames = personalize.frame_paths(video)
  assert [s['file'] for s in steps] == frames
  assert [orbit.parse_frame_name(s['file'])[4] + 1 for s in steps] == [s['frame'] for s in steps]
  predictions = []
  for step, path in zip(steps, frames):
    alone = classifier.serve(personalize.read_image(path, 16)[None])  # the frame by itself
    assert names[int(alone['class_index'][0])] == step['class']
    predictions.append(names.index(step['class']))
    votes = np.bincount(predictions, minlength=len(names))
    assert step['video_class'] == names[int(np.argmax(votes))]
