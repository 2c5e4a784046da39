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
    return tf_projection(self.seed, indices, self.num_columns, self.std)

  def matrix(self):
    """The whole matrix as a NumPy array (only sensible for small projections)."""
    return numpy_projection(self.seed, np.arange(self.num_rows), self.num_columns, self.std)
