r"""Trains a vanilla neural network quine (Chang & Lipson 2018): a network that predicts its own weights.

Examples (from the repository root, with the virtual environment set up as the README says):

  # The paper's best method: alternate 1 Adamax epoch and 1 regeneration, 10 generations.
  python trainers/train_vanilla.py --workdir=runs/alternate --method=alternate

  # 30 epochs of one optimizer against frozen targets.
  python trainers/train_vanilla.py --workdir=runs/adamax --preset=paper --optimizer=adamax

  tensorboard --logdir=runs

Rerunning a command resumes its workdir from the last checkpoint. Presets: paper (default),
paper_alternate, small, tiny.
"""

import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')  # fewer of TensorFlow's C++ start-up notes

from absl import app  # pylint: disable=g-import-not-at-top
from absl import logging

from trainers import cli
from trainers import configs
from trainers import train_lib
from trainers import workdir as workdir_lib


def main(argv):
  train_lib.quiet_tensorflow_logs()
  if len(argv) > 1:
    cli.fail(f'unexpected arguments {argv[1:]}')
  try:
    config = cli.config_from_flags(configs.PRESETS, 'paper')
  except ValueError as e:
    cli.fail(e)
  strategy = cli.strategy_from_flags()
  logging.info('Strategy %s with %d replica(s)', type(strategy).__name__,
               strategy.num_replicas_in_sync)
  logging.info('Config: %s', json.dumps(train_lib.config_dict(config), sort_keys=True))
  try:
    record = train_lib.run(config, cli.WORKDIR.value, strategy, overwrite=cli.OVERWRITE.value)
  except workdir_lib.WorkdirError as e:
    cli.fail(e)
  print(cli.summary_line(record, cli.WORKDIR.value))
  exported = cli.export_if_asked(record, config)
  if exported:
    print(f'exported: {exported}')
  if record['status'] == 'diverged':
    sys.exit(3)


if __name__ == '__main__':
  app.run(main)
