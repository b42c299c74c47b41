"""tf.distribute for meta-training: tasks spread over replicas, gradients all-reduced.

  with distribute.make_strategy('mirrored').scope():   # all local GPUs (or CPU devices)
    ... build the learner and run training ...

'multi_worker' reads the cluster from TF_CONFIG (MultiWorkerMirroredStrategy). Each replica
runs lite_tf's train_step on its own episode (see EpisodicModel.train_step).
"""

import inspect

import tensorflow as tf

STRATEGIES = ('default', 'mirrored', 'multi_worker')


def make_strategy(kind='default', devices=None):
  """A tf.distribute strategy: 'default' (one device), 'mirrored' or 'multi_worker'."""
  if kind == 'default':
    return tf.distribute.get_strategy()
  if kind == 'mirrored':
    return tf.distribute.MirroredStrategy(devices=devices)
  if kind == 'multi_worker':
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise ValueError(f'--distribution={kind!r}; expected one of {STRATEGIES}')


def _takes(method, argument):
  return argument in inspect.signature(method).parameters


def start_dataset(source, start):
  """The source's episodes from index `start` (exact resume), or an error naming the source."""
  if _takes(source.as_dataset, 'start'):
    return source.as_dataset(start=start)
  if start:
    raise ValueError(f'{type(source).__name__} cannot start at episode {start}, so the run '
                     'cannot resume exactly; use a source whose as_dataset takes start=')
  return source.as_dataset()


def replica_episodes(strategy, source, start=0):
  """The episodes of `source` from `start`, dealt round-robin: at step s replica r of R gets
  episode start + s * R + r. Each replica's pipeline replays the stream's sampling and decodes
  only its share (`as_dataset(shard=...)`, which lite_tf's sources take; other sources are
  decoded in full and sharded by tf.data). With one replica: start_dataset."""
  num_replicas = strategy.num_replicas_in_sync
  if num_replicas == 1:
    return start_dataset(source, start)

  def replica_dataset(input_context):
    shard = (num_replicas, input_context.input_pipeline_id)
    if _takes(source.as_dataset, 'shard'):
      return source.as_dataset(start=start, shard=shard)
    return start_dataset(source, start).shard(*shard)

  return strategy.distribute_datasets_from_function(
      replica_dataset,
      options=tf.distribute.InputOptions(
          experimental_replication_mode=tf.distribute.InputReplicationMode.PER_REPLICA))
