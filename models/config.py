"""A quine's own configuration: sizes, activations, initialisation and projection scheme.

It lives with the models (not the trainers) so that `export` can rebuild a trained quine from a
workdir's `config.json` without importing any training code.
"""

import dataclasses
import math

from models import activations



@dataclasses.dataclass(frozen=True)
class Kind:
  """A kind of quine: the one place that says how the kinds differ.

  Code elsewhere asks a config, an architecture or a dump what it can do (`classifies`), never
  which kind it is.

  Attributes:
    name: the value of ModelConfig.kind.
    classifies: whether it also has an image input and a class head (part of theta), and a task:
      MNIST test accuracy is measured, and its Jacobian d f_theta(C) / d theta is not defined
      without choosing an image (the stability analysis covers the other kinds).
    trainer: the binary that trains it.
  """
  name: str
  classifies: bool
  trainer: str


KIND_REGISTRY = {
    'vanilla': Kind('vanilla', classifies=False, trainer='trainers/train_vanilla.py'),
    'auxiliary': Kind('auxiliary', classifies=True, trainer='trainers/train_aux.py'),
}
KINDS = tuple(KIND_REGISTRY)
INITS = ('paper_uniform', 'he_normal')
KERNEL_NORMS = ('none', 'standardise')
# Keras seeds layer k's initializer with init_seed * 1000 + k, an int32.
MAX_INIT_SEED = 2**31 // 1000

# uniform(+-1/sqrt(100)) has std 0.1/sqrt(3) ~= 0.0577: the projection matches the weights' scale.
PAPER_PROJECTION_STD = 0.1 / math.sqrt(3.0)
# The paper does not give the image projection's scale. uniform(+-0.05) (std ~0.0289) puts the
# initial lambda * L_task (cross-entropy summed over the 10,000 test images) at 840-1150 over
# seeds 0-2, around the paper's ~990; the coordinate projection's scale gives ~1550-2040.
PAPER_IMAGE_PROJECTION_STD = 0.05 / math.sqrt(3.0)


_AUXILIARY_FIELDS = ('coordinate_units', 'image_size', 'num_classes', 'temperature',
                     'image_projection_std')
_ACTIVATION_PARAMS = ('frequency',)
_KERNEL_NORM_FIELDS = ('kernel_norm', 'gain')


def _flag(default, help_text, choices=None):
  """A field that the training binaries' flag of the same name sets (see trainers/cli.py).

  `choices`, a callable returning the allowed names, makes the flag an enum.
  """
  return dataclasses.field(default=default, metadata={
      'flag': None, 'help': help_text, 'choices': choices})


def flag_fields():
  """{flag name: field name} of the fields that training flags set."""
  return {f.metadata['flag'] or f.name: f.name for f in dataclasses.fields(ModelConfig)
          if 'flag' in f.metadata}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of a quine.

  Attributes:
    kind: 'vanilla' (replicates only) or 'auxiliary' (replicates and classifies).
    width: hidden units d; every hidden matrix is d x d.
    num_hidden: number of learnable d x d hidden matrices (the paper: 2).
    activation: activation after each hidden matrix.
    output_activation: activation of the weight-prediction output.
    frequency: omega of the `sin` activation, sin(omega * x) (SIREN's w0); recorded only when an
      activation uses it.
    kernel_norm: 'none' (the paper: h = act(h @ W)) or 'standardise': every hidden kernel is used
      as S(W) = gain * W / (rms(W) * sqrt(fan_in)), parameter-free weight standardisation, so f does
      not change when a hidden kernel is rescaled (the weight head and class head are used as
      they are). Recorded only when not 'none'.
    gain: the gain of S (kernel_norm 'standardise').
    init: 'paper_uniform' (uniform(+-1/sqrt(fan_in)), matches the paper's initial losses) or
      'he_normal' (what the paper's text says).
    init_seed: seed of the weight initialisation.
    projection_seed: seed of the fixed coordinate projection (and, offset by one, of the image
      projection of an auxiliary quine).
    projection_std: standard deviation of the fixed projection entries.
    coordinate_units: units fed by the coordinate projection (auxiliary quines; a vanilla quine
      uses all `width` units for the coordinate).
    image_size: flattened image length (auxiliary quines).
    num_classes: classes of the auxiliary task.
    temperature: softmax temperature of the class head (logits are divided by it once).
    image_projection_std: standard deviation of the fixed image projection entries.
  """
  kind: str = 'vanilla'
  width: int = _flag(100, 'Hidden units (every hidden matrix is width^2).')
  num_hidden: int = _flag(2, 'Number of hidden width x width matrices.')
  activation: str = _flag('selu', 'Hidden activation (models/activations.py).',
                          choices=activations.names)
  output_activation: str = _flag('linear', 'Activation of the weight-prediction output.',
                                 choices=activations.names)
  frequency: float = _flag(1.0, "omega of the sin activation, sin(omega * x) (SIREN's w0).")
  kernel_norm: str = _flag('none', 'Hidden kernels used as they are (none) or '
                           'weight-standardised.', choices=lambda: KERNEL_NORMS)
  gain: float = _flag(1.0, 'Gain of the weight standardisation (--kernel_norm).')
  init: str = _flag('paper_uniform', 'Weight initialisation.', choices=lambda: INITS)
  # Set by the trainers' --seed, which also seeds their shuffling and noise.
  init_seed: int = dataclasses.field(default=0, metadata={'flag': 'seed'})
  projection_seed: int = 0
  projection_std: float = PAPER_PROJECTION_STD
  coordinate_units: int = 50
  image_size: int = 784
  num_classes: int = 10
  temperature: float = 0.01
  image_projection_std: float = PAPER_IMAGE_PROJECTION_STD

  @property
  def classifies(self):
    """Whether this quine also classifies images (`Kind.classifies`)."""
    return KIND_REGISTRY[self.kind].classifies

  @property
  def num_weights(self):
    """N, the number of trainable weights (the coordinates the quine predicts)."""
    n = self.num_hidden * self.width * self.width + self.width  # hidden matrices + weight head
    if self.classifies:
      n += self.width * self.num_classes  # the class head is part of theta too
    return n

  def validate(self):
    """Raises ValueError naming the first bad field."""
    if self.kind not in KINDS:
      raise ValueError(f'kind={self.kind!r} is not one of {KINDS}')
    for name in ('width', 'num_hidden'):
      if getattr(self, name) <= 0:
        raise ValueError(f'{name}={getattr(self, name)} must be positive')
    for name in ('activation', 'output_activation'):
      if getattr(self, name) not in activations.names():
        raise ValueError(f'{name}={getattr(self, name)!r} is not one of {activations.names()}')
    if not (math.isfinite(self.frequency) and self.frequency > 0):
      raise ValueError(f'frequency={self.frequency} must be a positive finite number')
    if self.kernel_norm not in KERNEL_NORMS:
      raise ValueError(f'kernel_norm={self.kernel_norm!r} is not one of {KERNEL_NORMS}')
    if not (math.isfinite(self.gain) and self.gain > 0):
      raise ValueError(f'gain={self.gain} must be a positive finite number')
    if self.init not in INITS:
      raise ValueError(f'init={self.init!r} is not one of {INITS}')
    if not 0 <= self.init_seed < MAX_INIT_SEED:
      raise ValueError(f'init_seed={self.init_seed} must be in [0, {MAX_INIT_SEED})')
    if not 0 <= self.projection_seed < 2**32 - 1:
      raise ValueError(f'projection_seed={self.projection_seed} must be in [0, 2**32 - 1)')
    if self.projection_std <= 0:
      raise ValueError(f'projection_std={self.projection_std} must be positive')
    if self.classifies:
      if not 0 < self.coordinate_units < self.width:
        raise ValueError(f'coordinate_units={self.coordinate_units} must be in (0, width)')
      for name in ('image_size', 'num_classes'):
        if getattr(self, name) <= 0:
          raise ValueError(f'{name}={getattr(self, name)} must be positive')
      if self.temperature <= 0:
        raise ValueError(f'temperature={self.temperature} must be positive')
    if self.num_weights >= 2**32:
      raise ValueError(f'{self.num_weights} weights do not fit 32-bit coordinates')
    return self

  def activation_params(self):
    """The fields that the activations read (e.g. frequency for sin)."""
    return sorted({p for name in (self.activation, self.output_activation)
                   for p in activations.get(name).params})

  def to_dict(self):
    """The fields that matter for this quine (a vanilla quine has no image or class fields,
    a quine without sin no frequency, one without kernel standardisation no kernel_norm or gain)."""
    d = dataclasses.asdict(self)
    if not self.classifies:
      for name in _AUXILIARY_FIELDS:
        del d[name]
    for name in _ACTIVATION_PARAMS:
      if name not in self.activation_params():
        del d[name]
    if self.kernel_norm == 'none':
      for name in _KERNEL_NORM_FIELDS:
        del d[name]
    return d

  @classmethod
  def from_dict(cls, d):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
      raise ValueError(f'unknown model config fields: {sorted(unknown)}')
    return cls(**d)
