r"""Sweeps the auxiliary quine's task weight lambda and plots accuracy against replication.

  python experiments/sweep_aux.py --sweep_dir=runs/sweep --task_weights=0.001,0.01,0.1,1 \
      --data_dir=../shared/tfds
  tensorboard --logdir=runs/sweep   # HParams dashboard

Writes <sweep_dir>/sweep.json, sweep.csv and tradeoff.png; reruns resume every point.
"""

import dataclasses
import math
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')  # keep TensorFlow's C++ start-up notes out

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from experiments import sweep_lib
from trainers import cli
from trainers import configs
from trainers import data as data_lib
from trainers import train_lib

_SWEEP_DIR = flags.DEFINE_string('sweep_dir', None, 'Folder of the sweep; required.')
_TASK_WEIGHTS = flags.DEFINE_list('task_weights', ['0.001', '0.01', '0.1', '1'],
                                  'The lambdas of the quine points.')
_BASELINE = flags.DEFINE_bool('baseline', True, 'Add the classifier-only point.')
_DEFAULT_PRESET = 'paper'
# --preset (an auxiliary one; default paper), --num_epochs, --seed, --data_dir and --download are
# the trainers' flags (trainers/cli.py), defined once.
for _name in ('sweep_dir', 'task_weights', 'baseline', 'preset', 'num_epochs', 'seed', 'data_dir',
              'download'):
  flags.declare_key_flag(_name)
cli.show_preset_defaults(configs.AUX_PRESETS, _DEFAULT_PRESET)


def main(argv):
  train_lib.quiet_tensorflow_logs()
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  try:
    weights = [float(w) for w in _TASK_WEIGHTS.value]
  except ValueError:
    raise SystemExit(f'sweep_aux.py: error: --task_weights={",".join(_TASK_WEIGHTS.value)} '
                     'must be numbers') from None
  if not all(math.isfinite(w) and w >= 0 for w in weights):
    raise SystemExit(f'sweep_aux.py: error: --task_weights={",".join(_TASK_WEIGHTS.value)} '
                     'must be finite numbers >= 0')
  if not _SWEEP_DIR.value:
    raise SystemExit('sweep_aux.py: error: --sweep_dir is required (the folder of the sweep)')
  preset = cli.PRESET.value or _DEFAULT_PRESET
  num_epochs, seed = cli.TRAIN_FLAGS['num_epochs'].value, cli.TRAIN_FLAGS['seed'].value
  try:
    config = configs.get_preset(preset, configs.AUX_PRESETS)
    overrides = {'num_epochs': num_epochs, 'seed': seed}
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    if seed is not None:  # as in the trainers, --seed also seeds the initialisation
      config = dataclasses.replace(config, model=dataclasses.replace(config.model, init_seed=seed))
    config.validate()
    for w in weights:
      dataclasses.replace(config, task_weight=w).validate()
    data_lib.check_fits_mnist(config.model, preset)  # before the data is loaded
    data = data_lib.load_mnist(cli.DATA_DIR.value, download=cli.DOWNLOAD.value)
  except (ValueError, data_lib.DataError) as e:
    raise SystemExit(f'sweep_aux.py: error: {e}') from None
  results = sweep_lib.run_sweep(config, _SWEEP_DIR.value, data, weights, _BASELINE.value)
  print(f'{"point":>14} {"accuracy":>9} {"L_SR":>10} {"rho":>8} {"weight_rms":>10}')
  for r in results:
    print(f'{r["name"]:>14} {100 * r["test_accuracy"]:8.2f}% {r["l_sr"]:10.4g} {r["rho"]:8.4f} '
          f'{r["weight_rms"]:10.4g}')
  print(f'plot: {_SWEEP_DIR.value}/tradeoff.png; tensorboard --logdir={_SWEEP_DIR.value}')


if __name__ == '__main__':
  app.run(main)
