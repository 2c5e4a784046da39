r"""Trains an auxiliary quine: a network that predicts its own weights and classifies MNIST.

Examples (from the repository root, with the virtual environment set up as the README says):

  # The paper's setting (Adamax, lambda = 0.01, 30 epochs); MNIST prepared by tfds in ../shared.
  python trainers/train_aux.py --workdir=runs/aux --preset=paper --data_dir=../shared/tfds

  # The classifier-only baseline on the same network and data schedule.
  python trainers/train_aux.py --workdir=runs/baseline --preset=paper --replication_weight=0

  # Not in the paper: a quine that really replicates while it classifies (rho + lambda * CE,
  # Adam, 40,000 steps; ~4 min on one core). --task_weight trades replication for accuracy.
  python trainers/train_aux.py --workdir=runs/replicate --preset=replicate --task_weight=1

  # Not in the paper: the fertile family with an image input, trained so that its next four
  # descendants classify too (~3 min); the stability report at the end follows 300 generations.
  # docs/FERTILE_AUX.md: the descendants still lose the task (experiments/fertile_frontier.py).
  python trainers/train_aux.py --workdir=runs/lineage --preset=lineage

  tensorboard --logdir=runs

Rerunning a command resumes its workdir. Presets: short (default, 5 epochs), paper, replicate,
lineage, lineage_saturated, tiny.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')  # fewer of TensorFlow's C++ start-up notes

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from trainers import aux_lib
from trainers import cli
from trainers import configs
from trainers import data as data_lib
from trainers import train_lib

_DEFAULT_PRESET = 'short'
for _name in cli.flag_names('auxiliary'):  # what --help lists (key flags of this binary)
  flags.declare_key_flag(_name)
cli.show_preset_defaults(configs.AUX_PRESETS, _DEFAULT_PRESET)


def main(argv):
  train_lib.quiet_tensorflow_logs()
  if len(argv) > 1:
    cli.fail(f'unexpected arguments {argv[1:]}')
  try:
    config = cli.config_from_flags(configs.AUX_PRESETS, _DEFAULT_PRESET)
    cli.check_export_flags(config)
    data_lib.check_fits_mnist(config.model, cli.PRESET.value or _DEFAULT_PRESET)
  except ValueError as e:
    cli.fail(e)
  strategy = cli.strategy_from_flags(config)  # before any op: it may split the CPU into devices
  try:
    data = data_lib.load_mnist(cli.DATA_DIR.value, download=cli.DOWNLOAD.value)
  except data_lib.DataError as e:
    cli.fail(e)
  cli.log_start(strategy, config)
  cli.train(lambda: aux_lib.run(config, cli.WORKDIR.value, data, strategy,
                                overwrite=cli.OVERWRITE.value), config)


if __name__ == '__main__':
  app.run(main)
