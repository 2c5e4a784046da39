r"""Trains a vanilla neural network quine (Chang & Lipson 2018): a network that predicts its own weights.

Examples (from the repository root, with the virtual environment set up as the README says):

  # The paper's best method: alternate 1 Adamax epoch and 1 regeneration, 10 generations.
  python trainers/train_vanilla.py --workdir=runs/alternate --preset=paper --method=alternate

  # 30 epochs of one optimizer against frozen targets.
  python trainers/train_vanilla.py --workdir=runs/adamax --preset=paper --optimizer=adamax

  tensorboard --logdir=runs

Rerunning a command resumes its workdir from the last checkpoint.
"""

import dataclasses
import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')  # keep TensorFlow's C++ start-up notes out

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

from trainers import configs
from trainers import train_lib
from trainers import workdir as workdir_lib

_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder of the run (config, checkpoints, logs).',
                               required=True)
_PRESET = flags.DEFINE_enum('preset', 'paper', sorted(configs.PRESETS), 'Named configuration.')
_METHOD = flags.DEFINE_enum('method', None, configs.METHODS, 'Training method.')
_OPTIMIZER = flags.DEFINE_enum('optimizer', None, configs.OPTIMIZERS, 'Gradient optimizer.')
_LEARNING_RATE = flags.DEFINE_float('learning_rate', None, 'Learning rate (default per optimizer).')
_NUM_EPOCHS = flags.DEFINE_integer('num_epochs', None, 'Epochs of optimize / hill_climb.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', None, 'Coordinates per minibatch.')
_GENERATIONS = flags.DEFINE_integer('generations', None, 'Regenerations (regenerate, alternate).')
_OPT_EPOCHS = flags.DEFINE_integer('opt_epochs_per_generation', None,
                                   'Optimisation epochs before each regeneration (alternate).')
_NOISE_STDDEV = flags.DEFINE_float('noise_stddev', None, 'Hill-climbing perturbation stddev.')
_SEED = flags.DEFINE_integer('seed', None, 'Seed of the initialisation, shuffling and noise.')
_WIDTH = flags.DEFINE_integer('width', None, 'Hidden units (every hidden matrix is width^2).')
_NUM_HIDDEN = flags.DEFINE_integer('num_hidden', None, 'Number of hidden width x width matrices.')
_INIT = flags.DEFINE_enum('init', None, ['paper_uniform', 'he_normal'], 'Weight initialisation.')
_STEPS_PER_LOOP = flags.DEFINE_integer('steps_per_loop', None,
                                       'Steps compiled into one call (0 = a whole epoch).')
_OVERWRITE = flags.DEFINE_bool('overwrite', False,
                               'Move a different run already in --workdir aside and start anew.')


def config_from_flags():
  """The preset with every given flag applied; the only reader of FLAGS."""
  config = configs.get_preset(_PRESET.value)
  model_overrides = {'width': _WIDTH.value, 'num_hidden': _NUM_HIDDEN.value, 'init': _INIT.value,
                     'init_seed': _SEED.value}
  model = dataclasses.replace(
      config.model, **{k: v for k, v in model_overrides.items() if v is not None})
  overrides = {
      'method': _METHOD.value, 'optimizer': _OPTIMIZER.value,
      'learning_rate': _LEARNING_RATE.value, 'num_epochs': _NUM_EPOCHS.value,
      'batch_size': _BATCH_SIZE.value, 'generations': _GENERATIONS.value,
      'opt_epochs_per_generation': _OPT_EPOCHS.value, 'noise_stddev': _NOISE_STDDEV.value,
      'seed': _SEED.value, 'steps_per_loop': _STEPS_PER_LOOP.value}
  return dataclasses.replace(
      config, model=model, **{k: v for k, v in overrides.items() if v is not None})


def main(argv):
  train_lib.quiet_tensorflow_logs()
  if len(argv) > 1:
    sys.exit(f'train_vanilla.py: error: unexpected arguments {argv[1:]}')
  try:
    config = config_from_flags().validate()
  except ValueError as e:
    sys.exit(f'train_vanilla.py: error: {e}')
  logging.info('Config: %s', json.dumps(train_lib.config_dict(config), sort_keys=True))
  try:
    record = train_lib.run(config, _WORKDIR.value, overwrite=_OVERWRITE.value)
  except workdir_lib.WorkdirError as e:
    sys.exit(f'train_vanilla.py: error: {e}')
  print(f'{record["status"]}: phase {record["phase"]}, L_SR={record["l_sr"]:.6g} '
        f'rho={record["rho"]:.6g} R2={record["r2"]:.6g} weight_rms={record["weight_rms"]:.4g}; '
        f'metrics in {_WORKDIR.value}/metrics.jsonl; tensorboard --logdir={_WORKDIR.value}')
  if record['status'] == 'diverged':
    sys.exit(3)


if __name__ == '__main__':
  app.run(main)
