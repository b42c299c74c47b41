"""Seconds per TF op type of a traced function, read from TF's profiler (no TensorBoard).

`op_seconds(fn, runs)` runs `fn` under `tf.profiler.experimental` and sums, per op type
(`Conv2D`, `_MklNativeDepthwiseConv2dNativeBackpropInput`, `Cast`, ...), the durations the
executor's compute threads (`tf_Compute/...` lines of the host plane) record, divided by `runs`.
Ops running concurrently on several threads each count their own time, so the total is CPU
time in op kernels, not wall time.
"""

import collections
import glob
import os
import shutil
import tempfile

import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

_SCHEDULING_EVENTS = ('Process', 'ExecutorState::Process', 'ExecutorDoneCallback')


def _parse(path):
  space = xplane_pb2.XSpace()
  with open(path, 'rb') as f:
    space.ParseFromString(f.read())
  return space


def op_seconds_from_xspace(space):
  """{op type: seconds} over the compute-thread lines of a profiler XSpace."""
  seconds = collections.Counter()
  for plane in space.planes:
    for line in plane.lines:
      if not line.name.startswith('tf_Compute'):
        continue
      for event in line.events:
        name = plane.event_metadata[event.metadata_id].name
        op_type = name.rsplit(':', 1)[-1]
        if op_type not in _SCHEDULING_EVENTS:
          seconds[op_type] += event.duration_ps / 1e12
  return seconds


def op_seconds(fn, runs=2):
  """Runs fn() `runs` times under the profiler; returns {op type: seconds per run}. Warm fn up
  (trace it) first: the profile should not hold the tracing."""
  if runs <= 0:
    raise ValueError(f'op_seconds: runs must be positive; got {runs}')
  logdir = tempfile.mkdtemp(prefix='lite_tf_profile_')
  try:
    tf.profiler.experimental.start(logdir)
    try:
      for _ in range(runs):
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, 'numpy') else t, fn())
    finally:
      tf.profiler.experimental.stop()
    paths = glob.glob(os.path.join(logdir, '**', '*.xplane.pb'), recursive=True)
    if not paths:
      raise RuntimeError(f'TF\'s profiler wrote no .xplane.pb under {logdir}')
    total = collections.Counter()
    for path in paths:
      total.update(op_seconds_from_xspace(_parse(path)))
    return {k: v / runs for k, v in total.items()}
  finally:
    shutil.rmtree(logdir, ignore_errors=True)
