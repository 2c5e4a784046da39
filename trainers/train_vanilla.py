r"""Trains a vanilla neural network quine (Chang & Lipson 2018): a network that predicts its own weights.

Examples (from the repository root, with the virtual environment set up as the README says):

  # A fertile quine of the paper's size (N = 20,306): its descendants are quines for ever.
  python trainers/train_vanilla.py --workdir=runs/stable --preset=stable

  # The paper's best method: alternate 1 Adamax epoch and 1 regeneration, 10 generations.
  python trainers/train_vanilla.py --workdir=runs/alternate --method=alternate

  # 30 epochs of one optimizer against frozen targets.
  python trainers/train_vanilla.py --workdir=runs/adamax --preset=paper --optimizer=adamax

  tensorboard --logdir=runs

Rerunning a command resumes its workdir from the last checkpoint. Presets: paper (default), stable,
stable_w4, paper_alternate, small, tiny.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')  # fewer of TensorFlow's C++ start-up notes

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from trainers import cli
from trainers import configs
from trainers import train_lib

for _name in cli.flag_names('vanilla'):  # what --help lists (key flags of this binary)
  flags.declare_key_flag(_name)
cli.show_preset_defaults(configs.PRESETS, 'paper')


def main(argv):
  train_lib.quiet_tensorflow_logs()
  if len(argv) > 1:
    cli.fail(f'unexpected arguments {argv[1:]}')
  try:
    config = cli.config_from_flags(configs.PRESETS, 'paper')
    cli.check_export_flags(config)
  except ValueError as e:
    cli.fail(e)
  strategy = cli.strategy_from_flags(config)
  cli.log_start(strategy, config)
  cli.train(lambda: train_lib.run(config, cli.WORKDIR.value, strategy,
                                  overwrite=cli.OVERWRITE.value), config)


if __name__ == '__main__':
  app.run(main)
