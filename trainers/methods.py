"""Training methods and their phases, as registry entries.

A run is a list of phases (`TrainConfig.schedule()`); after each one the trainer measures the full
replication pass, records it and saves a checkpoint. A **phase** is a named function of the
trainer and the phase number that returns its own metrics, and says whether it counts as an epoch
or a generation in the records. A **method** is data plus small functions: the quine kinds it
trains, its schedule (the run as phase names), its validation, and optional hooks for the state it
needs (the fixed-point solver) and its optimizer. Adding a method is one `register(Method(...))`,
and `tests/test_methods.py` registers a toy one and takes it through train, resume and export.

  methods.register(methods.Method(
      name='shrink', kinds=('vanilla',), phases=('shrink',),
      schedule=lambda config: ['shrink'] * config.generations))

The trainers never branch on a method's name: `QuineTrainer.run_phase` looks the phase up here.
"""

import dataclasses
from typing import Callable

import keras

from models.architecture import Architecture
from trainers import fixed_point

# Phase kinds that advance the records' 'epoch' and 'generation' counters.
EPOCH = 'epoch'
GENERATION = 'generation'


def make_optimizer(name, learning_rate):
  """The Keras optimizer called `name`, with PyTorch's default hyper-parameters.

  PyTorch's defaults (epsilons, RMSprop's decay 0.99, Adagrad's zero initial accumulator) rather
  than Keras's, to stay close to the setting the paper's numbers most likely come from; 'momentum'
  is SGD with momentum 0.9.
  """
  return {
      'sgd': lambda: keras.optimizers.SGD(learning_rate),
      'momentum': lambda: keras.optimizers.SGD(learning_rate, momentum=0.9),
      'adam': lambda: keras.optimizers.Adam(learning_rate, epsilon=1e-8),
      'adagrad': lambda: keras.optimizers.Adagrad(
          learning_rate, initial_accumulator_value=0.0, epsilon=1e-10),
      'adamax': lambda: keras.optimizers.Adamax(learning_rate, epsilon=1e-8),
      'rmsprop': lambda: keras.optimizers.RMSprop(learning_rate, rho=0.99, epsilon=1e-8),
  }[name]()


@dataclasses.dataclass(frozen=True)
class Phase:
  """One kind of phase.

  Attributes:
    name: its name in the schedule and in every metrics record ('kind').
    run: (trainer, phase number) -> dict of the phase's own metrics (Python floats).
    counts: EPOCH, GENERATION or None: the record counter it advances.
  """
  name: str
  run: Callable[..., dict]
  counts: str | None = None


@dataclasses.dataclass(frozen=True)
class Method:
  """One training method.

  Attributes:
    name: the value of --method.
    kinds: the quine kinds it trains ('vanilla', 'auxiliary').
    phases: the phase names its schedule uses (each registered with `register_phase`).
    schedule: TrainConfig -> the run as a list of phase names.
    length: TrainConfig -> the number of phases, computed without building the schedule, so that
      a schedule too long to hold is refused before any work (default: len(schedule(config)).
    validate: TrainConfig -> None; raises ValueError naming the flag of a bad field.
    setup: trainer -> None; creates the method's own state once the model and optimizer exist and
      before the checkpoint is restored (it may add objects to `trainer.checkpoint`).
    optimizer: TrainConfig -> Keras optimizer, or None for the configured one at a constant rate.
    kind_error: the message for a quine kind it does not train ({kind} is filled in).
    uses_optimizer: whether its phases take gradient steps with --optimizer (plots and logs
      name the optimizer only then).
  """
  name: str
  kinds: tuple[str, ...]
  phases: tuple[str, ...]
  schedule: Callable[..., list]
  length: Callable[..., int] | None = None
  validate: Callable[..., None] = lambda config: None
  setup: Callable[..., None] | None = None
  optimizer: Callable[..., object] | None = None
  kind_error: str = '--method={method} is not supported for {kind} quines'
  uses_optimizer: bool = False


_PHASES = {}
_METHODS = {}


def register_phase(phase):
  """Adds a phase kind; returns it."""
  if phase.name in _PHASES:
    raise ValueError(f'a phase named {phase.name!r} is already registered')
  _PHASES[phase.name] = phase
  return phase


def register(method):
  """Adds a training method; returns it. Its phases must be registered already."""
  if method.name in _METHODS:
    raise ValueError(f'a method named {method.name!r} is already registered')
  missing = [p for p in method.phases if p not in _PHASES]
  if missing:
    raise ValueError(f'method {method.name!r} uses unregistered phases {missing}')
  _METHODS[method.name] = method
  return method


def unregister(name):
  """Removes method `name` (and nothing else); for tests that register a toy method."""
  del _METHODS[name]


def unregister_phase(name):
  """Removes phase `name`; for tests."""
  del _PHASES[name]


def names():
  """The registered methods' names, in registration order."""
  return tuple(_METHODS)


def get(name):
  """The method called `name`.

  Raises:
    ValueError: no such method, naming the flag and the choices.
  """
  if name not in _METHODS:
    raise ValueError(f'--method={name!r} is not one of {names()}')
  return _METHODS[name]


def phase(name):
  """The phase kind called `name`."""
  return _PHASES[name]


def counters(schedule, done):
  """{'epoch': ..., 'generation': ...} after the first `done` phases of `schedule`."""
  counts = [_PHASES[kind].counts for kind in schedule[:done]]
  return {'epoch': counts.count(EPOCH), 'generation': counts.count(GENERATION)}


# ------------------------------------------------------------------------------ the phases


def _solver_step(trainer, phase_number):
  del phase_number
  diagnostics = trainer.solver.step()
  return {f'solver_{k}': float(v) for k, v in diagnostics.items()
          if k in ('stage', 'beta', 'lineage_span', 'stage_rho', 'damping', 'cg_iterations',
                   'accepted')}


def _regenerate(trainer, phase_number):
  del phase_number
  trainer.regenerate()
  return {}


register_phase(Phase('optimize', lambda trainer, p: trainer.run_epoch('optimize', p), EPOCH))
register_phase(Phase('hill_climb', lambda trainer, p: trainer.run_epoch('hill_climb', p), EPOCH))
register_phase(Phase('regenerate', _regenerate, GENERATION))
register_phase(Phase('fixed_point', _solver_step))
register_phase(Phase('replicate', lambda trainer, p: trainer.replicate_phase(p)))


# ------------------------------------------------------------------------------ the methods


def _positive(config, *names_):
  for name in names_:
    if getattr(config, name) <= 0:
      raise ValueError(f'--{name}={getattr(config, name)} must be positive')


def _setup_solver(trainer):
  # Levenberg-Marquardt on the whole of theta: it runs on one device, in cross-replica context;
  # its damping and continuation stage are checkpointed with the weights.
  trainer.solver = fixed_point.FixedPointSolver(
      trainer.model, fixed_point.SolverConfig(lineage_span=trainer.config.lineage_generations))
  trainer.checkpoint.solver = trainer.solver


def trained_names(config):
  """The weight tensors that --train_only names (all of them when it is empty), in canonical
  order; ValueError naming the flag for an unknown name."""
  names_ = Architecture(config.model).weight_names
  if not config.train_only:
    return names_
  asked = [name.strip() for name in config.train_only.split(',')]
  unknown = [name for name in asked if name not in names_]
  if unknown or not asked:
    raise ValueError(f'--train_only={config.train_only!r} must name weight tensors of this '
                     f'quine, comma-separated: {", ".join(names_)}')
  return [name for name in names_ if name in asked]


def _validate_replicate(config):
  _positive(config, 'num_steps', 'image_batch_size')
  if config.coordinate_batch_size < 0:
    raise ValueError(f'--coordinate_batch_size={config.coordinate_batch_size} must be >= 0')
  trained_names(config)


def _cosine_optimizer(config):
  # The accuracy rises most in the last third of the run, as the learning rate anneals.
  schedule = keras.optimizers.schedules.CosineDecay(config.resolved_learning_rate,
                                                    config.num_steps)
  return make_optimizer(config.optimizer, schedule)


_BOTH = ('vanilla', 'auxiliary')

# The paper's methods.
def _repeat(phase, count):
  """A method's schedule and length: one phase, `count(config)` times."""
  return {'schedule': lambda config: [phase] * count(config), 'length': count}


def _alternations(config):
  return (config.opt_epochs_per_generation + 1) * config.generations


def _replicate_phases(config):
  return -(-config.num_steps // config.replicate_phase_steps)


# The paper's methods.
register(Method('optimize', _BOTH, ('optimize',), uses_optimizer=True,
                **_repeat('optimize', lambda config: config.num_epochs)))
register(Method('hill_climb', ('vanilla',), ('hill_climb',),
                **_repeat('hill_climb', lambda config: config.num_epochs)))
register(Method('regenerate', _BOTH, ('regenerate',),
                **_repeat('regenerate', lambda config: config.generations)))
register(Method('alternate', _BOTH, ('optimize', 'regenerate'), uses_optimizer=True,
                schedule=lambda config: (['optimize'] * config.opt_epochs_per_generation
                                         + ['regenerate']) * config.generations,
                length=_alternations))
# Not in the paper: solve f_theta(C) = theta (trainers/fixed_point.py).
register(Method('fixed_point', ('vanilla',), ('fixed_point',), setup=_setup_solver,
                **_repeat('fixed_point', lambda config: config.solver_steps)))
# Not in the paper: Adam on rho + lambda * cross-entropy with live targets (trainers/aux_lib.py).
register(Method('replicate', ('auxiliary',), ('replicate',), uses_optimizer=True,
                validate=_validate_replicate, optimizer=_cosine_optimizer,
                kind_error='--method=replicate trains auxiliary quines; use train_aux.py',
                **_repeat('replicate', _replicate_phases)))
