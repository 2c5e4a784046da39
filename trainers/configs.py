"""Training configurations: frozen dataclasses and named presets.

A preset fixes the model and the schedule; flags override single fields. The resolved
configuration is written to `<workdir>/config.json`.
"""

import dataclasses
import math

from models.config import ModelConfig

METHODS = ('optimize', 'hill_climb', 'regenerate', 'alternate', 'fixed_point', 'replicate')
OPTIMIZERS = ('sgd', 'momentum', 'adam', 'adagrad', 'adamax', 'rmsprop')

# Learning rates used when none is given: PyTorch's defaults (Adam 1e-3, Adagrad 1e-2, Adamax 2e-3,
# RMSprop 1e-2; SGD has none there, 1e-2 here), the framework the paper's numbers are most likely
# from. RMSprop at 1e-2 is the setting that explodes in the paper.
DEFAULT_LEARNING_RATES = {'sgd': 0.01, 'momentum': 0.01, 'adam': 0.001, 'adagrad': 0.01,
                          'adamax': 0.002, 'rmsprop': 0.01}

# Fields that may change between a run and its continuation (extending a schedule).
RESUMABLE_FIELDS = ('num_epochs', 'generations', 'solver_steps')
# Float fields for which NaN or an infinity means nothing (each is also a flag of that name).
_FINITE_FIELDS = ('learning_rate', 'noise_stddev', 'max_weight_rms', 'task_weight',
                  'replication_weight')


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
    measure_stability: at the end of a vanilla run, measure the quine's stability as a fixed point
      of regeneration (`models.stability`: spectrum of J, fertile generations, noise test) into
      stability.json, TensorBoard and plots/spectrum.png.
    num_steps: Adam steps of 'replicate' (also the length of its cosine learning-rate decay).
    image_batch_size: training images per step of 'replicate'.
    coordinate_batch_size: coordinates per step of 'replicate' in its unbiased estimate of L_SR
      (a uniform sample without replacement, scaled by N / size; 0 = all N every step).
    task_weight: lambda of L_aux = replication_weight * L_SR + lambda * L_task (auxiliary quines).
    replication_weight: weight of the replication loss; 0 gives the classifier-only baseline on
      the same network and data schedule (auxiliary quines).
    solver_steps: Levenberg-Marquardt iterations of 'fixed_point' (one phase each).
    lineage_generations: K of 'fixed_point': with K > 1, once the quine stage has run (at most
      `fixed_point.SolverConfig.quine_steps` iterations), the solver minimises the differences
      between the first K + 1 generations, so that the quine's child and grandchild (K = 3) are
      quines too (trainers/fixed_point.py).
    init_from: the name of a pretrained quine (models.list_pretrained()) whose weights start the
      run instead of the initialisation; `model` must be its config. '' = initialise.
  """
  model: ModelConfig = ModelConfig()
  method: str = 'optimize'
  optimizer: str = 'adamax'
  learning_rate: float | None = None
  num_epochs: int = 30
  batch_size: int = 10
  generations: int = 10
  opt_epochs_per_generation: int = 1
  noise_stddev: float = 1e-3
  seed: int = 0
  steps_per_loop: int = 0
  eval_chunk_size: int = 1 << 13
  jit_compile: bool = True
  max_weight_rms: float = 1e4
  plot_every: int = 5
  measure_stability: bool = True
  num_steps: int = 40_000
  image_batch_size: int = 256
  coordinate_batch_size: int = 2048
  task_weight: float = 0.01
  replication_weight: float = 1.0
  solver_steps: int = 80
  lineage_generations: int = 1
  init_from: str = ''

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
    if self.method not in METHODS:
      raise ValueError(f'--method={self.method!r} is not one of {METHODS}')
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f'--optimizer={self.optimizer!r} is not one of {OPTIMIZERS}')
    for name in _FINITE_FIELDS:
      # NaN fails no `<= 0` test: without this, a NaN rate trains and diverges.
      value = getattr(self, name)
      if value is not None and not math.isfinite(value):
        raise ValueError(f'--{name}={value} must be a finite number')
    if self.resolved_learning_rate <= 0:
      raise ValueError(f'--learning_rate={self.learning_rate} must be positive')
    for name in ('num_epochs', 'generations'):
      if getattr(self, name) < 0:
        raise ValueError(f'--{name}={getattr(self, name)} must be >= 0')
    for name in ('batch_size', 'opt_epochs_per_generation', 'eval_chunk_size'):
      if getattr(self, name) <= 0:
        raise ValueError(f'--{name}={getattr(self, name)} must be positive')
    if self.batch_size > self.model.num_weights:
      raise ValueError(f'--batch_size={self.batch_size} exceeds the number of weights '
                       f'N={self.model.num_weights}')
    if self.steps_per_loop < 0:
      raise ValueError(f'--steps_per_loop={self.steps_per_loop} must be >= 0')
    if self.noise_stddev <= 0:
      raise ValueError(f'--noise_stddev={self.noise_stddev} must be positive')
    if self.max_weight_rms <= 0:
      raise ValueError(f'--max_weight_rms={self.max_weight_rms} must be positive')
    if self.solver_steps < 0:
      raise ValueError(f'--solver_steps={self.solver_steps} must be >= 0')
    if self.lineage_generations < 1:
      raise ValueError(f'--lineage_generations={self.lineage_generations} must be >= 1')
    if self.model.kind == 'auxiliary':
      if self.method in ('hill_climb', 'fixed_point'):
        raise ValueError(f'--method={self.method} is not supported for auxiliary quines')
      if self.method == 'replicate':
        for name in ('num_steps', 'image_batch_size'):
          if getattr(self, name) <= 0:
            raise ValueError(f'--{name}={getattr(self, name)} must be positive')
        if self.coordinate_batch_size < 0:
          raise ValueError(f'--coordinate_batch_size={self.coordinate_batch_size} must be >= 0')
      for name in ('task_weight', 'replication_weight'):
        if getattr(self, name) < 0:
          raise ValueError(f'--{name}={getattr(self, name)} must be >= 0')
    elif self.method == 'replicate':
      raise ValueError('--method=replicate trains auxiliary quines; use train_aux.py')
    return self

  def schedule(self):
    """The run as a list of phases: 'optimize', 'hill_climb' (one epoch each), 'regenerate' or
    'fixed_point' (one solver iteration) or 'replicate' (replicate_phase_steps Adam steps)."""
    if self.method in ('optimize', 'hill_climb'):
      return [self.method] * self.num_epochs
    if self.method == 'regenerate':
      return ['regenerate'] * self.generations
    if self.method == 'fixed_point':
      return ['fixed_point'] * self.solver_steps
    if self.method == 'replicate':
      return ['replicate'] * -(-self.num_steps // self.replicate_phase_steps)
    return (['optimize'] * self.opt_epochs_per_generation + ['regenerate']) * self.generations

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
    # The same network and schedule, 5 epochs: the README's main job, a few minutes on a CPU.
    'short': TrainConfig(model=_AUX_MODEL, num_epochs=5),
    # For tests: width 8 (4 + 4 input units), 16-pixel images, 3 classes, N = 2*64 + 8 + 24 = 160.
    'tiny': TrainConfig(
        model=ModelConfig(kind='auxiliary', width=8, coordinate_units=4, image_size=16,
                          num_classes=3, temperature=0.1),
        batch_size=2, num_epochs=2, plot_every=0),
}


def get_preset(name, presets=None):
  presets = PRESETS if presets is None else presets
  if name not in presets:
    raise ValueError(f'--preset={name!r} is not one of {sorted(presets)}')
  return presets[name]
