"""A quine's fixed random projections in TensorFlow, hashed on the fly or held as a table.

A quine maps the index c of one of its weights to a vector of hidden units through a fixed random
projection: row c of a virtual N x d matrix whose entries are a pure function of (seed, row,
column). `models.generator` defines the generator and holds its NumPy reference
(`generator.projection_rows`); this module is its TensorFlow form, bit-for-bit equal, and the
`Projection` the Keras model uses (a table for small matrices, the hash for large ones).
"""

import numpy as np
import tensorflow as tf

from models import generator


def _fmix32_tf(h):
  h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, tf.constant(16, tf.uint32)))
  h = h * tf.constant(generator.FMIX_MUL_1, tf.uint32)
  h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, tf.constant(13, tf.uint32)))
  h = h * tf.constant(generator.FMIX_MUL_2, tf.uint32)
  h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, tf.constant(16, tf.uint32)))
  return h


def tf_projection(seed, rows, num_columns, std):
  """TensorFlow implementation of `generator.projection_rows`, bit-for-bit equal to it.

  Args:
    seed: Python integer seed.
    rows: integer tensor [B] of row indices.
    num_columns: Python integer.
    std: Python float.

  Returns:
    A float32 tensor [B, num_columns].
  """
  key = tf.constant(generator.seed_key(seed), tf.uint32)
  r = _fmix32_tf(tf.bitwise.bitwise_xor(tf.cast(rows, tf.uint32), key))
  cols = tf.constant(generator.column_codes(num_columns))
  h = _fmix32_tf(tf.bitwise.bitwise_xor(r[:, None], cols[None, :]))
  unit = (tf.cast(tf.bitwise.right_shift(h, tf.constant(8, tf.uint32)), tf.float32)
          * tf.constant(2.0**-23, tf.float32) - 1.0)
  return unit * tf.constant(generator.scale(std), tf.float32)


class Projection:
  """A fixed random projection: `rows(indices)` returns rows of a virtual [num_rows, d] matrix.

  Small matrices are materialised once as a constant table (a gather is cheaper than hashing);
  large ones are hashed on the fly, so memory never grows as num_rows x d. Both paths give the same
  bits. The projection holds no variables: it is not part of the quine's weights or checkpoints.
  """

  def __init__(self, seed, num_rows, num_columns, std,
               max_table_entries=generator.MAX_TABLE_ENTRIES):
    self.seed = int(seed)
    self.num_rows = int(num_rows)
    self.num_columns = int(num_columns)
    self.std = float(std)
    self._table = None
    self._hash = self._uncompiled_hash
    if self.num_rows * self.num_columns <= max_table_entries:
      self._table = tf.constant(
          generator.projection_rows(self.seed, np.arange(self.num_rows), self.num_columns, self.std))

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
      AssertionError: the compiled hash does not reproduce `generator.projection_rows`.
    """
    if self._table is not None:
      return
    compiled = tf.function(self._uncompiled_hash, jit_compile=True)
    probe = np.array([0, 1, self.num_rows // 2, self.num_rows - 1], np.int32)
    expected = generator.projection_rows(self.seed, probe, self.num_columns, self.std)
    if not np.array_equal(compiled(tf.constant(probe)).numpy().view(np.uint32),
                          expected.view(np.uint32)):
      raise AssertionError('the XLA-compiled projection hash does not reproduce the reference')
    self._hash = compiled

  def matrix(self):
    """The whole matrix as a NumPy array (only sensible for small projections)."""
    return generator.projection_rows(self.seed, np.arange(self.num_rows), self.num_columns, self.std)
