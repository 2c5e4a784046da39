"""Flags shared by the training binaries, and the one function that turns them into a config.

Imported only by the `train_*.py` binaries: libraries never read flags.
"""

import dataclasses
import json
import os
import sys
import typing

from absl import flags
from absl import logging
import tensorflow as tf

import formats
from export import exporter
from models import stability as stability_lib
from models import zoo
from models import config as model_config
from models.config import ModelConfig
from trainers import configs
from trainers import methods
from trainers import strategies
from trainers import train_lib
from trainers import workdir as workdir_lib

WORKDIR = flags.DEFINE_string('workdir', None,
                              'Folder of the run (config, checkpoints, logs); required.')
PRESET = flags.DEFINE_enum(
    'preset', None, sorted(set(configs.PRESETS) | set(configs.AUX_PRESETS)),
    'Named configuration; train_vanilla.py takes ' + ', '.join(configs.PRESETS)
    + '; train_aux.py takes ' + ', '.join(configs.AUX_PRESETS) + '.')
DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'tfds data dir holding mnist/3.0.1 (default: TFDS_DATA_DIR, else '
    '~/tensorflow_datasets).')
DOWNLOAD = flags.DEFINE_bool('download', True,
                             'Let tfds download MNIST if missing (--nodownload forbids it).')


_PRESET_DEFAULT = ' Default: the preset\'s value.'


def _define_field_flag(name, field):
  """Defines --name from a config field: its type, its help and, for an enum, its choices."""
  kind = field.type
  if kind not in (int, float, bool, str):  # `float | None`: the type that is not None
    kind = next(t for t in typing.get_args(kind) if t is not type(None))
  choices = field.metadata.get('choices')
  if choices:
    return flags.DEFINE_enum(name, None, choices(), field.metadata['help'] + _PRESET_DEFAULT)
  define = {int: flags.DEFINE_integer, float: flags.DEFINE_float, bool: flags.DEFINE_bool,
            str: flags.DEFINE_string}[kind]
  return define(name, None, field.metadata['help'] + _PRESET_DEFAULT)


# One flag per config field that declares one (trainers/configs.py, models/config.py): the field's
# declaration is the flag's; default None means "the preset's value".
TRAIN_FLAGS = {f.name: _define_field_flag(f.name, f) for f in configs.flag_fields()}
_MODEL_FIELDS = {f.name: f for f in dataclasses.fields(ModelConfig)}
# {flag name: ModelConfig field}; --seed, a TrainConfig flag, also seeds the initialisation.
MODEL_FLAGS = model_config.flag_fields()
_FIELD_FLAGS = {field: flag for flag, field in MODEL_FLAGS.items()}  # ModelConfig field -> flag
for _flag_name, _field_name in MODEL_FLAGS.items():
  if _flag_name not in TRAIN_FLAGS:
    TRAIN_FLAGS[_flag_name] = _define_field_flag(_flag_name, _MODEL_FIELDS[_field_name])

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


def _narrow_enum(name, values, help_text=None):
  """Makes enum flag `name` accept and list `values` alone (with `help_text`, if given)."""
  flag = flags.FLAGS[name]
  # A new parser, not an edited one: absl shares a parser among flags defined with the same
  # arguments (train_vanilla's and train_aux's, in a test process that imports both).
  flag.parser = flags.EnumParser(tuple(values))
  flag.help = f'<{"|".join(values)}>: {help_text or flag.help.partition(">: ")[2]}'


def show_preset_defaults(presets, default_preset):
  """Fits the shared flags to one binary (one a process): its presets, its defaults.

  --preset lists and accepts this binary's presets only; each flag a preset sets (default None,
  "the preset's value", which absl's --help shows as no default) says its value under
  `default_preset`.
  """
  preset = presets[default_preset]
  _narrow_enum(PRESET.name, list(presets), f'Named configuration (default: {default_preset}).')
  _narrow_enum('method', [name for name in methods.names()
                          if preset.model.kind in methods.get(name).kinds])
  for name in TRAIN_FLAGS:
    field = MODEL_FLAGS.get(name)
    value = getattr(preset.model, field) if field and name != 'seed' else getattr(preset, name)
    flag = flags.FLAGS[name]
    flag.help = flag.help.replace(_PRESET_DEFAULT,
                                  f' Default: the preset\'s value ({default_preset}: {value!r}).')


_COMMON_FLAGS = ('workdir', 'preset', 'strategy', 'tpu', 'cpu_devices', 'intra_op_threads',
                 'export_dir', 'model_name', 'force_new_version', 'overwrite')


def flag_names(kind):
  """The flags a user of the trainer of `kind` quines types, for its --help (key flags)."""
  names = list(_COMMON_FLAGS)
  names += [f.name for f in configs.flag_fields() if kind in f.metadata['binaries']]
  names += [name for name in MODEL_FLAGS if name not in names]
  if model_config.KIND_REGISTRY[kind].classifies:  # MNIST
    names += ['data_dir', 'download']
  return names


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
  if not WORKDIR.value:
    raise ValueError('--workdir is required (the folder of the run)')
  config = configs.get_preset(PRESET.value or default_preset, presets)
  model_overrides = {field: TRAIN_FLAGS[flag].value for flag, field in MODEL_FLAGS.items()}
  if TRAIN_FLAGS['init_from'].value:
    model = _pretrained_model(TRAIN_FLAGS['init_from'].value, config.model.kind, model_overrides)
    if PRESET.value and _architecture(config.model) != _architecture(model):
      # The pretrained quine fixes the architecture; a preset that describes another one would
      # be silently ignored (it trained at width 142 under --preset=tiny).
      matching = [name for name, preset in presets.items()
                  if _architecture(preset.model) == _architecture(model)]
      raise ValueError(f'--preset={PRESET.value} describes another quine than '
                       f'--init_from={TRAIN_FLAGS["init_from"].value} (its architecture comes '
                       'from the pretrained quine): drop --preset'
                       + (f' or use --preset={" or ".join(matching)}' if matching else ''))
  else:
    model = dataclasses.replace(
        config.model, **{k: v for k, v in model_overrides.items() if v is not None})
  overrides = {f.name: TRAIN_FLAGS[f.name].value for f in configs.flag_fields()}
  overrides.update(extra_overrides)
  try:
    model.validate()
  except ValueError as e:  # models/ names its fields; say which flag set one
    field, _, rest = str(e).partition('=')
    flag = _FIELD_FLAGS.get(field)
    if flag:
      raise ValueError(f'--{flag}={rest}') from e
    raise
  config = dataclasses.replace(
      config, model=model, **{k: v for k, v in overrides.items() if v is not None})
  return config.validate()


def _architecture(model):
  """A ModelConfig without its initialisation seed: what a pretrained quine fixes."""
  return dataclasses.replace(model, init_seed=0)


def _pretrained_model(name, kind, model_overrides):
  """The ModelConfig of pretrained quine `name`, checked against the binary and the flags.

  The pretrained quine fixes the architecture: a model flag may repeat its value, not change it.
  --seed seeds the run's shuffling and noise only (the weights come from the quine).
  """
  try:
    model = zoo.load_config(name)
    zoo.load_theta(name)  # a damaged weights file is one line now, not a traceback later
  except zoo.PretrainedError as e:
    raise ValueError(f'--init_from={name}: {e}') from e
  if model.kind != kind:
    raise ValueError(f'--init_from={name} is an {model.kind} quine; this binary trains '
                     f'{kind} ones')
  for field, value in model_overrides.items():
    if field != 'init_seed' and value is not None and value != getattr(model, field):
      flag = _FIELD_FLAGS.get(field, field)
      raise ValueError(f'--{flag}={value} contradicts '
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
    exporter.check_model_name(name)
  except exporter.ExportError as e:
    raise ValueError(f'--model_name={name}: {e}') from e
  if '://' in EXPORT_DIR.value:
    raise ValueError(f'--export_dir={EXPORT_DIR.value}: exports are written to a local folder '
                     '(copy them to remote storage afterwards)')
  try:
    formats.check_writable(os.path.join(EXPORT_DIR.value, name))
  except formats.FormatError as e:
    raise ValueError(f'--export_dir={EXPORT_DIR.value}: {str(e).partition(": ")[2]}') from e


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


# What Ctrl-C during training prints instead of a traceback (every phase is checkpointed).
INTERRUPTED = 'interrupted; rerun the same command to resume from the last checkpoint'


def fail(message):
  """Exits with one line naming the program and the problem."""
  sys.exit(f'{os.path.basename(sys.argv[0])}: error: {message}')


def log_start(strategy, config):
  logging.info('Strategy %s with %d replica(s), %s intra-op thread(s)', type(strategy).__name__,
               strategy.num_replicas_in_sync,
               tf.config.threading.get_intra_op_parallelism_threads() or 'default')
  logging.info('Config: %s', json.dumps(train_lib.config_dict(config), sort_keys=True))


def train(run, config):
  """Runs `run()` (a training library's run), then `finish`; its refusals and Ctrl-C are one line.

  Args:
    run: a callable returning the last metrics record.
    config: the run's TrainConfig.
  """
  try:
    record = run()
  except (workdir_lib.WorkdirError, ValueError) as e:
    fail(e)
  except KeyboardInterrupt:
    fail(INTERRUPTED)
  finish(record, config)


def finish(record, config):
  """Prints the run's summary, exports it if --export_dir asks, exits 3 if it diverged."""
  print(summary_line(record, WORKDIR.value))
  if record['status'] == 'diverged':
    sys.exit(3)
  if EXPORT_DIR.value:
    try:
      name = MODEL_NAME.value or config.model.kind
      before = exporter.versions(os.path.join(EXPORT_DIR.value, name))
      exported = exporter.export_workdir(WORKDIR.value, EXPORT_DIR.value, name,
                                            force_new_version=FORCE_NEW_VERSION.value)
    except exporter.ExportError as e:
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
