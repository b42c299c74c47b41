"""Run by tests/test_distribute.py in a fresh process: two logical CPU devices."""

import numpy as np
import tensorflow as tf

cpus = tf.config.list_physical_devices('CPU')
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # pylint: disable=g-import-not-at-top,wrong-import-position

from lite_tf.episode import Episode  # pylint: disable=g-import-not-at-top,wrong-import-position
from lite_tf.episode import shard_filter  # pylint: disable=wrong-import-position
from lite_tf.learners.protonets import ProtoNets  # pylint: disable=wrong-import-position
from lite_tf.lite import model as lite_model  # pylint: disable=wrong-import-position
from lite_tf.training import distribute  # pylint: disable=wrong-import-position


class Source:
  """Episode i is a pure function of i; as_dataset(start, shard) like lite_tf's sources."""

  def episode(self, i):
    rng = np.random.RandomState(i)
    return Episode.from_numpy(rng.uniform(-1, 1, (6, 16, 16, 3)), np.arange(6) % 3,
                              rng.uniform(-1, 1, (4, 16, 16, 3)), np.arange(4) % 3, 3).to_dict()

  def as_dataset(self, start=0, shard=None):
    keep = shard_filter(start, *shard) if shard else (lambda i: True)
    self.shards.append(shard)

    def generate():
      i = start
      while True:
        if keep(i):
          yield self.episode(i)
        i += 1
    signature = {'support_images': tf.TensorSpec([6, 16, 16, 3], tf.float32),
                 'support_labels': tf.TensorSpec([6], tf.int32),
                 'query_images': tf.TensorSpec([4, 16, 16, 3], tf.float32),
                 'query_labels': tf.TensorSpec([4], tf.int32),
                 'way': tf.TensorSpec([], tf.int32)}
    return tf.data.Dataset.from_generator(generate, output_signature=signature)

  def __init__(self):
    self.shards = []


class UnshardedSource(Source):
  """A source whose as_dataset takes no shard=: replica_episodes shards it with tf.data."""

  def as_dataset(self, start=0):  # pylint: disable=arguments-differ
    return super().as_dataset(start)


def train(strategy, tasks_per_step, steps, source, **lite_options):
  with strategy.scope():
    keras.utils.set_random_seed(0)
    learner = ProtoNets(backbone='conv4', image_size=16)
    learner.call(Source().episode(0))
    learner.built = True
    # |H| = 2 of 6: the replicas' subset draws must match the single device's too.
    model = lite_model.LiteModel(learner, num_backprop=2, chunk_size=2, query_batch_size=4,
                                 **lite_options)
    model.compile(optimizer=lite_model.make_optimizer(learning_rate=1e-2,
                                                      tasks_per_step=tasks_per_step))
  model.fit(distribute.replica_episodes(strategy, source), epochs=1, steps_per_epoch=steps,
            verbose=0)
  return [v.numpy() for v in learner.trainable_weights], int(model.tasks_seen.numpy())


def main():
  mirrored_strategy = distribute.make_strategy('mirrored', ['/cpu:0', '/cpu:1'])
  single, single_tasks = train(distribute.make_strategy('default'), 2, 4, Source())
  sharded_source = Source()
  mirrored, mirrored_tasks = train(mirrored_strategy, 1, 2, sharded_source)
  unsharded, _ = train(mirrored_strategy, 1, 2, UnshardedSource())
  # Recomputation in the default mode ('loop': a while-loop with a custom gradient per pass)
  # inside each replica.
  recomputed = {name: train(strategy, tasks, steps, Source(), recompute_batch=1)[0]
                for name, strategy, tasks, steps in (
                    ('single', distribute.make_strategy('default'), 2, 4),
                    ('mirrored', mirrored_strategy, 1, 2))}
  keras.utils.set_random_seed(0)
  initial = ProtoNets(backbone='conv4', image_size=16)
  initial.call(Source().episode(0))
  print('replicas', mirrored_strategy.num_replicas_in_sync)
  print('tasks', single_tasks, mirrored_tasks)
  print('moved', max(float(np.abs(a - b.numpy()).max())
                     for a, b in zip(single, initial.trainable_weights)))
  print('difference', max(float(np.abs(a - b).max()) for a, b in zip(single, mirrored)))
  print('difference_unsharded', max(float(np.abs(a - b).max())
                                    for a, b in zip(single, unsharded)))
  print('shards', sorted(sharded_source.shards))
  print('difference_recomputed', max(float(np.abs(a - b).max()) for a, b in zip(
      recomputed['single'], recomputed['mirrored'])))
  print('recomputed_vs_plain', max(float(np.abs(a - b).max()) for a, b in zip(
      recomputed['single'], single)))
  with mirrored_strategy.scope():  # accumulation on top of replicas is refused up front
    try:
      lite_model.make_optimizer(tasks_per_step=3)
      print('tasks_per_step accepted')
    except ValueError as e:
      print('tasks_per_step', str(e))


if __name__ == '__main__':
  main()
