"""Neural network quines: Keras models that predict their own weights.

A quine maps the index c of one of its own trainable weights (through a fixed random projection,
which is not a weight) to an estimate of weight c. Its "self" is the flat vector theta of its
trainable weights in a canonical order; `flatten()` and `assign_flat()` convert between theta and
the layers, and coordinate c means theta[c].

Canonical order: the hidden kernels `hidden_1 ... hidden_k` ([in, out], row-major), then the weight
head `weight_head` ([width, 1]), then (auxiliary quines) the class head `class_head`
([width, num_classes]). No biases.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from models import projection as projection_lib
from models.config import ModelConfig

_ACTIVATIONS = {'selu': tf.nn.selu, 'relu': tf.nn.relu, 'tanh': tf.math.tanh,
                'linear': tf.identity}


def activation_fn(name):
  """The activation function called `name` in a ModelConfig."""
  return _ACTIVATIONS[name]


def _initializer(config, fan_in, index):
  seed = config.init_seed * 1000 + index  # one stream per layer, stable across widths
  if config.init == 'paper_uniform':
    limit = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-limit, limit, seed=seed)
  return keras.initializers.HeNormal(seed=seed)


class _Quine(keras.Model):
  """Shared machinery: hidden stack, weight head, canonical weight order."""

  def __init__(self, config: ModelConfig, **kwargs):
    super().__init__(**kwargs)
    self.config = config.validate()
    self._activation = activation_fn(config.activation)
    self._output_activation = activation_fn(config.output_activation)
    w = config.width
    self.coordinate_projection = projection_lib.Projection(
        config.projection_seed, config.num_weights, self._coordinate_units, config.projection_std)
    self.hidden = [
        keras.layers.Dense(w, use_bias=False, kernel_initializer=_initializer(config, w, i),
                           name=f'hidden_{i + 1}')
        for i in range(config.num_hidden)]
    for layer in self.hidden:
      # Attributes, not only list items: tf.train.Checkpoint does not follow a Keras model's
      # Python lists, and the layer names are the checkpoint keys (hidden_1, hidden_2, ...).
      setattr(self, layer.name, layer)
    self.weight_head = keras.layers.Dense(
        1, use_bias=False, kernel_initializer=_initializer(config, w, config.num_hidden),
        name='weight_head')

  @property
  def _coordinate_units(self):
    return self.config.width

  @property
  def num_weights(self):
    return self.config.num_weights

  def build_weights(self):
    """Creates the variables (Keras builds lazily) so that theta exists before any call."""
    w = self.config.width
    for layer in self.hidden:
      if not layer.built:
        layer.build((None, w))
    if not self.weight_head.built:
      self.weight_head.build((None, w))
    self.built = True
    return self

  @property
  def quine_variables(self):
    """The trainable variables in canonical order."""
    return [layer.kernel for layer in self.hidden] + [self.weight_head.kernel]

  def weight_names(self):
    """Canonical names (the layer names) matching `quine_variables`."""
    return [v.path.split('/')[0] for v in self.quine_variables]

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

  def _trunk(self, h):
    for layer in self.hidden:
      h = self._activation(layer(h))
    return h

  def _weight_output(self, h):
    return self._output_activation(self.weight_head(h))[:, 0]


class VanillaQuine(_Quine):
  """The paper's vanilla quine: coordinate -> projection -> k x (d x d, activation) -> 1."""

  def call(self, coordinates):
    """Predicted weights [B] for integer coordinates [B]."""
    return self._weight_output(self._trunk(self.coordinate_projection.rows(coordinates)))

  def predict_weights(self, coordinates):
    return self(coordinates)


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
    c = config
    self.image_projection = projection_lib.Projection(
        c.projection_seed + 1, c.image_size, c.width - c.coordinate_units, c.image_projection_std)
    self._image_matrix = tf.constant(self.image_projection.matrix())
    self.class_head = keras.layers.Dense(
        c.num_classes, use_bias=False,
        kernel_initializer=_initializer(c, c.width, c.num_hidden + 1), name='class_head')

  @property
  def _coordinate_units(self):
    return self.config.coordinate_units

  def build_weights(self):
    super().build_weights()
    if not self.class_head.built:
      self.class_head.build((None, self.config.width))
    return self

  @property
  def quine_variables(self):
    return super().quine_variables + [self.class_head.kernel]

  def _heads(self, coordinate_part, image_part):
    h = self._trunk(tf.concat([coordinate_part, image_part], axis=-1))
    return self._weight_output(h), self.class_head(h) / self.config.temperature

  def call(self, inputs):
    """(coordinates [B], images [B, image_size]) -> (predicted weights [B], logits [B, classes])."""
    coordinates, images = inputs
    images = tf.reshape(tf.cast(images, tf.float32), [-1, self.config.image_size])
    return self._heads(self.coordinate_projection.rows(coordinates),
                       tf.matmul(images, self._image_matrix))

  def predict_weights(self, coordinates):
    """Predicted weights [B] for coordinates [B], paired with a zero image."""
    rows = self.coordinate_projection.rows(coordinates)
    image_part = tf.zeros([tf.shape(rows)[0], self.config.width - self.config.coordinate_units])
    return self._heads(rows, image_part)[0]

  def classify(self, images):
    """Logits [B, classes] (already divided by the temperature) with a zero coordinate part."""
    images = tf.reshape(tf.cast(images, tf.float32), [-1, self.config.image_size])
    image_part = tf.matmul(images, self._image_matrix)
    coordinate_part = tf.zeros([tf.shape(image_part)[0], self.config.coordinate_units])
    return self._heads(coordinate_part, image_part)[1]


def build_quine(config: ModelConfig):
  """The quine described by `config`, with its variables created."""
  cls = AuxiliaryQuine if config.kind == 'auxiliary' else VanillaQuine
  return cls(config, name=f'{config.kind}_quine').build_weights()
