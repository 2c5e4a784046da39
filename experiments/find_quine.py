r"""Finds non-trivial quines with trainers/fixed_point.py; writes the evidence docs/QUINES.md cites.

For every seed: build the paper's vanilla quine (init_seed = projection_seed = seed), run the
fixed-point solver from its initial weights, measure rho / R^2 / weight RMS on the float32 Keras
model (not on the solver's float64 iterate), save theta, and plot weights against predictions.

  python experiments/find_quine.py --width=10 --seeds=0,1,2
  python experiments/find_quine.py --width=30 --seeds=0,1,2 --search_steps=40 --stage_steps=10
  python experiments/find_quine.py --width=100 --seeds=0 --dtype=float32 --cg_iterations=30 \
      --search_steps=25 --stage_steps=5 --schedule=0.03,0.01,0.003,0

  python experiments/find_quine.py --width=10 --seeds=0 --search_steps=40 --stage_steps=15 \
      --lineage_span=3 --quine_steps=100 --max_steps=300       # a lineage of quines, ~1 min

Prints one JSON line per seed (with lineage_rho: rho of the quine and of its next four
descendants); PNGs go to --img_dir, weights to --out_dir (theta_<name>.npy, and
config_<name>.json: the ModelConfig they are the weights of; scripts/pretrained.py reads both).
"""

import dataclasses
import json
import os
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

import formats
from models import build_quine
from models import stability
from models.config import ModelConfig
from trainers import fixed_point
from trainers import metrics as metrics_lib
from trainers import plots

_WIDTH = flags.DEFINE_integer('width', 10, 'Hidden width d (N = 2 d^2 + d).')
_SEEDS = flags.DEFINE_list('seeds', ['0'], 'init_seed = projection_seed of each run.')
_MAX_STEPS = flags.DEFINE_integer('max_steps', 400, 'Most solver steps.')
_TARGET_RHO = flags.DEFINE_float('target_rho', 1e-12, 'Stop once rho is at most this.')
_TIME_LIMIT_S = flags.DEFINE_float('time_limit_s', 540.0, 'Stop a seed after this many seconds.')
_SCHEDULE = flags.DEFINE_list('schedule', None, 'Kink widths beta (default: SolverConfig).')
_DTYPE = flags.DEFINE_enum('dtype', 'float64', ['float32', 'float64'], 'Solver dtype.')
_SEARCH_STEPS = flags.DEFINE_integer('search_steps', None, 'LM steps of the first stage.')
_STAGE_STEPS = flags.DEFINE_integer('stage_steps', None, 'LM steps of each later stage.')
_CG_ITERATIONS = flags.DEFINE_integer('cg_iterations', None, 'CG iterations per LM step.')
_LINEAGE_SPAN = flags.DEFINE_integer(
    'lineage_span', None, 'Lineage stage over this many generations (1: the quine alone).')
_QUINE_STEPS = flags.DEFINE_integer('quine_steps', None,
                                    'LM steps of the real-SELU quine stage before the lineage stage.')
_IMG_DIR = flags.DEFINE_string('img_dir', 'docs/img', 'Where the PNGs go.')
_OUT_DIR = flags.DEFINE_string('out_dir', 'runs/quines', 'Where theta_*.npy go.')
_LOG_EVERY = flags.DEFINE_integer('log_every', 10, 'Print solver diagnostics every this many.')


def solver_config():
  overrides = {'dtype': _DTYPE.value}
  if _SCHEDULE.value is not None:
    overrides['smoothing_schedule'] = tuple(float(b) for b in _SCHEDULE.value)
  for name, flag in (('search_steps', _SEARCH_STEPS), ('stage_steps', _STAGE_STEPS),
                     ('cg_iterations', _CG_ITERATIONS), ('lineage_span', _LINEAGE_SPAN),
                     ('quine_steps', _QUINE_STEPS)):
    if flag.value is not None:
      overrides[name] = flag.value
  return dataclasses.replace(fixed_point.SolverConfig(), **overrides)


def run_seed(width, seed, config):
  """Solves one quine; returns a dict of the measured numbers."""
  model = build_quine(ModelConfig(width=width, init_seed=seed, projection_seed=seed))
  rms0 = float(np.sqrt(np.mean(model.flatten().numpy() ** 2)))
  start = time.time()
  history = fixed_point.solve(model, max_steps=_MAX_STEPS.value, target_rho=_TARGET_RHO.value,
                              config=config, log_every=_LOG_EVERY.value,
                              time_limit_s=_TIME_LIMIT_S.value)
  seconds = time.time() - start
  below = [d for d in history if d['rho'] < 1e-3]
  theta = model.flatten()
  predictions = model.predict_weights(tf.range(model.num_weights))
  m = {k: float(v) for k, v in metrics_lib.replication_metrics(theta, predictions).items()}
  # rho of the quine and of its first four descendants, in float32 (the library's lineage loop).
  lineage = stability.lineage(stability.regeneration_pass(model), theta.numpy(), generations=4,
                              threshold=float('inf'))['rhos']
  name = f'fixed_point_w{width}_s{seed}'
  os.makedirs(_OUT_DIR.value, exist_ok=True)
  np.save(os.path.join(_OUT_DIR.value, f'theta_{name}.npy'), theta.numpy())
  with open(os.path.join(_OUT_DIR.value, f'config_{name}.json'), 'w') as f:
    json.dump(model.config.to_dict(), f, indent=2)  # what the theta file is a quine of
  title = (f'width {width}, N={model.num_weights}, seed {seed}: rho={m["rho"]:.2e}, '
           f'weight RMS {m["weight_rms"]:.3f} ({m["weight_rms"] / rms0:.1f}x initial)')
  plots.write_png(os.path.join(_IMG_DIR.value, f'{name}.png'),
                  plots.weights_vs_predictions_png(theta.numpy(), predictions.numpy(), title))
  return {'width': width, 'N': model.num_weights, 'seed': seed, 'rho': m['rho'], 'r2': m['r2'],
          'weight_rms': m['weight_rms'], 'initial_rms': rms0, 'seconds': round(seconds, 1),
          'steps': len(history), 'solver_rho': history[-1]['rho'],
          'last_stage': history[-1]['stage'], 'lineage_rho': lineage,
          'first_step_below_1e-3': below[0]['step'] if below else None,
          'seconds_to_1e-3': round(below[0]['seconds'], 1) if below else None}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'stray arguments: {argv[1:]}')
  os.makedirs(_IMG_DIR.value, exist_ok=True)
  config = solver_config()
  print(json.dumps({'solver_config': dataclasses.asdict(config)}), flush=True)
  for seed in _SEEDS.value:
    print(formats.to_json(run_seed(_WIDTH.value, int(seed), config)), flush=True)


if __name__ == '__main__':
  app.run(main)
