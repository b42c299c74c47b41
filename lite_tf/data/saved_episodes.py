"""Saved evaluation episodes: a fixed set of episodes written once (descriptions and record
positions, not pixels) and read back, so that two models, or two runs months apart, are
evaluated on exactly the same episodes (Meta-Dataset's dump_episodes / read_episodes use).

    python bin/dump_episodes.py --records_dir=/data/records/dtd --split=test \\
        --num_episodes=600 --output=episodes/dtd_test.json
    # then, for bin/evaluate.py:
    run_evaluation.datasets = {'dtd': @dtd/saved_episodes}
    dtd/saved_episodes.path = 'episodes/dtd_test.json'
    dtd/saved_episodes.records_dir = '/data/records/dtd'

The file names the dataset, split, seed and sampler configuration it was drawn with, and
holds the SHA-256 of the dataset spec (its JSON, canonicalised): reading it against records
whose spec differs is refused, naming both.
"""

import hashlib
import json
import os

import gin

from lite_tf import atomic
from lite_tf import episode as episode_lib
from lite_tf.data.meta_dataset import dataset_spec as spec_lib
from lite_tf.data.meta_dataset import reader

FORMAT = 'lite_tf.saved_episodes/1'


class SavedEpisodesError(ValueError):
  """A saved-episodes file that is malformed or belongs to other records."""


def spec_checksum(records_dir):
  """SHA-256 of the records folder's dataset_spec.json, parsed and re-serialised with sorted
  keys (so whitespace and key order do not matter, every count and name does)."""
  path = os.path.join(os.fspath(records_dir), 'dataset_spec.json')
  try:
    with open(path) as f:
      spec = json.load(f)
  except (OSError, ValueError) as e:
    raise SavedEpisodesError(f'{path}: cannot read the dataset spec: {e}') from e
  canonical = json.dumps(spec, sort_keys=True, separators=(',', ':'))
  return hashlib.sha256(canonical.encode()).hexdigest()


def dump_episodes(source, num_episodes, path):
  """Writes the first `num_episodes` episodes of a RecordsEpisodeSource to `path` (JSON,
  atomically): per episode, per class, (class id, support count, query count, record
  positions in the class file). Nothing is decoded."""
  if num_episodes < 1:
    raise ValueError(f'num_episodes must be at least 1; got {num_episodes}')
  episodes = []
  for description, taken in source.descriptions_and_records():
    episodes.append([[int(c), int(s), int(q), [int(t[3]) for t in records]]
                     for (c, s, q), records in zip(description, taken)])
    if len(episodes) == num_episodes:
      break
  config = source.sampler.config
  atomic.write_json(path, {
      'format': FORMAT, 'dataset': source.spec.name, 'split': spec_lib.split_name(source.split),
      'seed': source.seed, 'spec_sha256': spec_checksum(source.records_dir),
      'config': {k: v for k, v in sorted(vars(config).items())
                 if isinstance(v, (int, float, bool, str, type(None)))},
      'episodes': episodes})
  return len(episodes)


@gin.configurable
class SavedEpisodesSource:
  """The episodes of a saved-episodes file, read from `records_dir`.

  Args:
    path: the file bin/dump_episodes.py wrote.
    records_dir: the records folder it was written for (its spec checksum must match).
    image_size: side S of the square images.
    image_dtype: 'float32' (in [-1, 1]) or 'uint8'.
  """

  def __init__(self, path, records_dir, image_size=84, image_dtype='float32'):
    try:
      with open(path) as f:
        saved = json.load(f)
    except (OSError, ValueError) as e:
      raise SavedEpisodesError(f'{path}: cannot read saved episodes: {e}') from e
    if not isinstance(saved, dict) or saved.get('format') != FORMAT:
      raise SavedEpisodesError(f'{path}: not a saved-episodes file (expected format '
                               f'{FORMAT!r}, got {saved.get("format") if isinstance(saved, dict) else type(saved).__name__!r})')
    checksum = spec_checksum(records_dir)
    if saved['spec_sha256'] != checksum:
      raise SavedEpisodesError(
          f'{path}: written for dataset {saved["dataset"]!r} with spec sha256 '
          f'{saved["spec_sha256"][:12]}..., but {records_dir}/dataset_spec.json has '
          f'{checksum[:12]}...: these episodes belong to other records')
    self.path, self.saved = path, saved
    self.records = reader.RecordsEpisodeSource(records_dir, saved['split'].lower(),
                                               image_size=image_size, image_dtype=image_dtype,
                                               seed=saved['seed'])
    self.image_size = image_size
    self.split = saved['split']
    self.num_episodes = len(saved['episodes'])
    allowed = set(self.records.spec.class_ids(saved['split'].lower()))
    for index, classes in enumerate(saved['episodes']):
      foreign = sorted({int(c) for c, _, _, _ in classes} - allowed)
      if foreign:
        raise SavedEpisodesError(f'{path}: episode {index} holds classes {foreign}, which are not '
                                 f'in the {saved["split"]} split of {records_dir}')

  def episode(self, index):
    classes = self.saved['episodes'][index]
    description = [(c, s, q) for c, s, q, _ in classes]
    taken = [self.records.records_at(c, positions) for c, _, _, positions in classes]
    return self.records.episode_from_records(description, taken, index)

  def episodes(self, start=0, keep=None):
    """The saved episodes from `start` (and keep(index)), once: the file is finite."""
    for index in range(start, self.num_episodes):
      if keep is None or keep(index):
        yield self.episode(index)

  def output_signature(self):
    return self.records.output_signature()

  def as_dataset(self, num_episodes=None, prefetch=2, start=0, shard=None):
    return episode_lib.episodes_dataset(self.episodes, self.output_signature(), start=start,
                                        shard=shard, num_episodes=num_episodes,
                                        prefetch=prefetch)


@gin.configurable
def saved_episodes(split, path=gin.REQUIRED, records_dir=gin.REQUIRED, image_size=84, **kwargs):
  """gin episode source (e.g. in run_evaluation.datasets): the saved episodes of `path`; the
  split asked for must be the file's."""
  source = SavedEpisodesSource(os.fspath(path), os.fspath(records_dir), image_size=image_size,
                               **kwargs)
  if spec_lib.split_name(split) != source.split:
    raise SavedEpisodesError(f'{path}: holds {source.split} episodes; asked for the {split!r} '
                             'split')
  return source

