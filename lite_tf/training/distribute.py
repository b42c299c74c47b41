"""tf.distribute for meta-training: tasks spread over replicas, gradients all-reduced.

  with distribute.make_strategy('mirrored').scope():   # all local GPUs (or CPU devices)
    ... build the learner and run training ...

'multi_worker' reads the cluster from TF_CONFIG (MultiWorkerMirroredStrategy). Each replica
runs lite_tf's train_step on its own episode (see EpisodicModel.train_step).
"""

import inspect
import json
import os
import shutil
import socket
import sys
import tempfile
import time

from absl import logging
import gin
import tensorflow as tf

STRATEGIES = ('default', 'mirrored', 'multi_worker')


def make_strategy(kind='default', devices=None):
  """A tf.distribute strategy: 'default' (one device), 'mirrored' or 'multi_worker'."""
  if kind == 'default':
    return tf.distribute.get_strategy()
  if kind == 'mirrored':
    return tf.distribute.MirroredStrategy(devices=devices)
  if kind == 'multi_worker':
    cluster, task_type, index = read_tf_config()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    wait_for_peers(cluster, task_type, index)
    return strategy
  raise ValueError(f'--distribution={kind!r}; expected one of {STRATEGIES}')


def read_tf_config(environ=None):
  """(cluster, task type, task index) of TF_CONFIG for --distribution=multi_worker, or an error
  naming TF_CONFIG and what is wrong with it (unset, not JSON, a task outside its cluster).
  A cluster of one task runs alone, and says so."""
  environ = os.environ if environ is None else environ
  text = environ.get('TF_CONFIG', '').strip()
  example = ('e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
             '"task": {"type": "worker", "index": 0}}\' on the first host, index 1 on the second')
  if not text:
    raise ValueError('--distribution=multi_worker needs TF_CONFIG, naming the cluster and this '
                     f'worker ({example}); without it every host would train alone on the same '
                     '--train_dir')
  try:
    config = json.loads(text)
  except ValueError as e:
    raise ValueError(f'TF_CONFIG is not valid JSON ({e}): {text[:200]!r}; {example}') from None
  cluster = config.get('cluster') if isinstance(config, dict) else None
  task = config.get('task') if isinstance(config, dict) else None
  if not isinstance(cluster, dict) or not cluster or not all(
      isinstance(v, list) and v for v in cluster.values()):
    raise ValueError(f'TF_CONFIG["cluster"] must map job names to lists of "host:port"; got '
                     f'{cluster!r:.200}; {example}')
  if not isinstance(task, dict) or task.get('type') not in cluster:
    raise ValueError(f'TF_CONFIG["task"]["type"] must be one of the cluster\'s jobs '
                     f'{sorted(cluster)}; got {task!r:.200}')
  index = task.get('index', 0)
  jobs = cluster[task['type']]
  if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(jobs):
    raise ValueError(f'TF_CONFIG["task"]["index"] = {index!r} is outside the cluster\'s '
                     f'{len(jobs)} {task["type"]} task(s) (0 to {len(jobs) - 1})')
  if sum(len(v) for v in cluster.values()) == 1:
    logging.warning('TF_CONFIG names one task: this multi-worker run trains alone')
  return cluster, task['type'], index


@gin.configurable('multi_worker')
def peer_timeout(peer_timeout_s=600):
  """gin: `multi_worker.peer_timeout_s`: how long a worker waits for its peers to start."""
  if (isinstance(peer_timeout_s, bool) or not isinstance(peer_timeout_s, (int, float))
      or peer_timeout_s <= 0):
    raise ValueError(f'multi_worker.peer_timeout_s must be a number > 0; got '
                     f'{peer_timeout_s!r}')
  return peer_timeout_s


def wait_for_peers(cluster, task_type, index, timeout=None, poll=0.5):
  """Waits until every other task of the cluster listens on its address, logging whom it
  waits for; an error naming them after `timeout` seconds (multi_worker.peer_timeout_s)."""
  timeout = peer_timeout() if timeout is None else timeout
  peers = [(job, i, address) for job, addresses in sorted(cluster.items())
           for i, address in enumerate(addresses) if (job, i) != (task_type, index)]
  start = time.monotonic()
  last_log = None
  while peers:
    waiting = []
    for job, i, address in peers:
      host, _, port = address.rpartition(':')
      try:
        with socket.create_connection((host or 'localhost', int(port)), timeout=poll):
          pass
      except (OSError, ValueError):
        waiting.append((job, i, address))
    peers = waiting
    if not peers:
      break
    elapsed = time.monotonic() - start
    names = ', '.join(f'{job} {i} ({address})' for job, i, address in peers)
    if elapsed > timeout:
      raise ValueError(f'{task_type} {index}: gave up after {timeout:g} s waiting for {names} '
                       'to start (TF_CONFIG); start every worker with the same command, or '
                       'raise multi_worker.peer_timeout_s')
    if last_log is None or time.monotonic() - last_log > 10:
      logging.info('%s %d: waiting for %s to start', task_type, index, names)
      print(f'{task_type} {index}: waiting for {names} to start', file=sys.stderr, flush=True)
      last_log = time.monotonic()
    time.sleep(poll)


def is_chief(strategy):
  """Whether this process writes the run's files: always, except on the non-chief workers of
  a multi-worker cluster (TF_CONFIG's chief, else worker 0, writes)."""
  return bool(strategy.extended.should_checkpoint)


def worker_name(strategy):
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or resolver.task_type is None:
    return 'this process'
  return f'{resolver.task_type} {resolver.task_id}'


class WorkerScratch:
  """Where a non-chief worker writes what every worker must write (its checkpoints: saving
  mirrored variables can be a collective that all workers join) but nobody reads: a fresh
  local temporary folder, removed at the end, as Keras' multi-worker conventions have it."""

  def __init__(self, strategy):
    self.path = tempfile.mkdtemp(prefix=f'lite_tf_{worker_name(strategy).replace(" ", "")}_')

  def __enter__(self):
    return self.path

  def __exit__(self, *exc):
    shutil.rmtree(self.path, ignore_errors=True)


def check_same_on_workers(strategy, value, what):
  """Raises unless the integer `value` is the same in every replica (e.g. the task a resumed
  run starts from: a worker that cannot see the chief's checkpoints would start elsewhere
  and train on diverging weights)."""
  if strategy.num_replicas_in_sync == 1:
    return
  local = tf.constant(value, tf.int64)
  values = strategy.gather(strategy.run(lambda: tf.reshape(local, [1])), axis=0).numpy()
  if len(set(values.tolist())) > 1:
    raise ValueError(
        f'{worker_name(strategy)} has {what} = {value}, but the replicas have '
        f'{values.tolist()}: every worker must read the same --train_dir (a folder shared by '
        'all hosts, e.g. a network file system or a gs:// bucket), where the chief writes '
        'checkpoints')


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


def replica_episodes(strategy, source, start=0, num_episodes=None):
  """The episodes of `source` from `start`, dealt round-robin: at step s replica r of R gets
  episode start + s * R + r. Each replica's pipeline replays the stream's sampling and decodes
  only its share (`as_dataset(shard=...)`, which lite_tf's sources take; other sources are
  decoded in full and sharded by tf.data). With one replica: start_dataset.

  num_episodes: None (endless), or a multiple of R: the first num_episodes episodes, repeated
  endlessly (validation: every pass sees the same episodes, each replica its share)."""
  num_replicas = strategy.num_replicas_in_sync

  def limited(dataset, count):
    return dataset if num_episodes is None else dataset.take(count).repeat()

  if num_replicas == 1:
    return limited(start_dataset(source, start), num_episodes)
  if num_episodes is not None and num_episodes % num_replicas:
    raise ValueError(f'{num_episodes} episodes cannot be dealt evenly to {num_replicas} '
                     'replicas')
  share = None if num_episodes is None else num_episodes // num_replicas

  def replica_dataset(input_context):
    shard = (num_replicas, input_context.input_pipeline_id)
    logging.info('%s, replica pipeline %d of %d: episodes %d + %d + %d k of %s',
                 worker_name(strategy), shard[1], num_replicas, start, shard[1], num_replicas,
                 type(source).__name__)
    if _takes(source.as_dataset, 'shard'):
      return limited(source.as_dataset(start=start, shard=shard), share)
    return limited(start_dataset(source, start).shard(*shard), share)

  if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    # Its input pipelines are per worker; an episode cannot be split between a worker's
    # replicas (its shapes vary), so each worker must hold one replica.
    local = len(strategy.extended.worker_devices)
    if local != 1:
      raise ValueError(
          f'--distribution=multi_worker: this worker has {local} devices '
          f'({", ".join(strategy.extended.worker_devices)}); lite_tf runs one task per '
          'replica and needs one device per worker: start one worker process per '
          'accelerator (e.g. CUDA_VISIBLE_DEVICES=i and a TF_CONFIG task of its own)')
    return strategy.distribute_datasets_from_function(replica_dataset)
  return strategy.distribute_datasets_from_function(
      replica_dataset,
      options=tf.distribute.InputOptions(
          experimental_replication_mode=tf.distribute.InputReplicationMode.PER_REPLICA))
