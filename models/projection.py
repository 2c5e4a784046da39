"""The fixed random projections of a quine, generated on the fly from a counter-based hash.

A quine maps the index c of one of its weights to a vector of hidden units through a fixed random
projection: conceptually the one-hot vector of c times an N x d random matrix, that is, row c of
that matrix. The matrix is not a weight of the network (it would be larger than the network it
describes), so it must be reproducible exactly, by TensorFlow and by any other framework that
rebuilds the forward pass from an export, without storing N x d numbers.

Every entry is therefore a pure function of (seed, row, column), built from 32-bit unsigned integer
arithmetic that wraps modulo 2**32 (MurmurHash3's finaliser, `fmix32`):

    key   = fmix32(seed ^ 0x9E3779B9)
    r     = fmix32(row ^ key)
    h     = fmix32(r ^ (column * 0x85EBCA77 + 0x165667B1))
    value = (float32(h >> 8) * 2**-23 - 1) * (std * sqrt(3))

`float32(h >> 8) * 2**-23 - 1` is exact in float32 and uniform on [-1, 1) in steps of 2**-23; the
one multiplication by the scale is a single IEEE rounding, so every framework gets the same bits.
The entries have mean ~0 and standard deviation `std`. `numpy_projection` is the reference.
"""

import math

import numpy as np
import tensorflow as tf

_GOLDEN = 0x9E3779B9
_COLUMN_MUL = 0x85EBCA77
_COLUMN_ADD = 0x165667B1


def _fmix32_np(h):
  h = np.asarray(h, np.uint32)
  h ^= h >> np.uint32(16)
  h *= np.uint32(0x85EBCA6B)
  h ^= h >> np.uint32(13)
  h *= np.uint32(0xC2B2AE35)
  h ^= h >> np.uint32(16)
  return h


def numpy_projection(seed, rows, num_columns, std):
  """Reference implementation: the projection rows for `rows`, as float32 [len(rows), num_columns].

  Args:
    seed: non-negative integer below 2**32 naming the projection.
    rows: integer array of row indices (coordinates), each below 2**32.
    num_columns: number of columns (hidden units the projection feeds).
    std: standard deviation of the entries.

  Returns:
    A float32 NumPy array of shape [len(rows), num_columns].
  """
  with np.errstate(over='ignore'):
    key = _fmix32_np(np.uint32(seed) ^ np.uint32(_GOLDEN))
    r = _fmix32_np(np.asarray(rows, np.uint32) ^ key)
    cols = np.arange(num_columns, dtype=np.uint32) * np.uint32(_COLUMN_MUL) + np.uint32(_COLUMN_ADD)
    h = _fmix32_np(r[:, None] ^ cols[None, :])
  unit = (h >> np.uint32(8)).astype(np.float32) * np.float32(2.0**-23) - np.float32(1.0)
  return unit * np.float32(std * math.sqrt(3.0))


def _fmix32_tf(h):
  h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, tf.constant(16, tf.uint32)))
  h = h * tf.constant(0x85EBCA6B, tf.uint32)
  h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, tf.constant(13, tf.uint32)))
  h = h * tf.constant(0xC2B2AE35, tf.uint32)
  h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, tf.constant(16, tf.uint32)))
  return h


def tf_projection(seed, rows, num_columns, std):
  """TensorFlow implementation of `numpy_projection`, bit-for-bit equal to it.

  Args:
    seed: Python integer seed.
    rows: integer tensor [B] of row indices.
    num_columns: Python integer.
    std: Python float.

  Returns:
    A float32 tensor [B, num_columns].
  """
  key = int(_fmix32_np(np.uint32(seed) ^ np.uint32(_GOLDEN)))
  r = _fmix32_tf(tf.bitwise.bitwise_xor(tf.cast(rows, tf.uint32), tf.constant(key, tf.uint32)))
  with np.errstate(over='ignore'):
    cols = tf.constant(np.arange(num_columns, dtype=np.uint32) * np.uint32(_COLUMN_MUL)
                       + np.uint32(_COLUMN_ADD))
  h = _fmix32_tf(tf.bitwise.bitwise_xor(r[:, None], cols[None, :]))
  unit = (tf.cast(tf.bitwise.right_shift(h, tf.constant(8, tf.uint32)), tf.float32)
          * tf.constant(2.0**-23, tf.float32) - 1.0)
  return unit * tf.constant(std * math.sqrt(3.0), tf.float32)


class Projection:
  """A fixed random projection: `rows(indices)` returns rows of a virtual [num_rows, d] matrix.

  Small matrices are materialised once as a constant table (a gather is cheaper than hashing);
  large ones are hashed on the fly, so memory never grows as num_rows x d. Both paths give the same
  bits. The projection holds no variables: it is not part of the quine's weights or checkpoints.
  """

  def __init__(self, seed, num_rows, num_columns, std, max_table_entries=1 << 24):
    self.seed = int(seed)
    self.num_rows = int(num_rows)
    self.num_columns = int(num_columns)
    self.std = float(std)
    self._table = None
    self._hash = self._uncompiled_hash
    if self.num_rows * self.num_columns <= max_table_entries:
      self._table = tf.constant(
          numpy_projection(self.seed, np.arange(self.num_rows), self.num_columns, self.std))

  @property
  def materialised(self):
    return self._table is not None

  def rows(self, indices):
    """Rows of the projection matrix for integer `indices` [B] -> float32 [B, d]."""
    if self._table is not None:
      return tf.gather(self._table, indices)
    return self._hash(indices)

  def _uncompiled_hash(self, indices):
    return tf_projection(self.seed, indices, self.num_columns, self.std)

  def compile_hash(self):
    """Computes hashed rows with one XLA-compiled function from now on (no-op for a table).

    Op by op, the hash is a dozen uint32 kernels each writing a [B, d] temporary; XLA fuses them
    into one loop, which makes the full pass of a width-316..1000 quine 1.3-1.5x faster
    (benchmarks/README.md). Only for training: exported graphs keep the plain ops, which every
    converter understands. Checks on a few rows that the compiled hash gives exactly the reference
    bits.

    Raises:
      AssertionError: the compiled hash does not reproduce `numpy_projection`.
    """
    if self._table is not None:
      return
    compiled = tf.function(self._uncompiled_hash, jit_compile=True)
    probe = np.array([0, 1, self.num_rows // 2, self.num_rows - 1], np.int32)
    expected = numpy_projection(self.seed, probe, self.num_columns, self.std)
    if not np.array_equal(compiled(tf.constant(probe)).numpy().view(np.uint32),
                          expected.view(np.uint32)):
      raise AssertionError('the XLA-compiled projection hash does not reproduce the reference')
    self._hash = compiled

  def matrix(self):
    """The whole matrix as a NumPy array (only sensible for small projections)."""
    return numpy_projection(self.seed, np.arange(self.num_rows), self.num_columns, self.std)
