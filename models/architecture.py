"""A quine's architecture, written down once: weights, projections, and the forward pass.

Everything that computes or describes a quine reads this: the Keras model (`models.quine`), the
fixed-point solver's forward pass and linearisation, the SavedModel and ONNX export, the dump's
manifest, and the NumPy / PyTorch / ONNX Runtime replicas. The forward pass is written against a
small `Backend` (matmul, zero padding, activations; `models.backends` has NumPy, TensorFlow and
PyTorch ones), so each framework runs this one definition in its own arithmetic.

The network (vanilla): h = P_coordinate[c]; h = act(h @ hidden_i) for i = 1..num_hidden;
prediction = output_act(h @ weight_head)[:, 0]. With kernel_norm 'standardise' each hidden layer
uses S(hidden_i) = gain * hidden_i / (rms(hidden_i) * sqrt(fan_in)) in place of hidden_i. An
auxiliary quine feeds the first `coordinate_units` units from the coordinate's projection and the
rest from a fixed projection of the image, and adds a class head:
logits = (h @ class_head) / temperature. Predicting weights uses a zero image part; classifying
uses a zero coordinate part.

Canonical order of theta: hidden_1 ... hidden_k ([in, out], row-major), weight_head ([width, 1]),
then class_head ([width, num_classes]) for an auxiliary quine. No biases.

This module imports NumPy only.
"""

import dataclasses

import numpy as np

from models import activations
from models import generator
from models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class ProjectionSpec:
  """A fixed random projection: rows of a virtual [num_rows, num_columns] generator matrix.

  Attributes:
    seed: the generator's seed.
    num_rows: rows (coordinates, or pixels for the image projection).
    num_columns: the hidden units it feeds.
    std: standard deviation of the entries.
    feeds: which first-layer input units it fills (for the manifest).
  """
  seed: int
  num_rows: int
  num_columns: int
  std: float
  feeds: str

  @property
  def materialised(self):
    """Whether it is small enough to be stored as a table (else it is hashed on the fly)."""
    return self.num_rows * self.num_columns <= generator.MAX_TABLE_ENTRIES

  def rows(self, indices=None):
    """Rows `indices` (all when None) from the NumPy reference generator, float32."""
    if indices is None:
      indices = np.arange(self.num_rows)
    return generator.projection_rows(self.seed, indices, self.num_columns, self.std)


class Architecture:
  """The quine a ModelConfig describes.

  Attributes:
    config: the (validated) ModelConfig.
    kind: 'vanilla' or 'auxiliary'.
    classifies: whether the quine has an image input and a class head (models.config.Kind).
    activation, output_activation: registry entries (`models.activations.Activation`).
    params: the activation parameters (ModelConfig fields the entries read).
    weights: [(name, shape)] of theta's tensors in canonical order.
    hidden: names of the hidden kernels, in order.
    weight_path: [(kernel name, activation)] from the first layer input to the weight output.
    coordinate_units: first-layer units fed by the coordinate projection.
    num_weights: N.
    standardised: whether the hidden kernels are used as S(W) (kernel_norm 'standardise').
    projections: {'coordinate': ProjectionSpec, 'image': ProjectionSpec (auxiliary)}.
  """

  def __init__(self, config):
    if isinstance(config, dict):
      config = ModelConfig.from_dict(config)
    self.config = config.validate()
    c = self.config
    self.kind = c.kind
    self.classifies = c.classifies
    self.activation = activations.get(c.activation)
    self.output_activation = activations.get(c.output_activation)
    self.params = {name: getattr(c, name)
                   for name in self.activation.params + self.output_activation.params}
    self.hidden = [f'hidden_{i + 1}' for i in range(c.num_hidden)]
    self.weights = [(name, (c.width, c.width)) for name in self.hidden]
    self.weights.append(('weight_head', (c.width, 1)))
    if self.classifies:
      self.weights.append(('class_head', (c.width, c.num_classes)))
    self.weight_path = ([(name, self.activation) for name in self.hidden]
                        + [('weight_head', self.output_activation)])
    self.standardised = c.kernel_norm == 'standardise'
    self.coordinate_units = c.coordinate_units if self.classifies else c.width
    self.num_weights = sum(int(np.prod(shape)) for _, shape in self.weights)
    assert self.num_weights == c.num_weights, (self.num_weights, c.num_weights)
    units = self.coordinate_units
    self.projections = {'coordinate': ProjectionSpec(
        c.projection_seed, self.num_weights, units, c.projection_std,
        f'hidden units [0, {units}) of the first layer input')}
    if self.classifies:
      self.projections['image'] = ProjectionSpec(
          c.projection_seed + 1, c.image_size, c.width - units, c.image_projection_std,
          f'hidden units [{units}, {c.width}) of the first layer input (images @ matrix)')

  @property
  def weight_names(self):
    return [name for name, _ in self.weights]

  @property
  def image_units(self):
    return self.config.width - self.coordinate_units

  @property
  def kinked(self):
    """Whether some activation of the network has a kink (the solver then smooths it)."""
    return any(act.kinked for _, act in self.weight_path)

  def split(self, theta):
    """A flat theta [N] (NumPy) as {name: array} in canonical order, with shape checks."""
    theta = np.asarray(theta).reshape(-1)
    if theta.size != self.num_weights:
      raise ValueError(f'theta has {theta.size} entries, the architecture has {self.num_weights}')
    out, offset = {}, 0
    for name, shape in self.weights:
      size = int(np.prod(shape))
      out[name] = theta[offset:offset + size].reshape(shape)
      offset += size
    return out

  # ------------------------------------------------------------------- the forward pass

  def layer(self, backend, kernel, activation, h):
    """One layer: activation(h @ kernel)."""
    return backend.activate(activation, backend.matmul(h, kernel), self.params)

  def hidden_kernel(self, backend, kernel):
    """What a hidden layer multiplies by: the kernel, or S(kernel) when standardised."""
    if self.standardised:
      return backend.standardise(kernel, self.config.gain)
    return kernel

  def trunk(self, backend, weights, h):
    """The hidden layers applied to the first-layer input h [B, width]."""
    for name in self.hidden:
      h = self.layer(backend, self.hidden_kernel(backend, weights[name]), self.activation, h)
    return h

  def weight_output(self, backend, weights, h):
    """Predicted weights [B] from the last hidden layer h [B, width]."""
    return backend.first_column(
        self.layer(backend, weights['weight_head'], self.output_activation, h))

  def logits(self, backend, weights, h):
    """Class logits [B, num_classes] from the last hidden layer (auxiliary quines)."""
    return backend.divide(backend.matmul(h, weights['class_head']), self.config.temperature)

  def predict_weights(self, backend, weights, coordinate_rows):
    """Predicted weights [B] for the coordinates' projection rows [B, coordinate_units].

    An auxiliary quine pairs them with a zero image part.
    """
    h = coordinate_rows
    if self.classifies:
      h = backend.pad(h, right=self.image_units)
    return self.weight_output(backend, weights, self.trunk(backend, weights, h))

  def classify(self, backend, weights, image_part):
    """Logits [M, classes] for the images' projection image_part [M, width - coordinate_units],
    paired with a zero coordinate part."""
    h = backend.pad(image_part, left=self.coordinate_units)
    return self.logits(backend, weights, self.trunk(backend, weights, h))

  def heads(self, backend, weights, coordinate_part, image_part):
    """(predicted weights [B], logits [B, classes]) of an auxiliary quine on both inputs."""
    h = self.trunk(backend, weights, backend.concat([coordinate_part, image_part]))
    return self.weight_output(backend, weights, h), self.logits(backend, weights, h)
