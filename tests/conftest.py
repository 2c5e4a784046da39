"""Shared tiny fixtures and NumPy oracles for the quine tests, and the binaries run in-process.

The test classes are `tf.test.TestCase` / `absltest` (no pytest fixtures), so the shared pieces are
plain functions, imported as `from conftest import ...` (pytest puts `tests/` on sys.path, and so
does running a test file directly).

The oracles re-derive the forward pass from the definitions (one-hot coordinate times the
projection matrix, then the layers), in float64 NumPy, without going through the Keras layers.
"""

import contextlib
import dataclasses
import importlib
import logging as std_logging
import os
import sys
from unittest import mock

# Keep TensorFlow's C++ INFO lines out of test logs (set before TensorFlow is imported anywhere).
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import flags  # pylint: disable=g-import-not-at-top
from absl import logging  # pylint: disable=g-import-not-at-top
from absl.testing import flagsaver  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from models import generator  # pylint: disable=g-import-not-at-top
from models.config import ModelConfig  # pylint: disable=g-import-not-at-top

# absltest's create_tempdir() reads --test_tmpdir; under pytest nobody parses absl flags, so take
# the defaults (absltest.main() parses them when a test file is run directly).
if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()


def _split_the_cpu_in_two():
  """Two logical CPUs, so that MirroredStrategy runs with two replicas on one machine.

  Must happen before TensorFlow's runtime starts (the first op); ops still default to CPU:0.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  cpu = tf.config.list_physical_devices('CPU')[0]
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  except RuntimeError:  # the runtime already started (a test file run on its own, say)
    pass


_split_the_cpu_in_two()

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946

NUMPY_ACTIVATIONS = {
    'selu': lambda x: _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0))),
    'relu': lambda x: np.maximum(x, 0.0),
    'tanh': np.tanh,
    'linear': lambda x: x,
}


def numpy_activation(name, config):
  """The oracle's activation `name` of `config` (sin reads the config's frequency)."""
  if name == 'sin':
    return lambda x: np.sin(config.frequency * x)
  return NUMPY_ACTIVATIONS[name]


def tiny_model_config(**overrides):
  """A vanilla quine of width 4: N = 2 * 4 * 4 + 4 = 36 weights."""
  return dataclasses.replace(ModelConfig(width=4), **overrides)


def tiny_aux_config(**overrides):
  """An auxiliary quine of width 6 (3 coordinate + 3 image units), 5-pixel images, 3 classes.

  N = 2 * 6 * 6 + 6 + 6 * 3 = 96 weights. Temperature 0.1, so applying it twice would show.
  """
  return dataclasses.replace(
      ModelConfig(kind='auxiliary', width=6, coordinate_units=3, image_size=5, num_classes=3,
                  temperature=0.1), **overrides)


def tiny_train_config(model=None, **overrides):
  """The 'tiny' preset (width 4, batch 2, N = 36), never plotting mid-run, with overrides."""
  from trainers import configs  # pylint: disable=g-import-not-at-top
  base = configs.PRESETS['tiny']
  if model is not None:
    overrides['model'] = model
  return dataclasses.replace(base, plot_every=0, **overrides)


def numpy_kernels(model):
  """The model's kernels in canonical order, as float64 NumPy arrays."""
  return [np.asarray(v.numpy(), np.float64) for v in model.quine_variables]


def projection_matrix(config):
  """The coordinate projection as an explicit [N, units] matrix, from the NumPy reference."""
  units = config.coordinate_units if config.kind == 'auxiliary' else config.width
  return generator.projection_rows(
      config.projection_seed, np.arange(config.num_weights), units, config.projection_std
  ).astype(np.float64)


def image_matrix(config):
  """The auxiliary quine's image projection [image_size, width - coordinate_units]."""
  return generator.projection_rows(
      config.projection_seed + 1, np.arange(config.image_size),
      config.width - config.coordinate_units, config.image_projection_std).astype(np.float64)


def coordinate_rows(config, coordinates):
  """one_hot(c, N) @ projection matrix, for each coordinate: [B, units]."""
  return np.eye(config.num_weights)[np.asarray(coordinates)] @ projection_matrix(config)


def image_rows(config, images):
  """Flattened images @ image projection matrix: [B, width - coordinate_units]."""
  return np.asarray(images, np.float64).reshape(-1, config.image_size) @ image_matrix(config)


def numpy_heads(config, kernels, inputs):
  """(predicted weights [B], logits [B, classes] or None) for first-layer inputs [B, width].

  The logits are divided once by the temperature.
  """
  act = numpy_activation(config.activation, config)
  h = inputs
  for w in kernels[:config.num_hidden]:
    if config.kernel_norm == 'standardise':
      w = config.gain * w / (np.sqrt(np.mean(w * w)) * np.sqrt(w.shape[0]))
    h = act(h @ w)
  weights = numpy_activation(config.output_activation, config)(h @ kernels[config.num_hidden])[:, 0]
  logits = None
  if config.kind == 'auxiliary':
    logits = h @ kernels[config.num_hidden + 1] / config.temperature
  return weights, logits


def numpy_predict_weights(config, kernels, coordinates):
  """f(c) for each coordinate (an auxiliary quine's paired with a zero image)."""
  inputs = coordinate_rows(config, coordinates)
  if config.kind == 'auxiliary':
    inputs = np.concatenate(
        [inputs, np.zeros([len(inputs), config.width - config.coordinate_units])], axis=1)
  return numpy_heads(config, kernels, inputs)[0]


def fake_mnist(config, num_train=60, num_test=30, seed=0, separable=False):
  """Random images and labels shaped for `config`; `separable` makes the class a pixel's brightness."""
  from trainers import data as data_lib  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  k, p = config.num_classes, config.image_size

  def split(n):
    labels = rng.integers(0, k, n).astype(np.int32)
    images = rng.random((n, p), dtype=np.float32) * 0.1
    if separable:  # class c lights up pixel c: linearly separable
      images[np.arange(n), labels] = 1.0
    return images, labels

  return data_lib.Mnist(*split(num_train), *split(num_test))


def aux_train_config(**overrides):
  """The auxiliary 'tiny' preset on tiny_aux_config(), never plotting mid-run, with overrides."""
  from trainers import configs  # pylint: disable=g-import-not-at-top
  return dataclasses.replace(configs.AUX_PRESETS['tiny'], model=tiny_aux_config(), plot_every=0,
                             **overrides)


# ------------------------------------------------------------------ the binaries, in this process
#
# A binary's bad command line is tested by parsing it and calling main(argv) here, as app.run
# would, instead of starting a process that imports TensorFlow (seconds each). The binaries define
# flags of the same names (--preset, --data_dir, --workdir, ...), which absl defines only once in a
# process: each binary is imported alone, with its own copy of any module of ours that defines
# flags (trainers/cli.py), and its flags stay out of absl's FLAGS except inside command_line().

_FLAGS = flags.FLAGS
_BINARIES = {}  # module name -> (the binary's module, {flag name: (Flag, module name, id)})


def _defined_by_us(name):
  """Whether flag `name` was defined by this repository's code (not absl's or TensorFlow's)."""
  module = sys.modules.get(_FLAGS.find_module_defining_flag(name) or '')
  path = os.path.abspath(getattr(module, '__file__', None) or os.sep)
  return path.startswith(REPO_ROOT + os.sep) and not path.startswith(sys.prefix + os.sep)


def _take_out(names):
  """Removes flags `names` from FLAGS; returns them for _put_back.

  Also the modules that declared each one a key flag (what their --help lists): removing a flag
  from FLAGS forgets that.
  """
  taken = {}
  key_modules = {}
  for module, key_flags in _FLAGS.key_flags_by_module_dict().items():
    for flag in key_flags:
      key_modules.setdefault(flag.name, []).append(module)
  for name in names:
    taken[name] = (_FLAGS[name], _FLAGS.find_module_defining_flag(name),
                   _FLAGS.find_module_id_defining_flag(name), key_modules.get(name, []))
    delattr(_FLAGS, name)
  return taken


def _put_back(taken):
  """Defines again in FLAGS the flags _take_out removed."""
  for name, (flag, module_name, module_id, key_modules) in taken.items():
    _FLAGS[name] = flag
    if module_name:
      _FLAGS.register_flag_by_module(module_name, flag)
      _FLAGS.register_flag_by_module_id(module_id, flag)
    for module in key_modules:
      _FLAGS.register_key_flag_for_module(module, flag)


def _ours():
  """The names of the flags in FLAGS that this repository's code defined."""
  return [name for name in list(_FLAGS) if _defined_by_us(name)]


def import_binary(name):
  """The binary module `name` (e.g. 'trainers.train_vanilla'), imported for command_line()."""
  if name not in _BINARIES:
    others = _take_out(_ours())
    # The modules that defined them run again for this binary, which keeps its own copies; the
    # rest of the process keeps the copies it has.
    definers = {module_name for taken in [others] + [f for _, f in _BINARIES.values()]
                for _, module_name, _, _ in taken.values()}
    evicted = {m: sys.modules.pop(m) for m in definers if m in sys.modules}
    attributes = {}
    for m in evicted:
      package, _, attribute = m.rpartition('.')
      if hasattr(sys.modules.get(package), attribute):
        attributes[m] = getattr(sys.modules[package], attribute)
        delattr(sys.modules[package], attribute)
    try:
      module = importlib.import_module(name)
    finally:
      own = _take_out(_ours())  # the binary's flags (or those of a failed import)
      for m, old in evicted.items():
        if m != name:
          sys.modules[m] = old
      for m, old in attributes.items():
        if m != name:
          package, _, attribute = m.rpartition('.')
          setattr(sys.modules[package], attribute, old)
      _put_back(others)
    _BINARIES[name] = module, own
  return _BINARIES[name][0]


@contextlib.contextmanager
def command_line(binary, *args):
  """Parses `args` as the command line of `binary` (from import_binary), as app.run does.

  Yields main's argv. Meanwhile FLAGS holds the binary's own flags (and absl's and TensorFlow's)
  alone, and sys.argv[0] is the binary's file (the program its error lines name); the flags,
  sys.argv and the log settings main changes are restored after. absl's own checks (enum values,
  validators, required flags) raise flags.Error here; app.run prints its message and exits 1.

  Args:
    binary: the module of a binary, from import_binary.
    *args: its command line, without the program.
  """
  _, own = _BINARIES[binary.__name__]
  argv = [binary.__file__, *args]
  others = _take_out(_ours())
  _put_back(own)
  was_parsed = _FLAGS.is_parsed()
  handler = logging.get_absl_handler()
  filters, verbosity = list(handler.filters), logging.get_verbosity()
  levels = {n: std_logging.getLogger(n).level for n in ('tensorflow', 'tf2onnx')}
  try:
    with flagsaver.flagsaver(), mock.patch.object(sys, 'argv', argv):
      _FLAGS.unparse_flags()
      yield _FLAGS(argv)
  finally:
    if was_parsed:
      _FLAGS.mark_as_parsed()
    handler.filters[:] = filters
    logging.set_verbosity(verbosity)
    for n, level in levels.items():
      std_logging.getLogger(n).setLevel(level)
    _take_out(list(own))
    _put_back(others)


def exit_line(test, binary, *args):
  """The one line `python <binary> ARGS` exits with (its main in this process), checked as such.

  Python prints a SystemExit's message on stderr and exits with status 1; any other exception
  (what would be a traceback) fails `test`.
  """
  with test.assertRaises(SystemExit) as exited:
    with command_line(binary, *args) as argv:
      binary.main(argv)
  line = exited.exception.code
  test.assertIsInstance(line, str)
  test.assertLen(line.splitlines(), 1)
  return line
