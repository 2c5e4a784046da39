"""The few operations `models.architecture` needs, in NumPy, TensorFlow and PyTorch.

A backend runs the architecture's one forward pass in its framework's own float32 arithmetic. The
frameworks are imported when a backend is made, so `NUMPY` needs NumPy alone.
"""

import numpy as np


class Backend:
  """Interface: matmul, zero padding on the unit axis, first column, division, activations."""

  name = 'backend'

  def matmul(self, a, b):
    raise NotImplementedError

  def concat(self, parts):
    """Concatenation along axis 1 (hidden units)."""
    raise NotImplementedError

  def pad(self, x, left=0, right=0):
    """x [B, d] with `left` zero columns before and `right` after."""
    raise NotImplementedError

  def first_column(self, x):
    return x[:, 0]

  def divide(self, x, value):
    """x / value, value a Python float rounded to float32 once."""
    raise NotImplementedError

  def activate(self, activation, x, params):
    """The registry entry's form for this framework."""
    return getattr(activation, self.name)(x, params)

  def standardise(self, kernel, gain):
    """gain * kernel / (rms(kernel) * sqrt(fan_in)), fan_in = kernel.shape[0]."""
    raise NotImplementedError


def standardise_scale(kernel, gain):
  """gain / sqrt(fan_in), the constant every backend multiplies by (in the kernel's dtype).

  fan_in is the kernel's second-to-last axis: [in, out], or [..., in, out] for a stack of them.
  """
  return float(gain) / float(np.sqrt(int(kernel.shape[-2])))


class NumpyBackend(Backend):
  name = 'numpy'

  def matmul(self, a, b):
    return a @ b

  def concat(self, parts):
    return np.concatenate(parts, axis=1)

  def pad(self, x, left=0, right=0):
    return np.pad(x, ((0, 0), (left, right)))

  def divide(self, x, value):
    return x / np.float32(value)

  def standardise(self, kernel, gain):
    scale = kernel.dtype.type(standardise_scale(kernel, gain))
    return kernel * scale / np.sqrt(np.mean(np.square(kernel)))


class TensorFlowBackend(Backend):
  name = 'tensorflow'

  def __init__(self):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._tf = tf

  def matmul(self, a, b):
    return self._tf.matmul(a, b)

  def concat(self, parts):
    return self._tf.concat(parts, axis=-1)

  def pad(self, x, left=0, right=0):
    tf = self._tf
    rows = tf.shape(x)[0]
    parts = ([tf.zeros([rows, left], x.dtype)] if left else []) + [x] + (
        [tf.zeros([rows, right], x.dtype)] if right else [])
    return tf.concat(parts, axis=-1)

  def divide(self, x, value):
    return x / value

  def standardise(self, kernel, gain):
    tf = self._tf
    scale = tf.constant(standardise_scale(kernel, gain), kernel.dtype)
    return kernel * scale / tf.sqrt(tf.reduce_mean(tf.square(kernel)))


class TorchBackend(Backend):
  name = 'torch'

  def __init__(self):
    import torch  # pylint: disable=g-import-not-at-top
    self._torch = torch

  def matmul(self, a, b):
    return a @ b

  def concat(self, parts):
    return self._torch.cat(parts, dim=1)

  def pad(self, x, left=0, right=0):
    return self._torch.nn.functional.pad(x, (left, right))

  def divide(self, x, value):
    return x / self._torch.tensor(np.float32(value))

  def standardise(self, kernel, gain):
    scale = self._torch.tensor(standardise_scale(kernel, gain), dtype=kernel.dtype)
    return kernel * scale / kernel.square().mean().sqrt()


NUMPY = NumpyBackend()
_CACHE = {}


def tensorflow():
  """The TensorFlow backend (imports TensorFlow)."""
  if 'tensorflow' not in _CACHE:
    _CACHE['tensorflow'] = TensorFlowBackend()
  return _CACHE['tensorflow']


def torch():
  """The PyTorch backend (imports torch)."""
  if 'torch' not in _CACHE:
    _CACHE['torch'] = TorchBackend()
  return _CACHE['torch']
