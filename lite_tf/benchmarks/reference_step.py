"""One child process of bin/benchmark_reference.py: the PyTorch reference's own Simple CNAPs +
LITE meta-training step (cambridge-mlg/LITE, src/run.py), timed and measured.

Run with a Python that has torch (never a lite_tf dependency), as a script, not as a module of
lite_tf, so that neither TensorFlow nor lite_tf loads in this process:

  /path/to/torch/python lite_tf/benchmarks/reference_step.py --reference_dir=LITE \
      --image_size=84 --support_size=100 --num_query=40 --num_backprop=40 --batch_size=40 \
      --way=10 --steps=3

It prints one line `RESULT {json}`. The reference runs as its own code runs it: its Learner is
built by its own constructor from its own command line (`--mode train --train_method lite
--image_size S --batch_size B --h H --tasks_per_step 1`), and each step is the body of
`Learner.run`'s training loop for one task (its `train_lite` per query batch, which calls the
model's `build_task_representation_with_split_batch`, the Learner's
`_compute_features_with_split_batch`, `configure_classifier` and `predict`), then its Adam
step. What this driver changes around the reference, none of it in the step's work:

- random weights: its EfficientNet constructors without their weight loading
  (`FilmEfficientNet.from_name` instead of `from_pretrained` or `torch.load` of models/*.pt);
- its data readers (Meta-Dataset, TFDS, image folders; they import TensorFlow) are replaced by
  empty modules, and the task is handed to its `prepare_task` as its reader would hand it
  (float32 in [-1, 1], NHWC);
- on a machine without CUDA, `Tensor.cuda` returns the tensor itself: the reference's
  Mahalanobis predictor builds its identity matrix with `.cuda(0)`, which fails on a CPU.

The task is random_task's, which draws exactly what lite_tf.benchmarks.memory.random_episode
draws (tests/test_benchmark_reference.py checks it), so both sides train on the same images.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import types

import numpy as np


def random_task(num_support, num_query, image_size, way, seed=0, image_dtype='float32'):
  """The benchmarks' random task (lite_tf.benchmarks.memory.random_episode's), in numpy alone,
  so that this script needs no TensorFlow: support images [num_support, S, S, 3], support
  labels [num_support] (cycling over the way), query images [num_query, S, S, 3] and query
  labels; uint8 pixels or float32 in [-1, 1]."""
  rng = np.random.RandomState(seed)

  def images(n, block=32):
    # Drawn a block of images at a time into the task's dtype: one float64 draw of all of them
    # (1.2 GB at N = 1000, S = 224, and as much again for its clipped copy) set the process's
    # peak before the step, above the step's own with recomputation. RandomState's draws in
    # blocks are the draws of one call, so the images are the same.
    out = np.empty((n, image_size, image_size, 3),
                   np.uint8 if image_dtype == 'uint8' else np.float32)
    for start in range(0, n, block):
      x = np.clip(rng.normal(0.0, 0.5, (min(block, n - start), image_size, image_size, 3)), -1, 1)
      out[start:start + len(x)] = (np.round((x + 1.0) * 127.5) if image_dtype == 'uint8'
                                   else x)
    return out

  support = images(num_support)
  query = images(num_query)
  return (support, np.arange(num_support) % way, query,
          np.arange(num_query) % min(way, num_support))


def as_model_input(images):
  """float32 in [-1, 1], what the reference's readers yield (lite_tf.episode.to_model_input's
  mapping of uint8 pixels)."""
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 127.5 - 1.0
  return images.astype(np.float32, copy=False)


def reference_command_line(image_size, batch_size, num_backprop, checkpoint_dir):
  """The reference's src/run.py command line for Simple CNAPs + LITE, EfficientNet-B0 FiLM:
  one task per optimizer step (lite_tf's step)."""
  return ['--mode', 'train', '--train_method', 'lite', '--image_size', str(image_size),
          '--batch_size', str(batch_size), '--h', str(num_backprop), '--tasks_per_step', '1',
          '--learning_rate', '0.001', '--checkpoint_dir', checkpoint_dir]


def _status_kib(field):
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith(field + ':'):
        return int(line.split()[1])
  raise RuntimeError(f'{field} not in /proc/self/status (the benchmark needs Linux)')


def _import_reference(reference_dir):
  """The reference's src/run.py as a module, with its data readers stubbed and its backbone
  built with random weights."""
  import torch  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.join(reference_dir, 'src'))
  # The readers import TensorFlow, tensorflow_datasets, torchvision and meta_dataset; the step
  # uses none of them (and TensorFlow in this process would inflate its memory).
  for name, attr in (('dataset', 'get_dataset_reader'), ('tf_dataset_reader', 'TfDatasetReader'),
                     ('image_folder_reader', 'ImageFolderReader')):
    stub = types.ModuleType(name)
    setattr(stub, attr, lambda *args, **kwargs: None)
    sys.modules[name] = stub
  import efficientnet  # pylint: disable=g-import-not-at-top
  import features  # pylint: disable=g-import-not-at-top
  import run  # pylint: disable=g-import-not-at-top

  def random_film_efficientnet(*unused_args, **unused_kwargs):
    return efficientnet.FilmEfficientNet.from_name('efficientnet-b0', num_classes=0)
  # features.create_feature_extractor picks one of these by --image_size (224: from_pretrained,
  # which downloads ImageNet weights; 84: torch.load of models/efficientnet-b0_84.pt).
  features.film_efficientnet = random_film_efficientnet
  features.film_efficientnet_b0_84 = random_film_efficientnet
  if not torch.cuda.is_available():
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
  return run


def reference_task_step(learner, context_images, target_images, context_labels, target_labels):
  """One task of Learner.run's training loop (src/run.py, its use_batches branch) and the
  optimizer step it takes every tasks_per_step (= 1) tasks; returns the query batches' losses."""
  # pylint: disable=protected-access
  learner.model.clear_caches()
  learner.feature_cache = None
  target_set_size = len(target_labels)
  losses = []
  for batch in range(learner._get_number_of_batches(target_set_size)):
    start, end = learner._get_batch_indices(batch, target_set_size)
    loss, _ = learner.train_fn(context_images, target_images[start:end], context_labels,
                               target_labels[start:end])
    losses.append(loss.item())
  learner.optimizer.step()
  learner.optimizer.zero_grad()
  return losses


def run(reference_dir, image_size, support_size, num_query, num_backprop, batch_size, way,
        steps, threads=2, image_dtype='uint8', flush_denormal=True, seed=0):
  """Builds the reference's Learner with random weights, runs a warm-up step and `steps`
  steps on random_task's task; returns a dict of measurements."""
  rss_at_start = _status_kib('VmRSS') * 1024
  import torch  # pylint: disable=g-import-not-at-top
  # What importing torch alone holds: a CUDA build of torch maps far more than a CPU build.
  rss_after_import = _status_kib('VmRSS') * 1024
  torch.set_num_threads(threads)
  flush_set = torch.set_flush_denormal(flush_denormal)
  torch.manual_seed(seed)
  np.random.seed(seed)  # the reference's H draws (np.random.permutation)
  run_module = _import_reference(reference_dir)
  scratch = tempfile.mkdtemp(prefix='lite_reference_')
  try:
    argv = reference_command_line(image_size, batch_size, num_backprop,
                                  os.path.join(scratch, 'checkpoints'))
    saved_argv, sys.argv = sys.argv, ['run.py'] + argv
    try:
      learner = run_module.Learner()
    finally:
      sys.argv = saved_argv
    support, support_labels, query, query_labels = random_task(
        support_size, num_query, image_size, way, seed=seed, image_dtype=image_dtype)
    task_dict = {'context_images': as_model_input(support), 'context_labels': support_labels,
                 'target_images': as_model_input(query), 'target_labels': query_labels}
    del support, query
    context_images, target_images, context_labels, target_labels = learner.prepare_task(task_dict)
    del task_dict  # what is left is the reference's own copy of the task
    parameters = sum(p.numel() for p in learner.model.parameters())
    trainable = sum(p.numel() for p in learner.model.parameters() if p.requires_grad)
    rss_before = _status_kib('VmRSS') * 1024
    peak_before_step = _status_kib('VmHWM') * 1024
    times, losses = [], []
    for _ in range(1 + steps):
      start = time.perf_counter()
      losses.append(reference_task_step(learner, context_images, target_images, context_labels,
                                        target_labels))
      times.append(time.perf_counter() - start)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  return {
      'side': 'reference', 'image_size': image_size, 'support_size': support_size,
      'num_query': num_query, 'num_backprop': num_backprop, 'batch_size': batch_size,
      'way': way, 'steps': steps, 'threads': torch.get_num_threads(),
      'interop_threads': torch.get_num_interop_threads(), 'image_dtype': 'float32',
      'task_image_dtype': image_dtype, 'flush_denormal': flush_denormal,
      'flush_denormal_supported': flush_set, 'torch': torch.__version__,
      'torch_cuda': torch.version.cuda, 'rss_at_start_bytes': rss_at_start,
      'rss_after_torch_import_bytes': rss_after_import,
      'numpy': np.__version__, 'reference_args': vars(learner.args),
      'reference_command_line': ['src/run.py'] + argv[:-2],  # the scratch checkpoint_dir left out
      'parameters': parameters, 'trainable_parameters': trainable,
      'device': str(learner.device), 'rss_before_bytes': rss_before,
      'peak_before_step_bytes': peak_before_step,
      'process_peak_rss_bytes': _status_kib('VmHWM') * 1024,
      'first_step_seconds': times[0], 'step_seconds': statistics.median(times[1:]),
      'step_times_seconds': times, 'losses': losses,
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--reference_dir', required=True)
  for name in ('image_size', 'support_size', 'num_query', 'num_backprop', 'batch_size', 'way',
               'steps'):
    parser.add_argument(f'--{name}', type=int, required=True)
  parser.add_argument('--threads', type=int, default=2)
  parser.add_argument('--image_dtype', choices=['float32', 'uint8'], default='uint8')
  parser.add_argument('--flush_denormal', type=int, choices=[0, 1], default=1)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  result = run(**dict(vars(args), flush_denormal=bool(args.flush_denormal)))
  print('RESULT ' + json.dumps(result), flush=True)


if __name__ == '__main__':
  main()
