"""Flags shared by the training binaries, and the one function that turns them into a config.

Imported only by the `train_*.py` binaries: libraries never read flags.
"""

import dataclasses
import json
import os
import sys

from absl import flags
from absl import logging
import tensorflow as tf

from export import saved_model
from models import activations
from models import stability as stability_lib
from models import zoo
from models.config import INITS
from models.config import KERNEL_NORMS
from trainers import configs
from trainers import strategies
from trainers import train_lib
from trainers import workdir as workdir_lib

WORKDIR = flags.DEFINE_string('workdir', None, 'Folder of the run (config, checkpoints, logs).',
                              required=True)
PRESET = flags.DEFINE_enum(
    'preset', None, sorted(set(configs.PRESETS) | set(configs.AUX_PRESETS)),
    'Named configuration; train_vanilla.py takes ' + ', '.join(configs.PRESETS)
    + '; train_aux.py takes ' + ', '.join(configs.AUX_PRESETS) + '.')
METHOD = flags.DEFINE_enum('method', None, configs.METHODS, 'Training method.')
OPTIMIZER = flags.DEFINE_enum('optimizer', None, configs.OPTIMIZERS, 'Gradient optimizer.')
LEARNING_RATE = flags.DEFINE_float('learning_rate', None, 'Learning rate (default per optimizer).')
NUM_EPOCHS = flags.DEFINE_integer('num_epochs', None, 'Epochs of optimize / hill_climb.')
BATCH_SIZE = flags.DEFINE_integer('batch_size', None, 'Coordinates per minibatch.')
GENERATIONS = flags.DEFINE_integer('generations', None, 'Regenerations (regenerate, alternate).')
OPT_EPOCHS = flags.DEFINE_integer('opt_epochs_per_generation', None,
                                  'Optimisation epochs before each regeneration (alternate).')
NOISE_STDDEV = flags.DEFINE_float('noise_stddev', None, 'Hill-climbing perturbation stddev.')
SEED = flags.DEFINE_integer('seed', None,
                            'Seed of the weight initialisation, the shuffling and the noise.')
WIDTH = flags.DEFINE_integer('width', None, 'Hidden units (every hidden matrix is width^2).')
NUM_HIDDEN = flags.DEFINE_integer('num_hidden', None, 'Number of hidden width x width matrices.')
ACTIVATION = flags.DEFINE_enum('activation', None, activations.names(),
                               'Hidden activation (models/activations.py).')
OUTPUT_ACTIVATION = flags.DEFINE_enum('output_activation', None, activations.names(),
                                      'Activation of the weight-prediction output.')
FREQUENCY = flags.DEFINE_float('frequency', None,
                               'omega of the sin activation, sin(omega * x) (SIREN\'s w0).')
INIT = flags.DEFINE_enum('init', None, INITS, 'Weight initialisation.')
KERNEL_NORM = flags.DEFINE_enum('kernel_norm', None, KERNEL_NORMS,
                                'Hidden kernels used as they are (none) or weight-standardised.')
GAIN = flags.DEFINE_float('gain', None, 'Gain of the weight standardisation (--kernel_norm).')
INIT_FROM = flags.DEFINE_string(
    'init_from', None, 'Start from the weights of this pretrained quine (models.list_pretrained())'
    ' instead of an initialisation; its config fixes the architecture.')
SOLVER_STEPS = flags.DEFINE_integer('solver_steps', None,
                                    'Levenberg-Marquardt iterations of --method=fixed_point.')
LINEAGE_GENERATIONS = flags.DEFINE_integer(
    'lineage_generations', None, '--method=fixed_point: after the quine stage, make this many '
    'generations (the quine, its child, ...) agree (1 = the quine alone).')
STEPS_PER_LOOP = flags.DEFINE_integer('steps_per_loop', None,
                                      'Steps compiled into one call (0 = a whole epoch).')
JIT_COMPILE = flags.DEFINE_bool(
    'jit_compile', None, 'XLA-compile the training steps on one replica (default: on; '
    '--nojit_compile runs them as a plain TensorFlow graph).')
STRATEGY = flags.DEFINE_enum('strategy', 'default', strategies.STRATEGIES,
                             'tf.distribute strategy: default, one_device, mirrored (all local '
                             'GPUs), multi_worker (from TF_CONFIG) or tpu.')
TPU = flags.DEFINE_string('tpu', None, 'TPU name or grpc:// address for --strategy=tpu '
                          '(local on a TPU VM).')
CPU_DEVICES = flags.DEFINE_integer(
    'cpu_devices', 0, 'Split the CPU into this many logical devices (to try --strategy=mirrored '
    'without GPUs).')
INTRA_OP_THREADS = flags.DEFINE_integer(
    'intra_op_threads', None, 'Threads TensorFlow may use inside one op (0 = one per core). '
    'Default: 1 for quines of width <= 200, whose ops are too small to split (a paper epoch is '
    '2.5x faster on one thread than on two), else one per core.')

# Up to this hidden width a quine's ops run fastest on one thread (benchmarks/README.md).
_SINGLE_THREAD_MAX_WIDTH = 200
# ModelConfig fields set by flags, and their flags.
_MODEL_FLAGS = {'width': 'width', 'num_hidden': 'num_hidden', 'init': 'init',
                'activation': 'activation', 'init_seed': 'seed', 'gain': 'gain'}
EXPORT_DIR = flags.DEFINE_string(
    'export_dir', None, 'At the end of a finished run, export the quine to '
    'EXPORT_DIR/MODEL_NAME/VERSION (SavedModel, ONNX, safetensors dump).')
MODEL_NAME = flags.DEFINE_string('model_name', None,
                                 'Name of the export (default: the quine kind).')
FORCE_NEW_VERSION = flags.DEFINE_bool(
    'force_new_version', False, 'With --export_dir: export a new version even when the newest '
    'one already holds this checkpoint (a rerun of a finished command otherwise exports nothing '
    'and names that version).')
OVERWRITE = flags.DEFINE_bool('overwrite', False,
                              'Move a different run already in --workdir aside and start anew.')


def config_from_flags(presets, default_preset, **extra_overrides):
  """The preset with every given flag applied; with FLAGS read nowhere else.

  Args:
    presets: the binary's presets.
    default_preset: the preset used when --preset is not given.
    **extra_overrides: further TrainConfig fields from the binary's own flags (None = keep).

  Returns:
    The validated TrainConfig.

  Raises:
    ValueError: naming the bad flag.
  """
  config = configs.get_preset(PRESET.value or default_preset, presets)
  model_overrides = {'width': WIDTH.value, 'num_hidden': NUM_HIDDEN.value, 'init': INIT.value,
                     'activation': ACTIVATION.value, 'output_activation': OUTPUT_ACTIVATION.value,
                     'frequency': FREQUENCY.value, 'kernel_norm': KERNEL_NORM.value,
                     'gain': GAIN.value, 'init_seed': SEED.value}
  if INIT_FROM.value:
    model = _pretrained_model(INIT_FROM.value, config.model.kind, model_overrides)
  else:
    model = dataclasses.replace(
        config.model, **{k: v for k, v in model_overrides.items() if v is not None})
  overrides = {
      'method': METHOD.value, 'optimizer': OPTIMIZER.value,
      'learning_rate': LEARNING_RATE.value, 'num_epochs': NUM_EPOCHS.value,
      'batch_size': BATCH_SIZE.value, 'generations': GENERATIONS.value,
      'opt_epochs_per_generation': OPT_EPOCHS.value, 'noise_stddev': NOISE_STDDEV.value,
      'seed': SEED.value, 'steps_per_loop': STEPS_PER_LOOP.value,
      'solver_steps': SOLVER_STEPS.value, 'jit_compile': JIT_COMPILE.value,
      'lineage_generations': LINEAGE_GENERATIONS.value, 'init_from': INIT_FROM.value,
      **extra_overrides}
  try:
    model.validate()
  except ValueError as e:  # models/ names its fields; say which flag set one
    field, _, rest = str(e).partition('=')
    if field in _MODEL_FLAGS:
      raise ValueError(f'--{_MODEL_FLAGS[field]}={rest}') from e
    raise
  config = dataclasses.replace(
      config, model=model, **{k: v for k, v in overrides.items() if v is not None})
  return config.validate()


def _pretrained_model(name, kind, model_overrides):
  """The ModelConfig of pretrained quine `name`, checked against the binary and the flags.

  The pretrained quine fixes the architecture: a model flag may repeat its value, not change it.
  --seed seeds the run's shuffling and noise only (the weights come from the quine).
  """
  try:
    model = zoo.load_config(name)
  except zoo.PretrainedError as e:
    raise ValueError(f'--init_from={name}: {e}') from e
  if model.kind != kind:
    raise ValueError(f'--init_from={name} is an {model.kind} quine; this binary trains '
                     f'{kind} ones')
  for field, value in model_overrides.items():
    if field != 'init_seed' and value is not None and value != getattr(model, field):
      raise ValueError(f'--{_MODEL_FLAGS.get(field, field)}={value} contradicts '
                       f'--init_from={name}, whose {field} is {getattr(model, field)}')
  return model


def check_export_flags(config):
  """Checks --model_name and that --export_dir can be written, before any training.

  Raises:
    ValueError: naming the flag.
  """
  if not EXPORT_DIR.value:
    return
  name = MODEL_NAME.value or config.model.kind
  try:
    saved_model.check_model_name(name)
  except saved_model.ExportError as e:
    raise ValueError(f'--model_name={name}: {e}') from e
  if '://' in EXPORT_DIR.value:
    raise ValueError(f'--export_dir={EXPORT_DIR.value}: exports are written to a local folder '
                     '(copy them to remote storage afterwards)')
  target = os.path.abspath(os.path.join(EXPORT_DIR.value, name))
  existing = target
  while not os.path.exists(existing):  # the folder that will hold the new ones
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ValueError(f'--export_dir={EXPORT_DIR.value}: {existing} is not a directory')
  if not os.access(existing, os.W_OK | os.X_OK) or os.statvfs(existing).f_flag & os.ST_RDONLY:
    raise ValueError(f'--export_dir={EXPORT_DIR.value}: {existing} is not writable')


flags.register_validator('cpu_devices', lambda n: n >= 0, '--cpu_devices must be >= 0')
flags.register_validator('intra_op_threads', lambda n: n is None or n >= 0,
                         '--intra_op_threads must be >= 0')
flags.register_multi_flags_validator(
    ['tpu', 'strategy'], lambda f: not f['tpu'] or f['strategy'] == 'tpu',
    '--tpu needs --strategy=tpu')
flags.register_multi_flags_validator(
    ['tpu', 'strategy'], lambda f: f['strategy'] != 'tpu' or bool(f['tpu']),
    '--strategy=tpu needs --tpu=NAME (a TPU name, a grpc:// address, or local on a TPU VM)')


def strategy_from_flags(config):
  """The tf.distribute strategy the flags ask for (built once, before any model).

  Also applies --intra_op_threads (or its default for `config`'s width), which like the device
  split must come before any op runs.
  """
  threads = INTRA_OP_THREADS.value
  if threads is None:
    threads = 1 if config.model.width <= _SINGLE_THREAD_MAX_WIDTH else 0
  if threads:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
  return strategies.make_strategy(STRATEGY.value, tpu=TPU.value, cpu_devices=CPU_DEVICES.value)


def fail(message):
  """Exits with one line naming the program and the problem."""
  sys.exit(f'{os.path.basename(sys.argv[0])}: error: {message}')


def log_start(strategy, config):
  logging.info('Strategy %s with %d replica(s), %s intra-op thread(s)', type(strategy).__name__,
               strategy.num_replicas_in_sync,
               tf.config.threading.get_intra_op_parallelism_threads() or 'default')
  logging.info('Config: %s', json.dumps(train_lib.config_dict(config), sort_keys=True))


def finish(record, config):
  """Prints the run's summary, exports it if --export_dir asks, exits 3 if it diverged."""
  print(summary_line(record, WORKDIR.value))
  if record['status'] == 'diverged':
    sys.exit(3)
  if EXPORT_DIR.value:
    try:
      name = MODEL_NAME.value or config.model.kind
      before = saved_model.versions(os.path.join(EXPORT_DIR.value, name))
      exported = saved_model.export_workdir(WORKDIR.value, EXPORT_DIR.value, name,
                                            force_new_version=FORCE_NEW_VERSION.value)
    except saved_model.ExportError as e:
      fail(e)
    if int(os.path.basename(exported)) in before:
      print(f'already exported: {exported} holds this checkpoint (--force_new_version exports '
            'another version)')
    else:
      print(f'exported: {exported}')


def summary_line(record, workdir):
  line = (f'{record["status"]}: phase {record["phase"]}, L_SR={record["l_sr"]:.6g} '
          f'rho={record["rho"]:.6g} R2={record["r2"]:.6g} weight_rms={record["weight_rms"]:.4g}')
  if 'test_accuracy' in record:
    line += f' test_accuracy={record["test_accuracy"]:.4f}'
  stability_path = os.path.join(workdir, workdir_lib.STABILITY_FILE)
  if record['status'] == 'finished' and os.path.exists(stability_path):
    with open(stability_path) as f:
      line += f'\nstability: {stability_lib.summary_line(json.load(f))}'
  return f'{line}\nmetrics: {workdir}/metrics.jsonl; plots: {workdir}/plots; ' \
         f'tensorboard --logdir={workdir}'
