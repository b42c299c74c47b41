"""Gradient-free evaluation of per-example functions in chunks.

Each chunk is one iteration of a sequential `tf.while_loop` (parallel_iterations=1), so in eager
mode and in graph mode alike only one chunk's activations are alive at a time and none are kept
for a backward pass.
"""

import tensorflow as tf


def chunked_map(fn, images, indices, chunk_size, like=None):
  """Computes stop_gradient(fn(images[indices])) chunk by chunk; fn never sees an empty batch.

  Args:
    fn: per-example function, [m, ...] images -> nest of [m, ...] tensors.
    images: [n, size, size, 3] with n >= 1.
    indices: [m] int32 rows of `images` to process (may be empty).
    chunk_size: Python int > 0, rows per chunk.
    like: optional nest shaped like fn's output (tensors or TensorSpecs: dtypes and trailing
      shapes). If None: in a traced function, the one trace of fn that the loop calls
      (traced_rows_function) gives them; in eager mode (or
      when fn's trailing shapes are not static) the first chunk is computed before the loop
      and gives them, and with an empty `indices` that chunk is one row (image 0) whose
      output is dropped, so the network still runs on a non-empty batch (oneDNN's Conv2D
      returns wrong shapes on zero rows on some CPUs). The loop never runs fn on zero rows.
  Returns:
    A nest like `like` of [m, ...] tensors, in the order of `indices`.
  """
  if chunk_size <= 0:
    raise ValueError(f'chunk_size must be positive; got {chunk_size}')
  static_num = indices.shape[0]
  if static_num is not None and 0 < static_num <= chunk_size:
    # One chunk holds every row, known when tracing: no loop, and static shapes (the MAC
    # profiler counts a loop body once, whatever its iterations).
    return tf.nest.map_structure(tf.stop_gradient, fn(tf.gather(images, indices)))
  if like is None and not tf.executing_eagerly():
    traced = traced_rows_function(fn, images)
    if traced is not None:  # the loop body calls the one trace of fn
      fn, like = traced, tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype),
                                               traced.structured_outputs)
  if like is None:
    if static_num:  # known and non-empty: static shapes
      first = tf.nest.map_structure(tf.stop_gradient,
                                    fn(tf.gather(images, indices[:chunk_size])))
    else:
      num = tf.shape(indices)[0]
      first_rows = tf.cond(num > 0, lambda: indices[:chunk_size],
                           lambda: tf.zeros([1], indices.dtype))
      kept = tf.minimum(num, chunk_size)
      first = tf.nest.map_structure(lambda t: tf.stop_gradient(t)[:kept],
                                    fn(tf.gather(images, first_rows)))
    # The loop does not read `first`, so nothing would stop both from running at once, with
    # two chunks' activations alive: the loop starts after the first chunk.
    with tf.control_dependencies(tf.nest.flatten(first)):
      rest_indices = tf.identity(indices[chunk_size:])
    rest = chunked_map(fn, images, rest_indices, chunk_size, like=first)
    return tf.nest.map_structure(lambda a, b: tf.concat([a, b], 0), first, rest)
  likes = tf.nest.flatten(like)
  specs = [(t.dtype, t.shape[1:]) for t in likes]
  num = tf.shape(indices)[0]
  num_chunks = (num + chunk_size - 1) // chunk_size
  arrays = [tf.TensorArray(dtype, size=num_chunks, infer_shape=False,
                           element_shape=tf.TensorShape([None]).concatenate(shape))
            for dtype, shape in specs]

  def body(i, arrays):
    start = i * chunk_size
    chunk = indices[start:tf.minimum(start + chunk_size, num)]
    outputs = tf.nest.flatten(fn(tf.gather(images, chunk)))
    return i + 1, [a.write(i, tf.stop_gradient(o)) for a, o in zip(arrays, outputs)]

  _, arrays = tf.while_loop(lambda i, _: i < num_chunks, body, (tf.constant(0), arrays),
                            parallel_iterations=1)
  outputs = []
  for (dtype, shape), array, like_t in zip(specs, arrays, likes):
    if shape.is_fully_defined():
      empty_shape = [0] + shape.as_list()
    elif isinstance(like_t, tf.TensorSpec):
      raise ValueError(f'chunked_map: a TensorSpec in `like` needs static trailing dimensions; '
                       f'got {like_t}')
    else:
      empty_shape = tf.concat([[0], tf.shape(like_t)[1:]], 0)
    out = tf.cond(num_chunks > 0, array.concat,
                  lambda dtype=dtype, empty_shape=empty_shape: tf.zeros(empty_shape, dtype))
    outputs.append(tf.ensure_shape(out, tf.TensorShape([static_num]).concatenate(shape)))
  return tf.nest.pack_sequence_as(like, outputs)


def traced_rows_function(fn, images):
  """fn traced once (without AutoGraph, as Keras' train step is) into a concrete function of
  any number of rows of `images`, or None unless every trailing dimension of its outputs is
  static. In a traced step, chunked_map's loop body calls it: the trace that gives the loop
  its output shapes is the one the loop runs, and the step's graph holds one copy of fn (not
  a first chunk outside the loop, nor a second trace for the shapes)."""
  spec = tf.TensorSpec(tf.TensorShape([None]).concatenate(images.shape[1:]), images.dtype)
  traced = tf.function(lambda x: fn(x), autograph=False).get_concrete_function(spec)
  if not all(t.shape[1:].is_fully_defined() for t in tf.nest.flatten(traced.structured_outputs)):
    return None
  return traced


def output_like(fn, images, static=True):
  """TensorSpecs of fn's outputs on a chunk of `images` (any number of rows), from a trace of
  fn into a function that never runs; None unless every trailing dimension is static. In a
  traced step this replaces computing a first chunk outside the loop for its shapes: the
  step's graph holds one copy of the network fewer, which TF's graph optimiser no longer
  processes, and every chunk runs in the loop. static=False: the specs whatever their
  trailing dimensions."""
  spec = tf.TensorSpec(tf.TensorShape([None]).concatenate(images.shape[1:]), images.dtype)
  outputs = tf.function(fn).get_concrete_function(spec).structured_outputs
  specs = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), outputs)
  if static and not all(s.shape[1:].is_fully_defined() for s in tf.nest.flatten(specs)):
    return None
  return specs


def chunked_apply(fn, images, chunk_size):
  """stop_gradient(fn(images)) over all rows, `chunk_size` rows at a time."""
  return chunked_map(fn, images, tf.range(tf.shape(images)[0]), chunk_size)
