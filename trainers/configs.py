"""Training configurations: frozen dataclasses and named presets.

A preset fixes the model and the schedule; flags override single fields. The resolved
configuration is written to `<workdir>/config.json`.
"""

import dataclasses
import math

from models.config import MAX_INIT_SEED
from models.config import ModelConfig
from trainers import methods

OPTIMIZERS = ('sgd', 'momentum', 'adam', 'adagrad', 'adamax', 'rmsprop')

# Learning rates used when none is given: PyTorch's defaults (Adam 1e-3, Adagrad 1e-2, Adamax 2e-3,
# RMSprop 1e-2; SGD has none there, 1e-2 here), the framework the paper's numbers are most likely
# from. RMSprop at 1e-2 is the setting that explodes in the paper.
DEFAULT_LEARNING_RATES = {'sgd': 0.01, 'momentum': 0.01, 'adam': 0.001, 'adagrad': 0.01,
                          'adamax': 0.002, 'rmsprop': 0.01}

# The most phases a run may have (each writes a metrics line and a checkpoint): a count beyond it
# is a typo, refused before anything is written rather than a MemoryError after.
MAX_PHASES = 1_000_000
# --seed also seeds the initialisation (models.config.MAX_INIT_SEED).
MAX_SEED = MAX_INIT_SEED

# Fields that may change between a run and its continuation (extending a schedule).
RESUMABLE_FIELDS = ('num_epochs', 'generations', 'solver_steps')

# A field's checks: (test, what a bad value must be), run by TrainConfig.validate in field order.
# NaN fails no `<= 0` test, so the finite check comes first: without it a NaN rate trains.
_FINITE = (lambda v: v is None or math.isfinite(v), 'a finite number')
_POSITIVE = (lambda v: v > 0, 'positive')
_NON_NEGATIVE = (lambda v: v >= 0, '>= 0')
_AT_LEAST_1 = (lambda v: v >= 1, '>= 1')
# Each descendant is one more full replication pass, differentiated through, in every step.
MAX_DESCENDANTS = 100
_AT_MOST_MAX_DESCENDANTS = (lambda v: v <= MAX_DESCENDANTS,
                            f'at most {MAX_DESCENDANTS} (each is a full regeneration in every step)')
_BOTH = ('vanilla', 'auxiliary')


def _field(default, checks=()):
  """A TrainConfig field that `validate` checks but no flag sets."""
  return dataclasses.field(default=default, metadata={'checks': checks})


def _flag(default, help_text, checks=(), choices=None, binaries=_BOTH):
  """A TrainConfig field that the training binaries' flag of the same name sets.

  The flag's type is the field's, its help `help_text`; `choices` (a callable returning the
  names) makes it an enum; `binaries` ('vanilla', 'auxiliary') are the trainers whose --help
  lists it (any of them accepts it). `trainers/cli.py` defines the flags from these fields.
  """
  return dataclasses.field(default=default, metadata={
      'help': help_text, 'checks': checks, 'choices': choices, 'binaries': binaries})


def flag_fields():
  """The TrainConfig fields that are flags, in declaration order."""
  return [f for f in dataclasses.fields(TrainConfig) if 'help' in f.metadata]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How to train a vanilla quine.

  Attributes:
    model: the quine's architecture.
    method: 'optimize' (gradient epochs against frozen targets), 'hill_climb', 'regenerate',
      'alternate' (opt_epochs_per_generation optimisation epochs, then one regeneration) or
      'fixed_point' (solve f_theta(C) = theta with trainers.fixed_point; not in the paper) or
      'replicate' (auxiliary quines: Adam on rho + lambda * cross-entropy with live targets,
      `trainers/aux_lib.py`; not in the paper).
    optimizer: gradient optimizer for 'optimize' and 'alternate'.
    learning_rate: None means DEFAULT_LEARNING_RATES[optimizer].
    num_epochs: epochs of 'optimize' or 'hill_climb'.
    batch_size: coordinates per minibatch; an epoch visits every coordinate once.
    generations: regenerations ('regenerate', 'alternate').
    opt_epochs_per_generation: T of the alternating method.
    noise_stddev: hill-climbing perturbation.
    seed: seed of the shuffling and the hill-climbing noise.
    steps_per_loop: minibatch steps compiled into one call (0 = a whole epoch; for 'replicate',
      0 = 1,000 steps). For 'replicate' it is also the length of a phase (one metrics record).
    eval_chunk_size: coordinates per chunk of the full replication pass. 8192 keeps a chunk's
      [chunk, width] activations in cache: at width 316-1000 it is 25-30% faster than 65536
      (benchmarks/README.md).
    jit_compile: compile the blocks of training steps and the projection hash with XLA when
      training on one replica (XLA cannot compile `strategy.run` across several). 3-5x faster
      steps; the float32 rounding differs from the uncompiled graph (~1e-6 relative per step).
    max_weight_rms: weight RMS above which a run counts as diverged.
    plot_every: phases between predicted-vs-actual images in TensorBoard (0 = only at the end).
    measure_stability: at the end of a run, measure the quine's stability as a fixed point of
      regeneration (`models.stability`: spectrum of J, fertile generations, noise test; for a
      quine that classifies, the test accuracy of every generation too) into stability.json,
      TensorBoard and plots/spectrum.png.
    num_steps: Adam steps of 'replicate' (also the length of its cosine learning-rate decay).
    image_batch_size: training images per step of 'replicate'.
    coordinate_batch_size: coordinates per step of 'replicate' in its unbiased estimate of L_SR
      (a uniform sample without replacement, scaled by N / size; 0 = all N every step).
    task_weight: lambda of L_aux = replication_weight * L_SR + lambda * L_task (auxiliary quines).
    replication_weight: weight of the replication loss; 0 gives the classifier-only baseline on
      the same network and data schedule (auxiliary quines).
    descendants: K of 'replicate': the cross-entropy is the mean over the quine and its next K
      descendants (the child f_theta(C), the grandchild, ...; computed over all N coordinates and
      differentiated through), so that the lineage, not only the quine, is trained to classify.
      With K > 0, rho is computed exactly over all N coordinates (the child is there anyway).
    train_only: 'replicate' trains only these weight tensors (comma-separated canonical names,
      e.g. 'class_head' for the random-features control); '' trains all of theta.
    solver_steps: Levenberg-Marquardt iterations of 'fixed_point' (one phase each).
    lineage_generations: K of 'fixed_point': with K > 1, once the quine stage has run (at most
      `fixed_point.SolverConfig.quine_steps` iterations), the solver minimises the differences
      between the first K + 1 generations, so that the quine's child and grandchild (K = 3) are
      quines too (trainers/fixed_point.py).
    init_from: the name of a pretrained quine (models.list_pretrained()) whose weights start the
      run instead of the initialisation; `model` must be its config. '' = initialise.
  """
  model: ModelConfig = ModelConfig()
  method: str = _flag('optimize', 'Training method (trainers/methods.py).',
                      choices=methods.names)
  optimizer: str = _flag('adamax', 'Gradient optimizer.', choices=lambda: OPTIMIZERS)
  learning_rate: float | None = _flag(None, 'Learning rate (default per optimizer).',
                                      checks=(_FINITE,))
  num_epochs: int = _flag(30, 'Epochs of optimize / hill_climb.', checks=(_NON_NEGATIVE,))
  batch_size: int = _flag(10, 'Coordinates per minibatch.', checks=(_POSITIVE,))
  generations: int = _flag(10, 'Regenerations (regenerate, alternate).', checks=(_NON_NEGATIVE,))
  opt_epochs_per_generation: int = _flag(
      1, 'Optimisation epochs before each regeneration (alternate).', checks=(_POSITIVE,))
  noise_stddev: float = _flag(1e-3, 'Hill-climbing perturbation stddev.',
                              checks=(_FINITE, _POSITIVE), binaries=('vanilla',))
  seed: int = _flag(0, 'Seed of the weight initialisation, the shuffling and the noise.')
  steps_per_loop: int = _flag(0, 'Steps compiled into one call (0 = a whole epoch).',
                              checks=(_NON_NEGATIVE,))
  eval_chunk_size: int = _field(1 << 13, checks=(_POSITIVE,))
  jit_compile: bool = _flag(True, 'XLA-compile the training steps on one replica '
                                  '(--nojit_compile runs them as a plain TensorFlow graph).')
  max_weight_rms: float = _field(1e4, checks=(_FINITE, _POSITIVE))
  plot_every: int = 5
  measure_stability: bool = True
  num_steps: int = _flag(40_000, 'Adam steps of --method=replicate.', binaries=('auxiliary',))
  image_batch_size: int = 256
  coordinate_batch_size: int = 2048
  task_weight: float = _flag(0.01, 'lambda: weight of the task loss.',
                             checks=(_FINITE, _NON_NEGATIVE), binaries=('auxiliary',))
  replication_weight: float = _flag(
      1.0, 'Weight of L_SR in the loss (0 = classifier-only baseline).',
      checks=(_FINITE, _NON_NEGATIVE), binaries=('auxiliary',))
  descendants: int = _flag(
      0, '--method=replicate: average the cross-entropy over the quine and its next K '
      'descendants (its child f_theta(C), grandchild, ...), so that they classify too.',
      checks=(_NON_NEGATIVE, _AT_MOST_MAX_DESCENDANTS), binaries=('auxiliary',))
  train_only: str = _flag(
      '', '--method=replicate: comma-separated weight tensors to train, the others stay at '
      'their initial values (class_head: the random-features control); empty = all.',
      binaries=('auxiliary',))
  solver_steps: int = _flag(80, 'Levenberg-Marquardt iterations of --method=fixed_point.',
                            checks=(_NON_NEGATIVE,), binaries=('vanilla',))
  lineage_generations: int = _flag(
      1, '--method=fixed_point: after the quine stage, make this many generations (the quine, '
      'its child, ...) agree (1 = the quine alone).', checks=(_AT_LEAST_1,),
      binaries=('vanilla',))
  init_from: str = _flag(
      '', 'Start from the weights of this pretrained quine (models.list_pretrained()) instead '
      'of an initialisation; its config fixes the architecture.')

  @property
  def replicate_phase_steps(self):
    """Adam steps per phase of 'replicate'."""
    return self.steps_per_loop or 1000

  @property
  def resolved_learning_rate(self):
    if self.learning_rate is not None:
      return self.learning_rate
    return DEFAULT_LEARNING_RATES[self.optimizer]

  def validate(self):
    """Raises ValueError naming the first bad field (as its flag name)."""
    self.model.validate()
    method = methods.get(self.method)
    if self.model.kind not in method.kinds:
      raise ValueError(method.kind_error.format(method=self.method, kind=self.model.kind))
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f'--optimizer={self.optimizer!r} is not one of {OPTIMIZERS}')
    for field in dataclasses.fields(self):  # the checks each field declares
      value = getattr(self, field.name)
      for test, must_be in field.metadata.get('checks', ()):
        if not test(value):
          raise ValueError(f'--{field.name}={value} must be {must_be}')
    if not 0 <= self.seed < MAX_SEED:
      raise ValueError(f'--seed={self.seed} must be in [0, {MAX_SEED})')
    for name in ('num_steps', 'steps_per_loop', 'eval_chunk_size', 'image_batch_size',
                 'coordinate_batch_size', 'batch_size'):
      if getattr(self, name) > 2**31 - 1:  # they index int32 tensors
        raise ValueError(f'--{name}={getattr(self, name)} must be below 2**31')
    if self.resolved_learning_rate <= 0:
      raise ValueError(f'--learning_rate={self.learning_rate} must be positive')
    if self.batch_size > self.model.num_weights:
      raise ValueError(f'--batch_size={self.batch_size} exceeds the number of weights '
                       f'N={self.model.num_weights}')
    if (self.descendants or self.train_only) and 'replicate' not in method.phases:
      flag = '--descendants' if self.descendants else '--train_only'
      raise ValueError(f'{flag} applies to --method=replicate, not --method={self.method}')
    method.validate(self)
    phases = (method.length or (lambda c: len(method.schedule(c))))(self)
    if phases > MAX_PHASES:
      raise ValueError(f'--method={self.method} with these counts is {phases:,} phases, more than '
                       f'a run may have ({MAX_PHASES:,}): lower --num_epochs, --generations, '
                       '--solver_steps or --num_steps, or raise --steps_per_loop')
    return self

  def schedule(self):
    """The run as a list of phase names (`trainers.methods`): 'optimize', 'hill_climb' (one epoch
    each), 'regenerate', 'fixed_point' (one solver iteration), 'replicate' (replicate_phase_steps
    Adam steps), or those of a registered method."""
    return methods.get(self.method).schedule(self)

  def to_dict(self):
    d = dataclasses.asdict(self)
    d['model'] = self.model.to_dict()
    if not self.init_from:
      del d['init_from']  # so that the config.json of earlier runs still matches theirs
    return d

  @classmethod
  def from_dict(cls, d):
    d = dict(d)
    d['model'] = ModelConfig.from_dict(d['model'])
    return cls(**d)


PRESETS = {
    # The paper's vanilla quine: 100 units, 2 SELU layers, minibatches of 10, Adamax, 30 epochs;
    # for 'alternate' T = 1 and G = 10 (the paper's best).
    'paper': TrainConfig(),
    # Paper schedule and method of the best result: alternate T = 1, G = 10, Adamax.
    'paper_alternate': TrainConfig(method='alternate', generations=10,
                                   opt_epochs_per_generation=1),
    # For tests and smoke runs: N = 2 * 4 * 4 + 4 = 36 weights.
    'tiny': TrainConfig(model=ModelConfig(width=4), batch_size=2, num_epochs=3, generations=2,
                        plot_every=0),
    # A mid-sized quine for quick experiments: N = 2 * 30 * 30 + 30 = 1,830.
    'small': TrainConfig(model=ModelConfig(width=30), num_epochs=30),
    # Not in the paper: a fertile quine of the paper's size (docs/QUINES.md). The architecture
    # variant: one weight-standardised ReLU hidden layer of 142 units (gain 0.4) and a tanh output,
    # N = 142 * 142 + 142 = 20,306. The paper's own regeneration finds it from the initial weights,
    # because it is an attracting fixed point: every eigenvalue of J is inside the unit circle
    # (radius 0.674), so its descendants are quines for ever and perturbed copies return. ~50
    # generations reach float32 round-off; 100 leave a margin.
    'stable': TrainConfig(
        model=ModelConfig(width=142, num_hidden=1, activation='relu', output_activation='tanh',
                          kernel_norm='standardise', gain=0.4),
        method='regenerate', generations=100, plot_every=20),
    # The first contracting quine found, at width 4 (N = 36): weight-standardised tanh hidden
    # layers and a tanh output, projection std 1/sqrt(4); solved by 'fixed_point' (radius 0.854).
    # 7 of init seeds 0-9 reach it with this projection; the default, 2, is the first of them.
    'stable_w4': TrainConfig(
        model=ModelConfig(width=4, activation='tanh', output_activation='tanh',
                          kernel_norm='standardise', projection_std=0.5, projection_seed=5,
                          init_seed=2),
        method='fixed_point', solver_steps=80, batch_size=2, plot_every=0),
}


_AUX_MODEL = ModelConfig(kind='auxiliary')

AUX_PRESETS = {
    # The paper's auxiliary quine: 50 + 50 input units, 2 SELU layers of 100, weight head and
    # 10-class head (temperature 0.01), N = 21,100; Adamax, minibatches of 10, lambda = 0.01,
    # 30 epochs.
    'paper': TrainConfig(model=_AUX_MODEL, num_epochs=30),
    # Not in the paper: the same network trained to replicate and classify (aux_lib, method
    # 'replicate'): Adam 3e-3 with cosine decay, 40,000 steps of 256 images and 2,048
    # coordinates, loss rho + lambda * cross-entropy.
    'replicate': TrainConfig(model=_AUX_MODEL, method='replicate', optimizer='adam',
                             learning_rate=3e-3, task_weight=1.0, plot_every=10),
    # Not in the paper: the fertile family (the vanilla 'stable' preset's one standardised ReLU
    # layer and tanh weight head) with an image input, 71 coordinate + 71 image units, N =
    # 21,726; Adam 3e-3 on rho + lambda * (cross-entropy of the quine and of its next 4
    # descendants), 3,000 steps. docs/FERTILE_AUX.md: its lineage still falls to a blank
    # attractor.
    'lineage': TrainConfig(
        model=ModelConfig(kind='auxiliary', width=142, coordinate_units=71, num_hidden=1,
                          activation='relu', output_activation='tanh',
                          kernel_norm='standardise', gain=0.7),
        method='replicate', optimizer='adam', learning_rate=3e-3, task_weight=0.05,
        descendants=4, num_steps=3000, steps_per_loop=250, plot_every=4),
    # The same, with the weight head deep in tanh saturation (the coordinate projection's std 1,
    # gain 1: |h @ weight_head| of several units), where a printed weight is nearly its sign and
    # J = diag(1 - tanh^2) dz/dtheta is small wherever the margin is; image projection std 0.1
    # and temperature 10 keep the class head's logits in range.
    'lineage_saturated': TrainConfig(
        model=ModelConfig(kind='auxiliary', width=142, coordinate_units=71, num_hidden=1,
                          activation='relu', output_activation='tanh',
                          kernel_norm='standardise', gain=1.0, projection_std=1.0,
                          image_projection_std=0.1, temperature=10.0),
        method='replicate', optimizer='adam', learning_rate=3e-3, task_weight=0.05,
        descendants=4, num_steps=3000, steps_per_loop=250, plot_every=4),
    # The same network and schedule, 5 epochs: the README's main job, a few minutes on a CPU.
    'short': TrainConfig(model=_AUX_MODEL, num_epochs=5),
    # For tests: width 8 (4 + 4 input units), 16-pixel images, 3 classes, N = 2*64 + 8 + 24 = 160.
    'tiny': TrainConfig(
        model=ModelConfig(kind='auxiliary', width=8, coordinate_units=4, image_size=16,
                          num_classes=3, temperature=0.1),
        batch_size=2, num_epochs=2, plot_every=0),
}


# Each quine kind's presets (its trainer's --preset choices).
PRESETS_BY_KIND = {'vanilla': PRESETS, 'auxiliary': AUX_PRESETS}


def get_preset(name, presets=None):
  presets = PRESETS if presets is None else presets
  if name not in presets:
    raise ValueError(f'--preset={name!r} is not one of {sorted(presets)}')
  return presets[name]
