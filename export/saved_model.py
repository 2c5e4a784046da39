"""A quine's SavedModel and ONNX graph: the two graphs an export's version folder holds.

Signatures (input and output keys are API):
  predict_weights  coordinates int64 [B] -> predicted_weights float32 [B]
  weights          (no input)             -> theta float32 [N], canonical order
  classify         images float32, [M, image_size] or [M, 28, 28(, 1)], pixels in [0, 1] or 0-255
                   (models.quine.pixels) -> probabilities, logits [M, classes]
  serving_default  classify for an auxiliary quine, predict_weights for a vanilla one

written by Keras's ExportArchive so that Session-based loaders can run them. The ONNX graph
(tf2onnx) has the dump's interface (`export.manifest`), its weights as initializers named
canonically. `export.exporter` writes both into a version folder, with the dump.
"""

import contextlib
import logging as std_logging

import keras
from absl import logging
import numpy as np
import tensorflow as tf

from export import manifest as manifest_lib
from export import onnx_graph
from models import backends
from models import projection as projection_lib


class ExportError(ValueError):
  """The export cannot be made; the message says why."""


def quiet_logs():
  """Hides TensorFlow's and tf2onnx's INFO lines (one per saved asset, per ONNX pass): for the
  binaries that export (export_model.py, and serve.py / replicate.py with --pretrained)."""
  logging.set_verbosity(logging.WARNING)
  for name in ('tensorflow', 'tf2onnx'):
    std_logging.getLogger(name).setLevel(std_logging.WARNING)


# --------------------------------------------------------------------------- SavedModel


def _coordinate_rows(arch):
  """The exported graphs' coordinate projection: a table constant, or hashed from its seed.

  The same rule for the SavedModel and the ONNX graph (`manifest.onnx_initializer`): a table
  only while it is small, so that a paper-size export holds its weights, not 8 MB of projection.
  """
  spec = arch.projections['coordinate']
  if manifest_lib.onnx_initializer(arch, 'coordinate'):
    table = spec.rows()
    return lambda coordinates: tf.gather(tf.constant(table, name='projection_coordinate'),
                                         coordinates)
  return lambda coordinates: projection_lib.tf_projection(spec.seed, coordinates,
                                                          spec.num_columns, spec.std)


def serving_archive(model):
  """The quine's serving functions as a Keras ExportArchive (signatures: see the module docstring).

  Keras's own export machinery, not a hand-made tf.Module: it saves the variables the functions
  read under the names the functions look them up by, so that Session-based loaders
  (`saved_model_cli run`, TensorFlow Serving, `tf.compat.v1.saved_model.loader.load`) restore
  them as well as `tf.saved_model.load` does. A tf.Module holding a Keras 3 model saves them as
  `Variable`, `Variable_1`, ... and those loaders then fail with "Could not find variable".

  Args:
    model: a built quine.

  Returns:
    A `keras.export.ExportArchive`; its first endpoint is also `serving_default`.
  """
  config = model.config
  n = config.num_weights
  arch = model.architecture
  backend = backends.tensorflow()
  coordinate_rows = _coordinate_rows(arch)
  archive = keras.export.ExportArchive()
  archive.track(model)

  def predict_weights(coordinates):
    # Out-of-range coordinates would gather garbage from a hashed projection: refuse them.
    checks = [tf.debugging.assert_non_negative(coordinates, message='coordinates must be >= 0'),
              tf.debugging.assert_less(coordinates, tf.constant(n, tf.int64),
                                       message=f'coordinates must be < num_weights = {n}')]
    with tf.control_dependencies(checks):
      coordinates = tf.identity(coordinates)
    return {'predicted_weights': arch.predict_weights(backend, model.kernels(),
                                                      coordinate_rows(coordinates))}

  def weights():
    return {'theta': model.flatten()}

  def classify(images):
    logits = model.classify(images)
    return {'probabilities': tf.nn.softmax(logits), 'logits': logits}

  coordinates = [tf.TensorSpec([None], tf.int64, name='coordinates')]
  # ExportArchive aliases its first endpoint as serving_default (one function, two signatures).
  if config.classifies:
    # Any shape and either pixel scale (models.quine.pixels): a REST body holds the image as the
    # user has it, flat or 28 x 28 x 1, 0-255 or [0, 1]; anything else is an InvalidArgument.
    archive.add_endpoint('classify', classify, input_signature=[
        tf.TensorSpec(None, tf.float32, name='images')])
  archive.add_endpoint('predict_weights', predict_weights, input_signature=coordinates)
  archive.add_endpoint('weights', weights, input_signature=[])
  return archive


def write_saved_model(model, path):
  """Saves `model`'s serving functions as a SavedModel in `path` (not atomic on its own)."""
  serving_archive(model).write_out(path, verbose=False)


# --------------------------------------------------------------------------- ONNX


def _onnx_function(model, weights):
  """A tf.function computing the dump's ONNX interface from constants (names fix initializers).

  The architecture's forward pass on constant kernels: tf2onnx keeps each kernel, and each
  projection table, as an initializer named after its constant.
  """
  arch = model.architecture
  backend = backends.tensorflow()
  coordinate_rows = _coordinate_rows(arch)

  def kernels():
    return {name: tf.constant(weights[name], name=name) for name in arch.weight_names}

  coordinates_spec = tf.TensorSpec([None], tf.int64, name=manifest_lib.ONNX_COORDINATES)
  n = arch.num_weights

  def predict_weights(k, coordinates):
    # ONNX has no assertion op: a coordinate outside [0, N) names no weight, so its prediction
    # is NaN (computed at coordinate 0, then 0 / 0) rather than a number from a hashed row.
    # x * 1 / 1 is x exactly; tf2onnx turns a select against a NaN constant into arithmetic
    # that is NaN everywhere, so the mask is applied this way.
    valid = (coordinates >= 0) & (coordinates < n)
    safe = tf.where(valid, coordinates, tf.zeros_like(coordinates))
    mask = tf.cast(valid, tf.float32)
    return arch.predict_weights(backend, k, coordinate_rows(safe)) * mask / mask

  if not arch.classifies:
    @tf.function(input_signature=[coordinates_spec])
    def vanilla(coordinates):
      return {manifest_lib.ONNX_PREDICTED_WEIGHTS: predict_weights(kernels(), coordinates)}
    return vanilla

  images_spec = tf.TensorSpec([None, arch.config.image_size], tf.float32,
                              name=manifest_lib.ONNX_IMAGES)

  @tf.function(input_signature=[coordinates_spec, images_spec])
  def auxiliary(coordinates, images):
    k = kernels()
    predicted = predict_weights(k, coordinates)
    matrix = tf.constant(arch.projections['image'].rows(), name='projection_image')
    logits = arch.classify(backend, k, tf.matmul(images, matrix))
    return {manifest_lib.ONNX_PREDICTED_WEIGHTS: predicted, manifest_lib.ONNX_LOGITS: logits,
            manifest_lib.ONNX_PROBABILITIES: tf.nn.softmax(logits)}
  return auxiliary


@contextlib.contextmanager
def _keeping_equal_tensors():
  """tf2onnx without its 'merge_duplication' pass, which folds equal constants into one.

  Weight tensors with equal values (a quine at a constant fixed point, whose hidden kernels are
  all the same number; the zero quine) would otherwise share one initializer, and the dump's graph
  must carry every weight under its own name. tf2onnx 1.17 keeps its passes in a module-level
  dict and has no option for this.
  """
  from tf2onnx import optimizer  # pylint: disable=g-import-not-at-top
  passes = optimizer._optimizers  # pylint: disable=protected-access
  optimizer._optimizers = type(passes)(  # pylint: disable=protected-access
      (name, cls) for name, cls in passes.items() if name != 'merge_duplication')
  try:
    yield
  finally:
    optimizer._optimizers = passes  # pylint: disable=protected-access


def onnx_model(model):
  """The dump's ONNX graph of `model` (tf2onnx), initializers named by canonical weight name.

  Args:
    model: a built quine.

  Returns:
    An onnx.ModelProto.

  Raises:
    ExportError: the converted graph does not carry every weight as a named initializer.
  """
  import tf2onnx  # pylint: disable=g-import-not-at-top  (slow, and only needed here)
  config = model.config
  weights = {name: v.numpy() for name, v in zip(model.weight_names(), model.quine_variables)}
  fn = _onnx_function(model, weights)
  with _keeping_equal_tensors():
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=fn.input_signature,
                                             opset=manifest_lib.ONNX_OPSET)
  interface = manifest_lib.onnx_interface(model.architecture)
  mapping = {f'{name}:0': name for name in weights}
  mapping.update({f'projection_{k}:0': v
                  for k, v in interface['projection_initializers'].items()})
  onnx_graph.rename_initializers(proto, mapping)
  if model.architecture.standardised:
    onnx_graph.unfold_standardised(
        proto, {name: weights[name] for name in model.architecture.hidden}, config.gain)
  values = onnx_graph.initializers(proto)
  for name, value in weights.items():
    if name not in values or not np.array_equal(values[name], value):
      raise ExportError(f'tf2onnx did not keep weight {name!r} as an initializer of its own '
                        f'(initializers: {sorted(values)})')
  proto.doc_string = (f'quine-zoo {config.kind} quine, N = {config.num_weights} weights; '
                      'see manifest.json')
  return proto
