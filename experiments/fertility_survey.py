r"""Are the zoo's quines fertile? The spectral radius of regeneration at the fixed points it finds.

Four experiments, each printing one JSON line per run and writing a plot:

  fixed_points  for each activation (hidden / output), width and seed: solve f_theta(C) = theta
                with the fixed-point solver from the initial weights (float64 LM), then measure the
                quine's stability (`models.stability`: spectral radius of J, the stretch along
                theta, fertile generations, noise test).
  penalty       tiny widths only (dense J): minimise log(rho) + mu * sum_i relu(|lambda_i| - 0.9)^2
                (every eigenvalue of J, differentiated through tf.linalg.eigvals) + a weight-RMS
                floor, by L-BFGS from the initial weights, for several mu: the frontier of rho
                against spectral radius.
  sink          any width, matrix-free: from a quine (the fixed-point solver's at that width and
                seed, or --pretrained=NAME), Adam on rho(theta) + mu * sink(theta), where sink is
                Randazzo et al.'s noisy-regeneration loss: perturb theta by relative noise
                `noise_scale`, regenerate `sink_generations` times, and take the squared distance
                to theta over the perturbation's, ||R^k(theta + delta) - theta||^2 / ||delta||^2
                (for an exact quine and small delta, ||J^k xi||^2 for a random unit xi: a
                Hutchinson estimate of ||J^k||_F^2 / N). Fresh noise every step. With
                --sink_generations=0 the term is that linear estimate itself, ||J xi||^2 / ||xi||^2
                by a Jacobian-vector product (Bai, Koltun and Kolter's Jacobian regulariser).
  regeneration  for each width and gain of the weight standardisation (--kernel_norm=standardise):
                regenerate the initial weights --generations times (the paper's method; it finds
                attracting fixed points only), then measure the result's stability, the share of
                weights within 1% of the output activation's bounds, and how much of the weights'
                variance one number explains (the sum of the coordinate's projection row). The plot
                is the spectral radius and the saturation against the gain.

  python experiments/fertility_survey.py --experiment=fixed_points --widths=4,6,8 \
      --activations=selu/linear,tanh/linear,sin/linear --seeds=0,1,2 --output=/tmp/fp.jsonl
  python experiments/fertility_survey.py --experiment=penalty --widths=4,6 --mus=0,0.1,1,10 \
      --activations=sin/linear,tanh/linear --seeds=0,1 --output=/tmp/penalty.jsonl
  python experiments/fertility_survey.py --experiment=sink --pretrained=fixed_point_w100_s0 \
      --mus=0,0.01,0.1,1 --steps=300 --output=/tmp/sink_w100.jsonl
  python experiments/fertility_survey.py --experiment=regeneration --activations=relu/tanh \
      --widths=142 --gains=0.35,0.4,0.45,0.5,0.6 --seeds=0 --output=/tmp/regen_w142.jsonl
"""

import itertools
import json
import sys

from absl import app
from absl import flags
import numpy as np
import scipy.optimize
import tensorflow as tf

import formats
from models import build_quine
from models import load_pretrained
from models import linearization
from models import stability
from models.config import ModelConfig
from trainers import fixed_point

_EXPERIMENT = flags.DEFINE_enum('experiment', 'fixed_points',
                                ['fixed_points', 'penalty', 'sink', 'regeneration'],
                                'Which experiment.')
_WIDTHS = flags.DEFINE_list('widths', ['4', '6', '8'], 'Hidden widths.')
_ACTIVATIONS = flags.DEFINE_list('activations', ['selu/linear', 'tanh/linear', 'sin/linear'],
                                 'hidden/output activation pairs.')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1'], 'init_seed = projection_seed of each run.')
_MUS = flags.DEFINE_list('mus', ['0', '0.1', '1', '10'], 'Penalty weights (penalty).')
_STEPS = flags.DEFINE_integer('steps', 80, 'Solver steps (fixed_points), L-BFGS iterations '
                              '(penalty) or Adam steps (sink).')
_PRETRAINED = flags.DEFINE_string(
    'pretrained', None, 'sink: start from this pretrained vanilla quine instead of solving one '
    '(then --widths, --activations and --seeds are ignored).')
_SINK_GENERATIONS = flags.DEFINE_integer(
    'sink_generations', 2, 'sink: regenerations k of each perturbed copy; 0: the linear limit, '
    '||J xi||^2 / ||xi||^2 by a Jacobian-vector product (a Hutchinson estimate of '
    '||J||_F^2 / N, the squared bulk radius, as in Jacobian-regularised equilibrium models).')
_NOISE_SCALE = flags.DEFINE_float('noise_scale', 0.02, 'sink: ||delta|| / ||theta||.')
_SOLVER_STEPS = flags.DEFINE_integer('solver_steps', 160,
                                     'sink: fixed-point solver steps of the starting quine.')
_PROBES = flags.DEFINE_integer('probes', 2, 'sink: perturbed copies per step.')
_LEARNING_RATE = flags.DEFINE_float(
    'learning_rate', 1e-3, 'sink: Adam step relative to the weight RMS (cosine decay to 0).')
_GAINS = flags.DEFINE_list('gains', ['0.4'], 'regeneration: gains of the weight standardisation.')
_NUM_HIDDEN = flags.DEFINE_integer('num_hidden', 1, 'regeneration: hidden layers.')
_GENERATIONS = flags.DEFINE_integer('generations', 100,
                                    'regeneration: regenerations of the initial weights.')
_OUTPUT = flags.DEFINE_string('output', None, 'JSON lines file.')
_REPLOT = flags.DEFINE_list('replot', None, 'Run nothing: plot the rows of these JSON lines files '
                            '(earlier --output files, e.g. one per width) into --plot.')
_PLOT = flags.DEFINE_string('plot', None, 'PNG: spectral radius against rho (regeneration: '
                            'against the gain).')

_SMOOTHING = (0.3, 0.1, 0.03, 0.01, 0.003, 0.0)  # tiny quines' kinks need wide smoothing
_MIN_RMS = 0.03  # about half the paper initialisation's weight RMS (0.0577)


def _config(pair, width, seed, **fields):
  hidden, output = pair.split('/')
  return ModelConfig(width=width, activation=hidden, output_activation=output, init_seed=seed,
                     projection_seed=seed, **fields)


def _fixed_point(config, steps):
  model = build_quine(config)
  solver = fixed_point.SolverConfig(dtype='float64', smoothing_schedule=_SMOOTHING,
                                    search_steps=40, stage_steps=10, cg_iterations=80)
  fixed_point.solve(model, max_steps=steps, target_rho=1e-13, config=solver)
  return model


def _penalty(config, mu):
  model = build_quine(config)
  forward = linearization.make_forward(model, tf.float64)

  @tf.function
  def objective(theta):
    with tf.GradientTape() as outer:
      outer.watch(theta)
      with tf.GradientTape() as inner:
        inner.watch(theta)
        y = forward(theta)
      jacobian = inner.jacobian(y, theta)
      rho = tf.reduce_sum((y - theta) ** 2) / tf.reduce_sum(theta ** 2)
      modulus = tf.abs(tf.linalg.eigvals(tf.cast(jacobian, tf.complex128)))
      rms = tf.sqrt(tf.reduce_mean(theta ** 2))
      loss = (tf.math.log(rho + 1e-15) + mu * tf.reduce_sum(tf.nn.relu(modulus - 0.9) ** 2)
              + 10.0 * tf.nn.relu(_MIN_RMS - rms) ** 2 / _MIN_RMS ** 2)
    return loss, outer.gradient(loss, theta)

  def fun(x):
    loss, grad = objective(tf.constant(x))
    return float(loss), grad.numpy()

  x0 = model.flatten().numpy().astype(np.float64)
  result = scipy.optimize.minimize(fun, x0, jac=True, method='L-BFGS-B',
                                   options={'maxiter': _STEPS.value})
  model.assign_flat(tf.constant(result.x, tf.float32))
  return model


def _sink(model, mu, seed):
  """Adam on log(rho) + mu * log(sink) from the model's weights (float32); returns the model, updated."""
  forward = linearization.make_forward(model, tf.float32)
  theta0 = model.flatten()
  theta = tf.Variable(theta0)
  rms = float(tf.sqrt(tf.reduce_mean(theta0 ** 2)))
  steps = _STEPS.value
  schedule = tf.keras.optimizers.schedules.CosineDecay(_LEARNING_RATE.value * rms, steps)
  optimizer = tf.keras.optimizers.Adam(schedule)
  generator = tf.random.Generator.from_seed(seed)
  k, scale, probes = _SINK_GENERATIONS.value, _NOISE_SCALE.value, _PROBES.value

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      norm2 = tf.reduce_sum(theta ** 2)
      rho = tf.reduce_sum((forward(theta) - theta) ** 2) / norm2
      xi = generator.normal([probes, model.num_weights])
      delta = xi * (scale * tf.sqrt(norm2) / tf.norm(xi, axis=1, keepdims=True))
      sink = 0.0
      for p in range(probes):
        if k == 0:  # Hutchinson: ||J xi||^2 / ||xi||^2, the linear limit (an estimate of the bulk^2)
          with tf.autodiff.ForwardAccumulator(theta, delta[p]) as accumulator:
            predictions = forward(theta)
          sink += (tf.reduce_sum(accumulator.jvp(predictions) ** 2)
                   / tf.reduce_sum(delta[p] ** 2) / probes)
          continue
        child = theta + delta[p]
        for _ in range(k):
          child = forward(child)
        sink += tf.reduce_sum((child - theta) ** 2) / (scale ** 2 * norm2) / probes
      loss = tf.math.log(rho) + mu * tf.math.log(sink) if mu else tf.math.log(rho)
    optimizer.apply_gradients([(tape.gradient(loss, theta), theta)])
    return rho, sink

  for i in range(steps):
    rho, sink = step()
    if i % max(1, steps // 10) == 0 or i == steps - 1:
      print(f'  mu {mu:g} step {i}: rho {float(rho):.3e}, sink {float(sink):.3e}', flush=True)
  model.assign_flat(theta.read_value())
  return model


def _measure(model, **fields):
  report = stability.analyse(model, stability.StabilityConfig(
      generations=300, num_perturbations=10, noise_generations=100))
  theta = model.flatten().numpy()
  row = dict(fields, n=model.num_weights, rho=report['rho'],
             weight_rms=float(np.sqrt(np.mean(theta ** 2))),
             spectral_radius=report['spectral_radius'],
             largest_singular_value=report['largest_singular_value'],
             frobenius_radius=report['frobenius_radius'],
             rayleigh_theta=report['rayleigh_theta'],
             fertile_generations=report['fertile_generations'],
             noise_returned=report['noise']['returned'])
  print(formats.to_json(row), flush=True)
  return row


def _plot(rows, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  def key_of(r):
    return r['activations'], r['width'], r.get('sink_generations', -1)

  keys = sorted({key_of(r) for r in rows}, key=lambda k: (k[1], k[0], k[2]))
  for i, key in enumerate(keys):
    sel = [r for r in rows if key_of(r) == key]
    label = f'{key[0]}, width {key[1]}'
    if key[2] >= 0:
      label += ', Hutchinson ||J xi||^2' if key[2] == 0 else f', sink k = {key[2]}'
    xs = [max(r['rho'], 1e-16) for r in sel]
    ys = [r['spectral_radius'] for r in sel]
    ax.scatter(xs, ys, color=f'C{i % 10}', marker='os^vD'[i % 5], label=label)
    for r, x, y in zip(sel, xs, ys):
      if 'mu' in r:
        ax.annotate(f'{r["mu"]:g}', (x, y), fontsize=6, xytext=(3, 3), textcoords='offset points')
  ax.axhline(1.0, color='k', ls='--', lw=0.8)
  ax.axvline(stability.QUINE_RHO, color='k', ls=':', lw=0.8)
  ax.set_xscale('log')
  ax.set_yscale('log')
  ax.set_xlabel('rho (1 = prints zeros)')
  ax.set_ylabel('spectral radius of J')
  ax.set_title(f'{_EXPERIMENT.value}: a fertile quine sits left of rho = 1e-3 and below 1'
               + (' (labels: mu)' if any('mu' in r for r in rows) else ''), fontsize=9)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def _plot_gains(rows, path):
  """The regeneration experiment: spectral radius (bulk dashed) and saturation against the gain."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import matplotlib.ticker  # pylint: disable=g-import-not-at-top
  fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4.2))
  keys = sorted({(r['activations'], r['width'], r['num_hidden']) for r in rows},
                key=lambda k: (k[1], k[0], k[2]))
  for i, key in enumerate(keys):
    sel = sorted((r for r in rows if (r['activations'], r['width'], r['num_hidden']) == key),
                 key=lambda r: r['gain'])
    quines = [r for r in sel if r['rho'] <= stability.QUINE_RHO]
    label = f'{key[0]}, {key[2]} x {key[1]} (N = {sel[0]["n"]:,})'
    color = f'C{i % 10}'
    ax.plot([r['gain'] for r in quines], [r['spectral_radius'] for r in quines], 'o-',
            color=color, label=label)
    ax.plot([r['gain'] for r in quines], [r['frobenius_radius'] for r in quines], '--',
            color=color, lw=0.8)
    collapsed = [r for r in sel if r['rho'] > stability.QUINE_RHO]
    ax.scatter([r['gain'] for r in collapsed], [0.05] * len(collapsed), marker='x', color=color)
    bx.plot([r['gain'] for r in quines], [100 * r['near_bounds'] for r in quines], 'o-',
            color=color, label=label)
  gains = sorted({r['gain'] for r in rows})
  for axis in (ax, bx):
    axis.set_xscale('log')
    axis.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(
        [g for g in (0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 10)
         if gains[0] <= g <= gains[-1]]))
    axis.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter('%g'))
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  ax.axhline(1.0, color='k', ls='--', lw=0.8)
  ax.set_ylim(0, None)
  ax.set_xlabel('gain of the weight standardisation')
  ax.set_ylabel('spectral radius of J (dashed: bulk)')
  ax.set_title('below 1: every descendant is a quine; x: regeneration reached no quine',
               fontsize=9)
  bx.legend(fontsize=7, loc='upper left')
  bx.axhline(10, color='k', ls='--', lw=0.8)
  bx.set_xlabel('gain of the weight standardisation')
  bx.set_ylabel("% of weights within 1% of tanh's bounds")
  bx.set_title('saturation (the target allows at most 10%)', fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main(argv):
  del argv
  rows = []
  if _REPLOT.value:
    for path in _REPLOT.value:
      with open(path) as f:
        rows.extend(json.loads(line) for line in f if line.strip())
    (_plot_gains if _EXPERIMENT.value == 'regeneration' else _plot)(rows, _PLOT.value)
    return
  if _EXPERIMENT.value == 'sink' and _PRETRAINED.value:
    name = _PRETRAINED.value
    for mu in (float(m) for m in _MUS.value):
      model = load_pretrained(name)
      rows.append(_measure(_sink(model, mu, 0), activations=name, width=model.config.width,
                           seed=0, mu=mu, sink_generations=_SINK_GENERATIONS.value))
    _write(rows)
    return
  if _EXPERIMENT.value == 'regeneration':
    try:
      runs = _regeneration_runs()
    except ValueError as e:
      sys.exit(f'fertility_survey.py: error: {e}')
    for config, pair in runs:
      model = build_quine(config)
      initial_rms = float(np.sqrt(np.mean(model.flatten().numpy() ** 2)))
      done = stability.regenerate(model, _GENERATIONS.value)
      rows.append(_measure(model, activations=pair, width=config.width, seed=config.init_seed,
                           gain=config.gain, num_hidden=config.num_hidden, generations=done,
                           initial_weight_rms=initial_rms, **stability.weight_shape(model)))
    _write(rows)
    return
  grid = itertools.product(_ACTIVATIONS.value, [int(w) for w in _WIDTHS.value],
                           [int(s) for s in _SEEDS.value])
  for pair, width, seed in grid:
    config = _config(pair, width, seed)
    if _EXPERIMENT.value == 'fixed_points':
      rows.append(_measure(_fixed_point(config, _STEPS.value), activations=pair, width=width, seed=seed))
    elif _EXPERIMENT.value == 'sink':
      start = _fixed_point(config, _SOLVER_STEPS.value).flatten()
      for mu in (float(m) for m in _MUS.value):
        model = build_quine(config)
        model.assign_flat(start)
        rows.append(_measure(_sink(model, mu, seed), activations=pair, width=width, seed=seed,
                             mu=mu, sink_generations=_SINK_GENERATIONS.value))
    else:
      for mu in (float(m) for m in _MUS.value):
        rows.append(_measure(_penalty(config, mu), activations=pair, width=width, seed=seed,
                             mu=mu))
  _write(rows)


def _regeneration_runs():
  """[(ModelConfig, activation pair)] of the regeneration experiment, every one validated.

  Raises:
    ValueError: a flag value that is not a number, or a config that does not validate.
  """
  def numbers(flag, kind):
    try:
      return [kind(v) for v in flag.value]
    except ValueError:
      raise ValueError(f'--{flag.name}={",".join(flag.value)} must be a list of {kind.__name__}s')

  if _GENERATIONS.value < 0:
    raise ValueError(f'--generations={_GENERATIONS.value} must be >= 0')
  runs = []
  for pair, width, seed, gain in itertools.product(
      _ACTIVATIONS.value, numbers(_WIDTHS, int), numbers(_SEEDS, int), numbers(_GAINS, float)):
    if pair.count('/') != 1:
      raise ValueError(f'--activations: {pair!r} is not hidden/output, e.g. relu/tanh')
    config = _config(pair, width, seed, num_hidden=_NUM_HIDDEN.value,
                     kernel_norm='standardise', gain=gain)
    runs.append((config.validate(), pair))
  return runs


def _write(rows):
  if _OUTPUT.value:
    with open(_OUTPUT.value, 'w') as f:
      f.writelines(formats.to_json(r) + '\n' for r in rows)
  if _PLOT.value:
    (_plot_gains if _EXPERIMENT.value == 'regeneration' else _plot)(rows, _PLOT.value)


if __name__ == '__main__':
  app.run(main)
