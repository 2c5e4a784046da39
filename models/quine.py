"""Neural network quines: Keras models that predict their own weights.

A quine maps the index c of one of its own trainable weights (through a fixed random projection,
which is not a weight) to an estimate of weight c. Its "self" is the flat vector theta of its
trainable weights in a canonical order; `flatten()` and `assign_flat()` convert between theta and
the layers, and coordinate c means theta[c].

The layers, their order and the forward pass are those of `models.architecture.Architecture`
(the one definition every framework and exporter shares); the Keras model holds the kernels as
Dense layers named after the canonical weights (`hidden_1 ... hidden_k`, `weight_head`,
`class_head`), which fixes the checkpoint keys, and runs the architecture's forward pass on them
with the TensorFlow backend.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from models import backends
from models import projection as projection_lib
from models.architecture import Architecture
from models.config import ModelConfig


def pixels(images, image_size):
  """Images as users have them -> float32 pixels [B, image_size] in [0, 1], or an error.

  The one statement of what an auxiliary quine accepts, shared by `AuxiliaryQuine.classify` and
  the SavedModel's classify signature:
  - any shape [B, ...] holding image_size pixels per image: flat [B, 784], or [B, 28, 28] and
    [B, 28, 28, 1] as tensorflow-datasets gives MNIST;
  - pixels as floats in [0, 1], or as 0-255 values: an integer dtype always (the convention of
    tf.image.convert_image_dtype), and a float image with a pixel above 1 when all its pixels are
    whole numbers (JSON has no integer type, so a REST body of 0-255 integers arrives as floats).
  NaN, infinities, negative values, values above 255, a float image above 1 with a fractional
  pixel, and a pixel count other than image_size raise InvalidArgumentError naming the rule.
  A 0-255 image whose pixels are all 0 or 1 reads as a [0, 1] one (it is black either way).

  Args:
    images: a batch of images, any numeric dtype.
    image_size: pixels per image.

  Returns:
    float32 [B, image_size].
  """
  images = tf.convert_to_tensor(images)
  integer = images.dtype.is_integer
  x = tf.cast(images, tf.float32)
  shape = tf.shape(x)
  expected = (f'images must be a batch [N, {image_size}] or [N, ...] of {image_size} pixels each'
              + (' (MNIST: [N, 784], [N, 28, 28] or [N, 28, 28, 1])' if image_size == 784 else ''))
  checks = [tf.debugging.assert_rank_at_least(x, 2, message=expected),
            tf.debugging.assert_equal(tf.size(x), shape[0] * image_size, message=expected)]
  with tf.control_dependencies(checks):
    x = tf.reshape(x, [-1, image_size])
  rule = 'pixels must be floats in [0, 1] or 0-255 integers'
  whole = tf.reduce_all(tf.equal(x, tf.round(x)), axis=1, keepdims=True)
  scale = (tf.fill([tf.shape(x)[0], 1], 255.0) if integer
           else tf.where(tf.reduce_max(x, axis=1, keepdims=True) > 1.0, 255.0, 1.0))
  def holds(condition, what):
    return tf.debugging.assert_equal(tf.reduce_all(condition), True, message=f'{rule} ({what})')

  checks = [holds(tf.math.is_finite(x), 'got NaN or an infinity'),
            holds(x >= 0.0, 'got a negative value'),
            holds(x <= 255.0, 'got a value above 255'),
            holds(whole | tf.equal(scale, 1.0), 'got an image above 1 with a fractional pixel')]
  with tf.control_dependencies(checks):
    return x / scale


def _initializer(config, fan_in, index):
  seed = config.init_seed * 1000 + index  # one stream per layer, stable across widths
  if config.init == 'paper_uniform':
    limit = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-limit, limit, seed=seed)
  return keras.initializers.HeNormal(seed=seed)


class _Quine(keras.Model):
  """Shared machinery: one Dense kernel per canonical weight, the canonical weight order.

  The models are registered Keras serialisables: `get_config` is the ModelConfig, so
  `model.save('q.keras')` and `keras.models.load_model('q.keras')` round-trip a quine.
  """

  def __init__(self, config: ModelConfig, **kwargs):
    super().__init__(**kwargs)
    self.config = config.validate()
    self.architecture = Architecture(config)
    self._backend = backends.tensorflow()
    spec = self.architecture.projections['coordinate']
    self.coordinate_projection = projection_lib.Projection(
        spec.seed, spec.num_rows, spec.num_columns, spec.std)
    self._quine_layers = []
    for index, (name, shape) in enumerate(self.architecture.weights):
      layer = keras.layers.Dense(
          shape[1], use_bias=False, kernel_initializer=_initializer(config, shape[0], index),
          name=name)
      layer.build((None, shape[0]))
      # An attribute per layer: the attribute names are the checkpoint keys (hidden_1, ...).
      setattr(self, name, layer)
      self._quine_layers.append(layer)
    self.built = True

  def get_config(self):
    return {'name': self.name, 'quine_config': self.config.to_dict()}

  @classmethod
  def from_config(cls, config):
    return cls(ModelConfig.from_dict(config['quine_config']), name=config.get('name'))

  @property
  def hidden(self):
    return self._quine_layers[:self.config.num_hidden]

  @property
  def num_weights(self):
    return self.config.num_weights

  def build_weights(self):
    """The variables exist from construction on; kept so that callers can chain it."""
    return self

  @property
  def quine_variables(self):
    """The trainable variables in canonical order."""
    return [layer.kernel for layer in self._quine_layers]

  def weight_names(self):
    """Canonical names (the layer names) matching `quine_variables`."""
    return self.architecture.weight_names

  def kernels(self):
    """{canonical name: kernel variable}, what the architecture's forward pass reads."""
    return dict(zip(self.architecture.weight_names, self.quine_variables))

  def flatten(self):
    """theta: all trainable weights as one float32 vector [N] in canonical order."""
    return tf.concat([tf.reshape(v, [-1]) for v in self.quine_variables], axis=0)

  def unflatten(self, theta):
    """Splits a flat vector [N] into tensors shaped like `quine_variables`."""
    sizes = [int(np.prod(v.shape)) for v in self.quine_variables]
    parts = tf.split(theta, sizes)
    return [tf.reshape(p, v.shape) for p, v in zip(parts, self.quine_variables)]

  def assign_flat(self, theta):
    """Overwrites every weight at once from a flat vector [N] in canonical order."""
    for v, value in zip(self.quine_variables, self.unflatten(theta)):
      v.assign(value)

  def predict_weights(self, coordinates):
    """Predicted weights [B] for integer coordinates [B] (an auxiliary quine: zero image)."""
    return self.architecture.predict_weights(
        self._backend, self.kernels(), self.coordinate_projection.rows(coordinates))


@keras.saving.register_keras_serializable(package='quine_zoo')
class VanillaQuine(_Quine):
  """The paper's vanilla quine: coordinate -> projection -> k x (d x d, activation) -> 1."""

  def call(self, coordinates):
    """Predicted weights [B] for integer coordinates [B]."""
    return self.predict_weights(coordinates)


@keras.saving.register_keras_serializable(package='quine_zoo')
class AuxiliaryQuine(_Quine):
  """A quine that also classifies: [coordinate projection | image projection] -> trunk -> 2 heads.

  The first `width` units are split: `coordinate_units` come from the coordinate's projection and
  the rest from a fixed random projection of the image. The weight head predicts theta[c]; the
  class head (part of theta too) gives logits divided once by the temperature.

  Evaluating one head alone needs a value for the other input: weights are predicted with a zero
  image (`predict_weights`) and images are classified with a zero coordinate part (`classify`).
  Those are the definitions every metric and export uses.
  """

  def __init__(self, config: ModelConfig, **kwargs):
    super().__init__(config, **kwargs)
    spec = self.architecture.projections['image']
    self.image_projection = projection_lib.Projection(
        spec.seed, spec.num_rows, spec.num_columns, spec.std)
    self._image_matrix = tf.constant(self.image_projection.matrix())

  def _image_part(self, images):
    images = tf.reshape(tf.cast(images, tf.float32), [-1, self.config.image_size])
    return tf.matmul(images, self._image_matrix)

  def call(self, inputs):
    """(coordinates [B], images [B, image_size]) -> (predicted weights [B], logits [B, classes])."""
    coordinates, images = inputs
    return self.architecture.heads(self._backend, self.kernels(),
                                   self.coordinate_projection.rows(coordinates),
                                   self._image_part(images))

  def classify(self, images):
    """Logits [B, classes] (divided once by the temperature) of images as users have them.

    Any form `pixels` accepts (flat or 28 x 28 (x 1); [0, 1] floats or 0-255 integers); anything
    else raises InvalidArgumentError saying what is expected.
    """
    return self.logits(pixels(images, self.config.image_size))

  def logits(self, images, kernels=None):
    """Logits [B, classes] of float32 pixels [B, image_size] in [0, 1], with a zero coordinate
    part: the trusted path the trainers run (no checks).

    `kernels` ({name: tensor}, e.g. `models.linearization.kernel_split` of a descendant's theta)
    classifies with those weights instead of the model's own.
    """
    return self.architecture.classify(self._backend, kernels or self.kernels(),
                                      self._image_part(images))


def build_quine(config: ModelConfig, name=None):
  """The quine described by `config`, with its variables created (named `name`, default
  '<kind>_quine')."""
  cls = AuxiliaryQuine if config.classifies else VanillaQuine
  return cls(config, name=name or f'{config.kind}_quine')
