"""The LITE paper's training methods: 'small_task' cuts each training task to <= 30 ways and
<= 40 support images (then exact back-propagation), 'no_lite' back-propagates everything."""

import gin
import numpy as np
import pytest

from conftest import small_protonets
from lite_tf.data import adapters
from lite_tf.data import in_memory
from lite_tf.lite import model as lite_model
from lite_tf.training import train


def _source(way=40, shot=3, query_shot=2, seed=0):
  rng = np.random.RandomState(seed)
  images = {c: rng.randint(0, 255, [6, 8, 8, 3]).astype(np.uint8) for c in range(50)}
  return in_memory.EpisodeSampler(images, way=way, shot=shot, query_shot=query_shot, seed=seed)


def _ids_by_label(labels, class_ids):
  out = {}
  for label, class_id in zip(labels, class_ids):
    out.setdefault(int(label), set()).add(int(class_id))
  return out


def test_small_task_cut():
  source = _source()
  small = adapters.SmallTaskEpisodes(source, seed=3)
  for index, (full, cut) in enumerate(zip(source.episodes(), small.episodes())):
    if index == 20:
      break
    assert full['way'] == 40 and cut['way'] == 30
    s_labels, q_labels = cut['support_labels'], cut['query_labels']
    assert len(s_labels) == 40 and set(s_labels) == set(range(30))  # every class kept once+
    # the labels name the same class in support and query, and those classes are the
    # episode's: dataset ids of each new label form a single original class
    s_ids = _ids_by_label(s_labels, cut['support_class_ids'])
    q_ids = _ids_by_label(q_labels, cut['query_class_ids'])
    assert all(len(v) == 1 for v in s_ids.values()) and s_ids == q_ids
    kept = set().union(*s_ids.values())
    full_q = np.isin(full['query_class_ids'], list(kept))
    assert len(q_labels) == int(full_q.sum())  # all query images of the kept classes
    # images travel with their labels: each kept support image is one of the episode's
    full_s = {bytes(np.asarray(im)): cid for im, cid in zip(full['support_images'],
                                                            full['support_class_ids'])}
    for image, class_id in zip(cut['support_images'], cut['support_class_ids']):
      assert full_s[bytes(np.asarray(image))] == class_id


def test_small_task_is_seeded_per_episode_index():
  small = adapters.SmallTaskEpisodes(_source(), seed=1)
  whole = [e for _, e in zip(range(6), small.episodes())]
  resumed = [e for _, e in zip(range(2), small.episodes(start=4))]
  for a, b in zip(whole[4:], resumed):
    np.testing.assert_array_equal(a['support_class_ids'], b['support_class_ids'])
  odd = [e for _, e in zip(range(2), small.episodes(keep=lambda g: g % 2 == 1))]
  np.testing.assert_array_equal(odd[1]['support_class_ids'], whole[3]['support_class_ids'])


def test_small_task_leaves_small_tasks_alone():
  source = _source(way=5, shot=2)
  cut = next(iter(adapters.SmallTaskEpisodes(source).episodes()))
  full = next(iter(source.episodes()))
  np.testing.assert_array_equal(cut['support_class_ids'], full['support_class_ids'])
  np.testing.assert_array_equal(cut['query_labels'], full['query_labels'])


def test_methods_choose_exact_backpropagation():
  learner = small_protonets(0)
  gin.parse_config('lite.num_backprop = 7')
  assert lite_model.make_meta_model(learner).num_backprop == 7
  assert lite_model.make_meta_model(learner, exact=True).num_backprop >= 2**30
  gin.parse_config("train_method.method = 'no_lite'")
  assert train.train_method() == 'no_lite'


def test_unknown_method_and_bad_caps_are_named():
  gin.parse_config("train_method.method = 'tiny'")
  with pytest.raises(ValueError, match=r"train_method.method must be one of .*'small_task'"):
    train.train_method()
  with pytest.raises(ValueError, match='max_ways <= max_support'):
    adapters.SmallTaskEpisodes(_source(), max_ways=50, max_support=40)


def test_small_task_through_the_training_binary(tmp_path, glyph_cache):
  """bin/train.py with train_method 'small_task': the tasks it trains on are the cut ones."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  from conftest import REPO_ROOT, run_binary  # pylint: disable=g-import-not-at-top,g-multiple-import
  del glyph_cache  # the demo data, rendered once per session
  result = run_binary('train.py', f'--train_dir={tmp_path}',
                      f"--gin_config={os.path.join(REPO_ROOT, 'gin', 'demo_protonets.gin')}",
                      "--gin_bindings=train_method.method = 'small_task'",
                      '--gin_bindings=SmallTaskEpisodes.max_ways = 3',
                      '--gin_bindings=SmallTaskEpisodes.max_support = 7',
                      '--gin_bindings=run_training.num_steps=4',
                      '--gin_bindings=run_training.steps_per_log=2',
                      '--gin_bindings=run_training.valid_episodes=1',
                      '--gin_bindings=run_training.test_episodes=1')
  assert result.returncode == 0, result.stderr[-3000:]
  history = [json.loads(l) for l in (tmp_path / 'history.jsonl').read_text().splitlines()]
  assert len(history) == 2
  for line in history:  # the demo's 5-way 5-shot tasks, cut to 3 ways and 7 support images
    assert line['way'] == 3.0 and line['support_size'] == 7.0
  assert "train_method.method = 'small_task'" in (tmp_path / 'operative_config.gin').read_text()
