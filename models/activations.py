"""The activation registry: each activation a quine may use, named once with all its forms.

A `ModelConfig` names its hidden and output activations; every consumer looks the name up here:
the Keras model and the exported graphs (`tensorflow`), the fixed-point solver (`tensorflow`, its
derivative by autodiff, and `smooth` for the continuation over a kink), the ONNX graph (converted
by tf2onnx from the TensorFlow form, into the ops `onnx_ops`), the NumPy and PyTorch replicas
(`numpy`, `torch`) and the dump's manifest (`formula`). Adding an activation is one `register`
call; a test registers a toy one and runs it through training, export and replication.

Each form takes (x, params), params being a dict of the ModelConfig fields the entry lists in
`params` (e.g. {'frequency': 30.0} for `sin`). The frameworks are imported only when a form runs,
so this module needs neither TensorFlow nor PyTorch.
"""

import dataclasses
from typing import Callable, Optional

import numpy as np

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


@dataclasses.dataclass(frozen=True)
class Activation:
  """One activation and everything each consumer needs of it.

  Attributes:
    name: the name a ModelConfig uses.
    formula: what the manifest prints, formatted with the params (`{frequency}`).
    tensorflow: (x, params) -> y on tf tensors.
    numpy: (x, params) -> y on float32 NumPy arrays, in float32 arithmetic.
    torch: (x, params) -> y on torch tensors.
    onnx_ops: the ONNX operators the TensorFlow form converts to (the exported graph has them).
    smooth: for activations with a kink (a jump of the derivative), (x, beta, params) -> y: the
      TensorFlow form with the kink rounded off over a width ~beta > 0, tending to `tensorflow` as
      beta -> 0 (the fixed-point solver's continuation). None for smooth activations.
    bounds: (low, high) of the range of a bounded activation, else None.
    params: names of the ModelConfig fields the forms read.
  """
  name: str
  formula: str
  tensorflow: Callable
  numpy: Callable
  torch: Callable
  onnx_ops: tuple
  smooth: Optional[Callable] = None
  bounds: Optional[tuple] = None
  params: tuple = ()

  @property
  def kinked(self):
    return self.smooth is not None

  def describe(self, params):
    """The manifest's formula with the params filled in."""
    return self.formula.format(**params)


_REGISTRY = {}


def register(activation, replace=False):
  """Adds `activation` to the registry (replace=True to redefine a name); returns it."""
  if activation.name in _REGISTRY and not replace:
    raise ValueError(f'activation {activation.name!r} is already registered')
  _REGISTRY[activation.name] = activation
  return activation


def unregister(name):
  """Removes an activation (for tests that register a toy one)."""
  _REGISTRY.pop(name, None)


def get(name):
  """The registered Activation called `name`.

  Raises:
    ValueError: no activation has that name.
  """
  if name not in _REGISTRY:
    raise ValueError(f'unknown activation {name!r}; registered: {names()}')
  return _REGISTRY[name]


def names():
  """The registered names, in registration order."""
  return tuple(_REGISTRY)


def _tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf


def _torch():
  import torch  # pylint: disable=g-import-not-at-top
  return torch


def _smooth_selu(x, beta, params):
  """SELU with max(x, 0) and min(x, 0) replaced by +-beta * softplus(+-x / beta)."""
  del params
  tf = _tf()
  pos = beta * tf.nn.softplus(x / beta)
  neg = -beta * tf.nn.softplus(-x / beta)
  return SELU_SCALE * (pos + SELU_ALPHA * tf.math.expm1(neg))


def _numpy_selu(x, params):
  del params
  alpha, scale = np.float32(SELU_ALPHA), np.float32(SELU_SCALE)
  return scale * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


def _frequency(params):
  return float(params['frequency'])


register(Activation(
    name='selu',
    formula='scale * (x if x > 0 else alpha * (exp(x) - 1)), alpha = 1.6732632423543772848170429916'
            '717, scale = 1.0507009873554804934193349852946 (tf.nn.selu, torch.nn.functional.selu)',
    tensorflow=lambda x, p: _tf().nn.selu(x),
    numpy=_numpy_selu,
    torch=lambda x, p: _torch().nn.functional.selu(x),
    onnx_ops=('Selu',),
    smooth=_smooth_selu))

register(Activation(
    name='relu',
    formula='max(x, 0)',
    tensorflow=lambda x, p: _tf().nn.relu(x),
    numpy=lambda x, p: np.maximum(x, np.float32(0)),
    torch=lambda x, p: _torch().relu(x),
    onnx_ops=('Relu',),
    smooth=lambda x, beta, p: beta * _tf().nn.softplus(x / beta)))

register(Activation(
    name='tanh',
    formula='tanh(x)',
    tensorflow=lambda x, p: _tf().math.tanh(x),
    numpy=lambda x, p: np.tanh(x),
    torch=lambda x, p: _torch().tanh(x),
    onnx_ops=('Tanh',),
    bounds=(-1.0, 1.0)))

# SIREN's periodic activation (Sitzmann et al. 2020): sin(frequency * x).
register(Activation(
    name='sin',
    formula='sin(frequency * x), frequency = {frequency!r}',
    tensorflow=lambda x, p: _tf().math.sin(_frequency(p) * x),
    numpy=lambda x, p: np.sin(np.float32(_frequency(p)) * x),
    torch=lambda x, p: _torch().sin(_frequency(p) * x),
    onnx_ops=('Sin',),
    bounds=(-1.0, 1.0),
    params=('frequency',)))

register(Activation(
    name='linear',
    formula='x',
    tensorflow=lambda x, p: x,
    numpy=lambda x, p: x,
    torch=lambda x, p: x,
    onnx_ops=()))
