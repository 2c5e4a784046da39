"""Tests of the counter-hash projection: one spec, three implementations, the same bits."""

import math

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from models import generator
from models import projection


def _fmix32(h):
  """MurmurHash3's finaliser on Python integers (the spec in the module docstring)."""
  h ^= h >> 16
  h = (h * 0x85EBCA6B) & 0xFFFFFFFF
  h ^= h >> 13
  h = (h * 0xC2B2AE35) & 0xFFFFFFFF
  h ^= h >> 16
  return h


def _spec_entry(seed, row, column, std):
  """One entry, straight from the docstring's formula, in Python integers and float32."""
  key = _fmix32(seed ^ 0x9E3779B9)
  r = _fmix32(row ^ key)
  h = _fmix32(r ^ ((column * 0x85EBCA77 + 0x165667B1) & 0xFFFFFFFF))
  unit = np.float32(h >> 8) * np.float32(2.0**-23) - np.float32(1.0)
  return np.float32(unit * np.float32(std * math.sqrt(3.0)))


def _bits(x):
  return np.asarray(x, np.float32).view(np.uint32)


class ProjectionTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ('small', 0, 7, 0.1),
      ('odd_seed', 12345, 5, 0.0577),
      ('large_seed', 2**32 - 2, 3, 1.0),
  )
  def test_numpy_reference_matches_the_spec(self, seed, num_columns, std):
    rows = np.array([0, 1, 2, 999, 2**31 - 1, 2**32 - 1], np.int64)
    got = generator.projection_rows(seed, rows, num_columns, std)
    want = np.array([[_spec_entry(seed, int(r), c, std) for c in range(num_columns)]
                     for r in rows], np.float32)
    self.assertEqual(got.dtype, np.float32)
    self.assertEqual(got.shape, (len(rows), num_columns))
    np.testing.assert_array_equal(_bits(got), _bits(want))

  @parameterized.named_parameters(
      ('int32_rows', 0, tf.int32, 9, 0.3),
      ('int64_rows', 7, tf.int64, 16, 0.0577),
      ('one_column', 2**31 + 5, tf.int64, 1, 2.5),
  )
  def test_tf_is_bit_identical_to_numpy(self, seed, dtype, num_columns, std):
    rows = np.array([0, 3, 17, 20099, 2**31 - 1], np.int64)
    if dtype == tf.int64:
      rows = np.append(rows, [2**31, 2**32 - 1])
    got = projection.tf_projection(seed, tf.constant(rows, dtype), num_columns, std)
    want = generator.projection_rows(seed, rows, num_columns, std)
    self.assertEqual(got.dtype, tf.float32)
    np.testing.assert_array_equal(_bits(got.numpy()), _bits(want))

  def test_tf_projection_is_bit_identical_inside_tf_function(self):
    rows = tf.range(50)
    fn = tf.function(lambda r: projection.tf_projection(3, r, 11, 0.2))
    np.testing.assert_array_equal(
        _bits(fn(rows).numpy()), _bits(generator.projection_rows(3, np.arange(50), 11, 0.2)))

  def test_hashed_path_equals_materialised_table(self):
    table = projection.Projection(seed=5, num_rows=40, num_columns=6, std=0.1)
    hashed = projection.Projection(seed=5, num_rows=40, num_columns=6, std=0.1,
                                   max_table_entries=0)
    self.assertTrue(table.materialised)
    self.assertFalse(hashed.materialised)
    indices = tf.constant([0, 39, 7, 7, 21], tf.int32)
    np.testing.assert_array_equal(_bits(table.rows(indices).numpy()),
                                  _bits(hashed.rows(indices).numpy()))
    np.testing.assert_array_equal(
        _bits(table.rows(tf.range(40)).numpy()), _bits(table.matrix()))
    np.testing.assert_array_equal(_bits(hashed.matrix()), _bits(table.matrix()))

  def test_compiled_hash_is_bit_identical_to_numpy(self):
    hashed = projection.Projection(seed=9, num_rows=5000, num_columns=37, std=0.3,
                                   max_table_entries=0)
    hashed.compile_hash()
    rows = np.array([0, 1, 2, 4095, 4999, 1234, 1234], np.int32)
    np.testing.assert_array_equal(
        _bits(hashed.rows(tf.constant(rows)).numpy()),
        _bits(generator.projection_rows(9, rows, 37, 0.3)))
    inside = tf.function(lambda r: hashed.rows(r) * 1.0)  # called from a plain graph too
    np.testing.assert_array_equal(_bits(inside(tf.range(5000)).numpy()), _bits(hashed.matrix()))

  def test_table_is_materialised_up_to_max_table_entries(self):
    self.assertTrue(projection.Projection(0, 10, 4, 0.1, max_table_entries=40).materialised)
    self.assertFalse(projection.Projection(0, 10, 4, 0.1, max_table_entries=39).materialised)

  @parameterized.parameters(0.0577, 1.0, 3.0)
  def test_entries_have_zero_mean_and_requested_std(self, std):
    m = generator.projection_rows(11, np.arange(2000), 64, std).astype(np.float64)
    # 128,000 uniform entries: the sample mean's standard error is std / 358.
    self.assertLess(abs(m.mean()), 0.02 * std)
    self.assertAllClose(m.std(), std, rtol=0.01)
    # Uniform on [-sqrt(3) std, sqrt(3) std).
    self.assertGreaterEqual(m.min(), -math.sqrt(3.0) * std * (1 + 1e-6))
    self.assertLess(m.max(), math.sqrt(3.0) * std)

  def test_different_seeds_differ(self):
    a = generator.projection_rows(0, np.arange(100), 8, 0.1)
    b = generator.projection_rows(1, np.arange(100), 8, 0.1)
    self.assertLess(np.mean(a == b), 0.01)

  def test_rows_and_columns_differ(self):
    m = generator.projection_rows(0, np.arange(100), 8, 0.1)
    self.assertLen(np.unique(m), m.size)  # no repeated entry in 800 draws from 2**24 levels

  def test_projection_is_deterministic(self):
    a = projection.Projection(9, 30, 5, 0.2, max_table_entries=0).rows(tf.range(30))
    b = projection.Projection(9, 30, 5, 0.2, max_table_entries=0).rows(tf.range(30))
    np.testing.assert_array_equal(_bits(a.numpy()), _bits(b.numpy()))


if __name__ == '__main__':
  tf.test.main()
