"""The generator of a quine's fixed random projections, in NumPy alone.

A quine maps the index c of one of its weights to hidden units through a fixed random projection:
row c of a virtual [num_rows, num_columns] matrix. The matrix is not a weight of the network (it
would be larger than the network it describes), so every framework that rebuilds the forward pass
must reproduce it exactly without storing it. Every entry is a pure function of (seed, row,
column), built from 32-bit unsigned integer arithmetic that wraps modulo 2**32 (MurmurHash3's
finaliser, `fmix32`); `DEFINITION` states it in words and `projection_rows` is the reference.

This module imports NumPy only, so that a dump can be read and replicated without TensorFlow.
`models.projection` builds the TensorFlow version on it; `export.frameworks` the PyTorch one.
"""

import math

import numpy as np

NAME = 'fmix32-uniform-v1'
GOLDEN = 0x9E3779B9
COLUMN_MUL = 0x85EBCA77
COLUMN_ADD = 0x165667B1
FMIX_MUL_1 = 0x85EBCA6B
FMIX_MUL_2 = 0xC2B2AE35
# Projections of up to this many entries are materialised as tables (in the Keras model and in the
# ONNX graph): a gather is cheaper than hashing. Larger ones are hashed on the fly.
MAX_TABLE_ENTRIES = 1 << 24

DEFINITION = [
    'All integer arithmetic on uint32, wrapping modulo 2**32.',
    'fmix32(h): h ^= h >> 16; h *= 0x85EBCA6B; h ^= h >> 13; h *= 0xC2B2AE35; h ^= h >> 16',
    'key = fmix32(seed ^ 0x9E3779B9)',
    'r = fmix32(row ^ key)',
    'h = fmix32(r ^ (column * 0x85EBCA77 + 0x165667B1))',
    'value = (float32(h >> 8) * 2**-23 - 1) * float32(std * sqrt(3))   # float32 arithmetic',
    'The first two float32 operations are exact, the last one rounds once: every framework gets '
    'the same bits.',
]


def fmix32(h):
  """MurmurHash3's 32-bit finaliser on uint32 arrays (wrapping arithmetic; returns a copy)."""
  h = np.array(h, np.uint32)
  with np.errstate(over='ignore'):
    h ^= h >> np.uint32(16)
    h *= np.uint32(FMIX_MUL_1)
    h ^= h >> np.uint32(13)
    h *= np.uint32(FMIX_MUL_2)
    h ^= h >> np.uint32(16)
  return h


def seed_key(seed):
  """The per-projection key fmix32(seed ^ GOLDEN), as a Python int."""
  return int(fmix32(np.uint32(seed) ^ np.uint32(GOLDEN)))


def column_codes(num_columns):
  """column * COLUMN_MUL + COLUMN_ADD (mod 2**32) for every column, uint32 [num_columns]."""
  with np.errstate(over='ignore'):
    return np.arange(num_columns, dtype=np.uint32) * np.uint32(COLUMN_MUL) + np.uint32(COLUMN_ADD)


def scale(std):
  """The one float32 multiplier std * sqrt(3), rounded once (every framework uses this value)."""
  return np.float32(std * math.sqrt(3.0))


def projection_rows(seed, rows, num_columns, std):
  """Reference implementation: the projection rows for `rows`, float32 [len(rows), num_columns].

  Args:
    seed: non-negative integer below 2**32 naming the projection.
    rows: integer array of row indices (coordinates), each below 2**32.
    num_columns: number of columns (hidden units the projection feeds).
    std: standard deviation of the entries (mean ~0, uniform on [-std*sqrt(3), std*sqrt(3))).

  Returns:
    A float32 NumPy array of shape [len(rows), num_columns].
  """
  r = fmix32(np.asarray(rows, np.uint32).reshape(-1) ^ np.uint32(seed_key(seed)))
  h = fmix32(r[:, None] ^ column_codes(num_columns)[None, :])
  unit = (h >> np.uint32(8)).astype(np.float32) * np.float32(2.0**-23) - np.float32(1.0)
  return unit * scale(std)
