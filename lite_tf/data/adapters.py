"""Episodes from other pipelines: Meta-Dataset's 6-tuples and multi-source mixing."""

import inspect
import itertools

import gin
import numpy as np
import tensorflow as tf

from lite_tf import episode as episode_lib


def from_meta_dataset_tuple(support_images, support_labels, support_class_ids, query_images,
                            query_labels, query_class_ids):
  """One Meta-Dataset episode (the 6-tuple its episode pipelines yield) -> episode dict."""
  support_labels = tf.cast(support_labels, tf.int32)
  return {
      'support_images': tf.cast(support_images, tf.float32),
      'support_labels': support_labels,
      'query_images': tf.cast(query_images, tf.float32),
      'query_labels': tf.cast(query_labels, tf.int32),
      'way': tf.reduce_max(support_labels) + 1,
      'support_class_ids': tf.cast(support_class_ids, tf.int32),
      'query_class_ids': tf.cast(query_class_ids, tf.int32),
  }


def adapt_meta_dataset_pipeline(dataset):
  """Maps a tf.data pipeline of Meta-Dataset episodes to lite_tf episode dicts.

  Accepts elements `(episode_6_tuple, source_id)` as yielded by Meta-Dataset's
  `make_one_source_episode_pipeline` / `make_multisource_episode_pipeline`, or bare 6-tuples.
  """
  spec = dataset.element_spec
  if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], tuple):
    return dataset.map(lambda episode, source_id: from_meta_dataset_tuple(*episode))
  if isinstance(spec, tuple) and len(spec) == 6:
    return dataset.map(from_meta_dataset_tuple)
  raise ValueError('expected a dataset of Meta-Dataset episodes: 6-tuples (support_images, '
                   'support_labels, support_class_ids, query_images, query_labels, '
                   f'query_class_ids), optionally paired with a source id; got {spec}')


class PipelineEpisodes:
  """An episode source over a user's own tf.data pipeline of Meta-Dataset episodes (6-tuples,
  optionally paired with a source id, as Meta-Dataset's episode pipelines yield).

  Episode k is the pipeline's k-th element: a resumed run skips the first `start` elements
  (they are read and dropped, as tf.data cannot seek), so the run continues exactly when the
  pipeline is deterministic (Meta-Dataset's is for fixed seeds). Replicas share it with
  tf.data's `shard`.
  """

  def __init__(self, dataset, name='pipeline'):
    if not isinstance(dataset, tf.data.Dataset):
      raise ValueError(f'{name} must give a tf.data.Dataset of Meta-Dataset episodes; got '
                       f'{type(dataset).__name__}')
    try:
      self.dataset = adapt_meta_dataset_pipeline(dataset)
    except ValueError as e:
      raise ValueError(f'{name}: {e}') from e
    self.name = name
    shape = self.dataset.element_spec['support_images'].shape
    self.image_size = shape[1] if shape.rank == 4 and shape[1] == shape[2] else None

  def output_signature(self):
    return self.dataset.element_spec

  def episodes(self, start=0, keep=None):
    """Iterator of the pipeline's episode dicts (numpy) with index >= start (and keep)."""
    for index, episode in enumerate(self.dataset.skip(start), start):
      if keep is None or keep(index):
        yield {k: v.numpy() for k, v in episode.items()}

  def as_dataset(self, num_episodes=None, prefetch=2, start=0, shard=None):
    dataset = self.dataset.skip(start) if start else self.dataset
    if shard is not None:
      dataset = dataset.shard(*shard)
    if num_episodes is not None:
      dataset = dataset.take(num_episodes)
    return dataset.prefetch(prefetch)


def make_episode_source(episode_source, split):
  """`episode_source(split)` as an episode source: a tf.data.Dataset of Meta-Dataset episodes
  returned by a user's factory (`run_training.episode_source = @my_pipeline`) is wrapped in
  PipelineEpisodes; lite_tf's own sources pass through."""
  source = episode_source(split)
  name = getattr(episode_source, '__name__', type(episode_source).__name__)
  if isinstance(source, tf.data.Dataset):
    return PipelineEpisodes(source, name=f'run_training.episode_source={name}({split!r})')
  missing = [m for m in ('episodes', 'as_dataset') if not callable(getattr(source, m, None))]
  if missing:
    raise ValueError(
        f'run_training.episode_source={name}({split!r}) returned a {type(source).__name__}, '
        f'which lacks {" and ".join(missing)}: an episode source needs episodes(start=0) '
        '(an iterator of episode dicts) and as_dataset(start=0, num_episodes=None, shard=None) '
        '(a tf.data.Dataset of them), as lite_tf.data.in_memory.EpisodeSampler has; or return '
        'a tf.data.Dataset of Meta-Dataset episodes')
  return source


@gin.configurable
def meta_dataset_pipeline(split, dataset_fn=gin.REQUIRED):
  """gin episode source over a user's factory `dataset_fn(split)` returning a tf.data.Dataset
  of Meta-Dataset episodes (`run_training.episode_source = @meta_dataset_pipeline`,
  `meta_dataset_pipeline.dataset_fn = @my_pipeline`); the same as binding the factory itself
  to run_training.episode_source. `split` is 'train', 'valid' or 'test'."""
  name = getattr(dataset_fn, '__name__', type(dataset_fn).__name__)
  return PipelineEpisodes(dataset_fn(split),
                          name=f'meta_dataset_pipeline.dataset_fn={name}({split!r})')


def _kept_episodes(source, keep):
  """Iterator of the source's episodes l with keep(l): skipped undecoded where the source's
  `episodes` takes keep=, else read and dropped."""
  if 'keep' in inspect.signature(source.episodes).parameters:
    return iter(source.episodes(keep=keep))
  return (e for l, e in enumerate(source.episodes()) if keep(l))


@gin.configurable
class MultiSourceEpisodes:
  """Each episode from one source drawn uniformly at random (Meta-Dataset's multi-source
  training), reproducibly for a seed.

  Episode g of the mix is episode l of source c_g, where c_g is the seeded draw and l counts
  the earlier draws of c_g. So the mix can start at any episode and be sharded; sources whose
  `episodes` takes keep= (lite_tf's records and in-memory sources) skip the episodes the mix
  does not use without decoding them.
  """

  def __init__(self, sources, seed=0):
    if not sources:
      raise ValueError('MultiSourceEpisodes needs at least one source')
    self.sources = list(sources)
    sizes = {getattr(s, 'image_size', None) for s in self.sources}
    if len(sizes) > 1:
      raise ValueError(f'MultiSourceEpisodes: sources differ in image_size {sorted(sizes)}')
    self.seed = seed

  def episodes(self, start=0, keep=None):
    """Endless iterator of the mix's episodes with index >= start (and keep(index))."""
    rng = np.random.RandomState(self.seed)
    wanted = lambda g: g >= start and (keep is None or keep(g))  # pylint: disable=unnecessary-lambda-assignment
    # global_index[c][l]: the mix's index of source c's episode l, filled as draws are made;
    # a source only asks about episodes up to the one it is yielding, all drawn by then.
    global_index = [[] for _ in self.sources]
    iterators = [None] * len(self.sources)
    index = 0
    while True:
      c = rng.randint(len(self.sources))
      global_index[c].append(index)
      if wanted(index):
        if iterators[c] is None:
          iterators[c] = _kept_episodes(self.sources[c],
                                        lambda l, c=c: wanted(global_index[c][l]))
        yield next(iterators[c])
      index += 1

  def output_signature(self):
    return self.sources[0].output_signature()

  def as_dataset(self, num_episodes=None, prefetch=2, start=0, shard=None):
    """tf.data.Dataset of the mix from episode `start`; shard=(num_shards, index) as the
    sources' as_dataset."""
    return episode_lib.episodes_dataset(self.episodes, self.output_signature(), start=start,
                                        shard=shard, num_episodes=num_episodes,
                                        prefetch=prefetch)


@gin.configurable
class SmallTaskEpisodes:
  """The LITE paper's `small_task` baseline (cambridge-mlg/LITE `--train_method small_task`):
  each training task cut to at most `max_ways` classes and `max_support` support images, so
  that the whole task can be back-propagated exactly.

  Classes are drawn uniformly from the episode's; the support set keeps one random image of
  each kept class, then random others up to max_support; the query set keeps the kept
  classes' images. Labels are renumbered 0..k-1 in the order of the original labels. Each
  episode's cut is seeded by (seed, episode index), so resuming and sharding see the cuts an
  uninterrupted single stream would.
  """

  def __init__(self, source, max_ways=30, max_support=40, seed=0):
    if max_ways < 2 or max_support < max_ways:
      raise ValueError(f'SmallTaskEpisodes: need 2 <= max_ways <= max_support; got max_ways='
                       f'{max_ways}, max_support={max_support}')
    self.source, self.max_ways, self.max_support, self.seed = source, max_ways, max_support, seed
    self.image_size = getattr(source, 'image_size', None)

  def cut(self, episode, index):
    rng = np.random.RandomState([self.seed % 2**32, index % 2**32])
    support_labels = np.asarray(episode['support_labels'])
    query_labels = np.asarray(episode['query_labels'])
    classes = np.unique(support_labels)
    if classes.size > self.max_ways:
      classes = np.sort(rng.choice(classes, self.max_ways, replace=False))
    first = [rng.choice(np.flatnonzero(support_labels == c)) for c in classes]
    rest = np.setdiff1d(np.flatnonzero(np.isin(support_labels, classes)), first)
    extra = rng.choice(rest, min(rest.size, self.max_support - len(first)), replace=False)
    support = np.sort(np.concatenate([first, extra]).astype(np.int64))
    query = np.flatnonzero(np.isin(query_labels, classes))
    relabel = np.full([int(max(support_labels.max(), query_labels.max())) + 1], -1, np.int32)
    relabel[classes] = np.arange(classes.size, dtype=np.int32)
    out = dict(episode)
    for key, rows in (('support', support), ('query', query)):
      out[f'{key}_images'] = tf.gather(episode[f'{key}_images'], rows)
      out[f'{key}_labels'] = relabel[np.asarray(episode[f'{key}_labels'])[rows]]
      if f'{key}_class_ids' in episode:
        out[f'{key}_class_ids'] = np.asarray(episode[f'{key}_class_ids'])[rows]
    out['way'] = np.int32(classes.size)
    return out

  def episodes(self, start=0, keep=None):
    indices = (g for g in itertools.count(start) if keep is None or keep(g))
    inner = _kept_episodes(self.source, lambda l: l >= start and (keep is None or keep(l)))
    for index, episode in zip(indices, inner):
      yield self.cut(episode, index)

  def output_signature(self):
    """The source's signature with the sizes of the per-example fields left free (a cut's
    way and set sizes vary)."""
    return {key: tf.TensorSpec([None] + spec.shape.as_list()[1:] if spec.shape.rank else [],
                               spec.dtype)
            for key, spec in self.source.output_signature().items()}

  def as_dataset(self, num_episodes=None, prefetch=2, start=0, shard=None):
    return episode_lib.episodes_dataset(self.episodes, self.output_signature(), start=start,
                                        shard=shard, num_episodes=num_episodes,
                                        prefetch=prefetch)
