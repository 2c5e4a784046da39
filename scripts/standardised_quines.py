r"""Contracting quines at tiny widths (and the same variant at the paper's size): weight-standardised
hidden kernels and a tanh output.

Searches on the zoo's architecture variant `kernel_norm='standardise'` with a tanh output
(`models.architecture`, run here on its PyTorch backend): the zoo's vanilla quine (coordinate ->
fixed projection -> 2 hidden layers -> 1 output, no biases) with two changes that break the homogeneity which pins the paper architecture's stretch along theta at
~3 (docs/QUINES.md):

  h1 = act(gain * p_c @ S(W1)),  h2 = act(gain * h1 @ S(W2)),  f_theta(c) = tanh(h2 @ v),
  S(W) = W / (rms(W) * sqrt(fan_in))   (parameter-free weight standardisation)

theta = (W1, W2, v), all replicated (--depths=K: K standardised hidden layers, N = K width^2 +
width); S has no parameters and the projection rows p_c are the zoo's
(`models.generator`, std 1/sqrt(width) by default). f does not change when W1 or W2 is rescaled,
so J theta only sees v's scale, and tanh is concave: the stretch along theta is below 1 at any
weight size, not only in tanh's flat tails.

For each hidden activation, gain and seed: Levenberg-Marquardt on r = (f(theta) - theta) / ||theta||
(rho = ||r||^2; float64, dense Jacobian, so tiny widths only) from theta ~ N(0, init_std^2), or
with --solver=adam, matrix-free at any width, Adam on log(rho) + mu log(||J xi||^2 / ||xi||^2)
+ nu log(||J u||^2) (u: J's top eigenvector by power iteration); --warm_start starts from a zoo
export of the variant (`--kernel_norm=standardise`, tanh output) or a --save_theta file;
then: the spectral radius of J = d f_theta(C) / d theta (dense eigenvalues; ARPACK's outer six
with --solver=adam) and its bulk estimate
sqrt(||J||_F^2 / N) (`models.stability.frobenius_radius`), the stretch u.Ju along
u = theta / ||theta||, the weight RMS, the fraction of weights within 1% of tanh's bounds, the
fertile generations (of `generations`, float32: consecutive descendants with rho <= 1e-3) and the
noise test (`perturbations` copies at relative noise `noise`, `noise_generations` float32
regenerations each; returned when within 1e-3 of theta relative to ||theta||). One JSON line per
run; --plot draws the spectrum and lineage of the exact fixed point with the smallest radius.
A run is a contracting quine when it is an exact fixed point (rho <= 1e-20, weight RMS > 0.01)
whose spectral radius is below 1: the spectrum describes the map at theta, and says what the
lineage does only at a fixed point.

  python scripts/standardised_quines.py --widths=4,5 --activations=tanh,selu --gains=1 \
      --seeds=20 --output=/tmp/standardised.jsonl --plot=docs/img/standardised_w4.png
  python scripts/standardised_quines.py --bulk --widths=10,30,100 --activations=tanh
  python scripts/standardised_quines.py --solver=adam --widths=100 --activations=tanh \
      --seed_list=0 --steps=1500 --mu=0
  python scripts/standardised_quines.py --solver=adam --warm_start=exports/std142 --steps=1500 \
      --mu=10 --learning_rate=1e-3 --save_theta=runs/mu10
"""

import itertools
import json
import math
import sys

from absl import app
from absl import flags
import numpy as np
import scipy.sparse.linalg as sla
import torch

from models import architecture
from models import backends
from models.config import ModelConfig

_WIDTHS = flags.DEFINE_list('widths', ['4'], 'Hidden widths.')
_ACTIVATIONS = flags.DEFINE_list('activations', ['tanh', 'selu'], 'Hidden activations.')
_GAINS = flags.DEFINE_list('gains', ['1'], 'Pre-activation gains of the standardised layers.')
_DEPTHS = flags.DEFINE_list('depths', ['2'], 'Numbers of standardised hidden layers '
                            '(N = depth width^2 + width).')
_SEEDS = flags.DEFINE_integer('seeds', 20, 'Seeds 0..seeds-1 (projection and start).')
_SEED_LIST = flags.DEFINE_list('seed_list', None, 'Explicit seeds (instead of --seeds).')
_STEPS = flags.DEFINE_integer('steps', 300, 'Levenberg-Marquardt (or Adam) steps.')
_INIT_STD = flags.DEFINE_float('init_std', 0.5, 'Standard deviation of the starting weights.')
_SOLVER = flags.DEFINE_enum('solver', 'lm', ['lm', 'adam'], 'lm: dense Levenberg-Marquardt '
                            '(tiny widths); adam: matrix-free, any width.')
_MU = flags.DEFINE_float('mu', 0.0, 'adam: weight of the bulk term log(||J xi||^2 / ||xi||^2).')
_LEARNING_RATE = flags.DEFINE_float('learning_rate', 3e-3, 'adam: initial learning rate.')
_NU = flags.DEFINE_float('nu', 0.0, 'adam: weight of the outlier term log(||J u||^2), u the top '
                         'eigenvector of J by power iteration (3 products a step, carried over).')
_TARGET = flags.DEFINE_float('stability_target', 0.0, 'adam: > 0 makes the mu and nu terms '
                             'hinges at this radius (zero below it), so that rho alone is '
                             'minimised once the bulk and the top stretch are below it.')
_WARM_START = flags.DEFINE_string(
    'warm_start', None, 'Start from this theta instead of N(0, init_std^2): a zoo export of a '
    '--kernel_norm=standardise quine with a tanh output (its width, depth, activation, gain and '
    'projection replace those flags), or a .npy written by --save_theta.')
_PENALTY_STEPS = flags.DEFINE_integer(
    'penalty_steps', 0, 'adam: if > 0, --steps on rho alone, then this many with --mu (warm start).')
_PROJECTION_STD = flags.DEFINE_float('projection_std', None,
                                     'Projection entries std (default 1/sqrt(width)).')
_GENERATIONS = flags.DEFINE_integer('generations', 300, 'Longest lineage regenerated.')
_PERTURBATIONS = flags.DEFINE_integer('perturbations', 10, 'Noise test: perturbed copies.')
_NOISE = flags.DEFINE_float('noise', 0.02, 'Noise test: ||delta|| / ||theta||.')
_NOISE_GENERATIONS = flags.DEFINE_integer('noise_generations', 100,
                                          'Noise test: regenerations of each copy.')
_BULK = flags.DEFINE_bool('bulk', False, 'Solve nothing: print the bulk radius sqrt(||J||_F^2/N) '
                          'at a self-consistent random point for each width (any width).')
_SAVE_THETA = flags.DEFINE_string('save_theta', None, 'Save each run\'s theta (float64) as '
                                  '<this>_w<width>[_d<depth>]_<activation>_s<seed>.npy '
                                  '(_d only when depth != 2).')
_REPLOT = flags.DEFINE_list('replot', None, 'Run nothing: draw the frontier (spectral radius '
                            'against rho) of the rows of these JSON lines files (earlier --output '
                            'files) into --plot.')
_OUTPUT = flags.DEFINE_string('output', None, 'JSON lines file.')
_PLOT = flags.DEFINE_string('plot', None, 'PNG: spectrum and lineage of the most contracting quine.')

QUINE_RHO = 1e-3
EXACT_RHO = 1e-20  # a fixed point to float64 precision (the solver's target is 1e-26)
_HIDDEN_ACTIVATIONS = ('tanh', 'selu', 'sin')  # zoo registry entries (sin: frequency 1)


class StandardisedQuine:
  """The variant's regeneration map theta [N] -> f_theta(C) [N] in torch, any float dtype.

  The network is the zoo's own (`models.architecture` on the PyTorch backend) for the ModelConfig
  `config`: kernel_norm 'standardise', a tanh output, `depth` hidden layers.
  """

  def __init__(self, width, activation='tanh', gain=1.0, seed=0, projection_std=None, depth=2):
    self.width, self.depth = width, depth
    self.config = ModelConfig(width=width, num_hidden=depth, activation=activation,
                              output_activation='tanh', kernel_norm='standardise',
                              gain=float(gain), projection_seed=seed,
                              projection_std=projection_std or 1.0 / math.sqrt(width))
    self.arch = architecture.Architecture(self.config)
    self.num_weights = self.arch.num_weights
    self.rows = torch.from_numpy(
        self.arch.projections['coordinate'].rows().astype(np.float64))
    self._rows32 = self.rows.float()

  def __call__(self, theta):
    rows = self.rows if theta.dtype == torch.float64 else self._rows32
    weights = dict(zip(self.arch.weight_names, self.layers(theta)))
    return self.arch.predict_weights(backends.torch(), weights, rows)

  def layers(self, theta):
    """theta's views as the hidden kernels W1..W_depth [width, width] and v [width, 1]."""
    d, k = self.width, self.width * self.width
    return ([theta[i * k:(i + 1) * k].reshape(d, d) for i in range(self.depth)]
            + [theta[self.depth * k:].reshape(d, 1)])


def rho(f, theta):
  r = f(theta) - theta
  return float((r @ r) / (theta @ theta))


def solve(f, theta, steps, damping=1e-2, target=1e-26):
  """Levenberg-Marquardt on (f(theta) - theta) / ||theta|| with a dense Jacobian (float64)."""
  def residual(t):
    return (f(t) - t) / t.norm()
  eye = torch.eye(theta.numel(), dtype=theta.dtype)
  r = residual(theta)
  value = float(r @ r)
  for _ in range(steps):
    jac = torch.func.jacfwd(residual)(theta)
    jtj, grad = jac.T @ jac, jac.T @ r
    scale = jtj.diagonal().mean()
    while True:
      trial = theta + torch.linalg.solve(jtj + damping * scale * eye, -grad)
      r_trial = residual(trial)
      if float(r_trial @ r_trial) < value:
        theta, r, value = trial, r_trial, float(r_trial @ r_trial)
        damping = max(damping / 3, 1e-15)
        break
      damping *= 4
      if damping > 1e10:
        return theta
    if value < target:
      break
  return theta


def solve_adam(f, theta, steps, learning_rate=3e-3, mu=0.0, seed=0, log_every=0, nu=0.0,
               target=0.0):
  """Adam (float32, cosine decay) on log(rho) + mu log(||J xi||^2 / ||xi||^2) + nu log(||J u||^2).

  The second term is Hutchinson's estimate of the squared bulk radius ||J||_F^2 / N, one fresh
  Gaussian probe xi per step (mu = 0: rho alone); the third the stretch along u, the top
  eigenvector of J by power iteration (three products a step, u carried from step to step), so
  that an outlier the bulk term leaves is pushed in too. With target > 0 each of these two terms
  is a hinge, relu(log(term) - 2 log(target)): once the bulk and the top stretch are below the
  target, only rho is minimised. Matrix-free: for widths where the dense Jacobian is too big.
  """
  def stability(term):
    return torch.relu(torch.log(term) - 2 * math.log(target)) if target else torch.log(term)

  theta = theta.float().clone().requires_grad_(True)
  optimizer = torch.optim.Adam([theta], lr=learning_rate)
  schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
  g = torch.Generator().manual_seed(seed + 2)
  u = torch.randn(f.num_weights, generator=g)
  u /= u.norm()
  stretch = float('nan')
  for i in range(steps):
    if nu:
      with torch.no_grad():
        for _ in range(3):
          ju = torch.func.jvp(f, (theta.detach(),), (u,))[1]
          stretch = float(ju.norm())
          u = ju / ju.norm()
    optimizer.zero_grad()
    r = f(theta) - theta
    value = (r @ r) / (theta @ theta)
    loss = torch.log(value)
    if mu:
      xi = torch.randn(f.num_weights, generator=g)
      loss = loss + mu * stability(torch.func.jvp(f, (theta,), (xi,))[1].pow(2).sum()
                                   / xi.pow(2).sum())
    if nu:
      loss = loss + nu * stability(torch.func.jvp(f, (theta,), (u,))[1].pow(2).sum())
    loss.backward()
    optimizer.step()
    schedule.step()
    if log_every and (i % log_every == 0 or i == steps - 1):
      print(f'  step {i}: rho {float(value):.3e}, weight RMS '
            f'{float(theta.detach().pow(2).mean().sqrt()):.3f}'
            + (f', top stretch {stretch:.3f}' if nu else ''), flush=True)
  return theta.detach().double()


def matrix_free_spectrum(f, theta, k=6, probes=16, seed=0):
  """(the k outer eigenvalues of J by ARPACK, the bulk radius by Hutchinson), float64."""
  n = f.num_weights

  def matvec(x):
    x = torch.from_numpy(np.asarray(x, np.float64).reshape(-1))
    return torch.func.jvp(f, (theta,), (x,))[1].numpy()

  operator = sla.LinearOperator((n, n), matvec=matvec, dtype=np.float64)
  rng = np.random.default_rng(seed)
  values = sla.eigs(operator, k=k, which='LM', v0=rng.standard_normal(n), tol=1e-6,
                    maxiter=20 * n, return_eigenvectors=False)
  total = sum(float(np.sum(matvec(rng.choice([-1.0, 1.0], size=n)) ** 2)) for _ in range(probes))
  return values, math.sqrt(total / probes / n)


def lineage(f32, theta, generations):
  """rho of theta and of each float32 descendant up to `generations`, stopping after the first
  that is not a quine (or not finite)."""
  rhos, t = [], theta
  for _ in range(generations + 1):
    value = rho(f32, t)
    if not math.isfinite(value) or value > QUINE_RHO:
      rhos.append(value if math.isfinite(value) else None)
      break
    rhos.append(value)
    t = f32(t)
  return rhos


def noise_test(f32, theta, count, noise, generations, seed=0):
  """How many perturbed copies return to theta; and each copy's distance per generation."""
  g = torch.Generator().manual_seed(seed)
  norm = float(theta.norm())
  returned, curves = 0, []
  for _ in range(count):
    xi = torch.randn(theta.numel(), generator=g, dtype=torch.float64).to(theta.dtype)
    t = theta + noise * norm * xi / xi.norm()
    curve = []
    for _ in range(generations):
      t = f32(t)
      curve.append(float((t - theta).norm()) / norm if torch.isfinite(t).all() else math.inf)
    curves.append(curve)
    returned += curve[-1] <= QUINE_RHO
  return returned, curves


def run(width, activation, gain, seed, steps=300, init_std=0.5, projection_std=None,
        generations=300, perturbations=10, noise=0.02, noise_generations=100, solver='lm',
        mu=0.0, learning_rate=3e-3, penalty_steps=0, depth=2, nu=0.0, start=None, target=0.0):
  """One search: the solution's numbers (a dict, also printed) and what the plot needs.

  solver 'lm': dense Levenberg-Marquardt and the dense spectrum (tiny widths); 'adam':
  `solve_adam` and `matrix_free_spectrum` (any width; eigenvalues are then the outer six). With
  penalty_steps > 0, Adam first runs `steps` on rho alone, then `penalty_steps` more with mu
  (at a third of the learning rate), warm-started from that near-quine. nu weighs the outlier
  term of `solve_adam` wherever mu is used, target its hinge. start: theta to start from (None:
  N(0, init_std^2)).
  """
  f = StandardisedQuine(width, activation, gain, seed, projection_std, depth)
  g = torch.Generator().manual_seed(seed)
  if start is None:
    start = torch.randn(f.num_weights, generator=g, dtype=torch.float64) * init_std
  if solver == 'lm':
    theta = solve(f, start, steps)
    jac = torch.func.jacfwd(f)(theta)
    eig = torch.linalg.eigvals(jac).numpy()
    bulk = float(jac.pow(2).mean().sqrt() * math.sqrt(f.num_weights))
  else:
    first = (0.0, 0.0) if penalty_steps else (mu, nu)
    theta = solve_adam(f, start, steps, learning_rate, first[0], seed,
                       log_every=max(1, steps // 10), nu=first[1], target=target)
    if penalty_steps:
      theta = solve_adam(f, theta, penalty_steps, learning_rate / 3, mu, seed + 1,
                         log_every=max(1, penalty_steps // 10), nu=nu, target=target)
    eig, bulk = matrix_free_spectrum(f, theta, seed=seed)
  u = theta / theta.norm()
  stretch = float(u @ torch.func.jvp(f, (theta,), (u,))[1])
  theta32 = theta.float()
  f32 = lambda t: f(t.float())  # pylint: disable=unnecessary-lambda-assignment
  rhos = lineage(f32, theta32, generations)
  fertile = sum(1 for r in rhos[1:] if r is not None and r <= QUINE_RHO)
  returned, curves = noise_test(f32, theta32, perturbations, noise, noise_generations, seed)
  row = dict(width=width, depth=depth, n=f.num_weights, activation=activation, gain=gain,
             seed=seed, rho=rho(f, theta), rho_float32=rho(f32, theta32),
             weight_rms=float(theta.pow(2).mean().sqrt()),
             near_bounds=float((theta.abs() >= 0.99).double().mean()),
             spectral_radius=float(np.abs(eig).max()),
             frobenius_radius=bulk, solver=solver, mu=mu, nu=nu, stability_target=target,
             penalty_steps=penalty_steps,
             warm_start=start is not None,
             stretch_theta=stretch,
             fertile_generations=fertile, lineage_generations_tried=generations,
             noise=noise, noise_returned=int(returned), perturbations=perturbations)
  # The spectrum describes the map at theta; it says what the lineage does only at a fixed point.
  row['exact'] = bool(row['rho'] <= EXACT_RHO and row['weight_rms'] > 0.01)
  row['contracting_quine'] = bool(row['exact'] and row['spectral_radius'] < 1)
  print(json.dumps(row), flush=True)
  return row, dict(eigenvalues=eig, rhos=rhos, curves=curves, theta=theta.numpy())


def warm_start(path):
  """(theta float64, the export's setting or None) from a zoo export or a --save_theta .npy.

  An export (a dump folder, or a model folder whose newest version is used) must be a vanilla
  quine with kernel_norm 'standardise', a hidden activation of this script and a tanh output:
  the setting is then its width, depth, activation, gain, projection seed and projection std.
  """
  if path.endswith('.npy'):
    return torch.from_numpy(np.load(path).astype(np.float64).reshape(-1)), None
  from export import dump as dump_lib  # pylint: disable=g-import-not-at-top
  try:
    dump = dump_lib.read_dump(dump_lib.find_dump(path), require_onnx=False)
  except dump_lib.DumpError as e:
    raise ValueError(str(e)) from e
  c = dump.config
  want = dict(kind='vanilla', kernel_norm='standardise', output_activation='tanh')
  for key, value in want.items():
    if c.get(key, 'none') != value:
      raise ValueError(f'this script runs {key} {value!r} quines; the export has '
                       f'{c.get(key, "none")!r}')
  if c['activation'] not in _HIDDEN_ACTIVATIONS:
    raise ValueError(f'hidden activation {c["activation"]!r} is not one of '
                     f'{list(_HIDDEN_ACTIVATIONS)}')
  setting = dict(width=c['width'], depth=c['num_hidden'], activation=c['activation'],
                 gain=float(c['gain']), seed=c['projection_seed'],
                 projection_std=c['projection_std'])
  return torch.from_numpy(dump.theta.astype(np.float64)), setting


def self_consistent_point(f, generator_, rounds=8):
  """Gaussian weights, each layer then rescaled `rounds` times to the RMS f prints there."""
  theta = torch.randn(f.num_weights, generator=generator_, dtype=torch.float64) * 0.3
  for _ in range(rounds):
    out = f.layers(f(theta))
    for layer, printed in zip(f.layers(theta), out):
      layer *= printed.pow(2).mean().sqrt() / layer.pow(2).mean().sqrt()
  return theta


def bulk_at_random_point(width, activation='tanh', gain=1.0, seed=0, probes=12, rounds=8,
                         depth=2):
  """sqrt(||J||_F^2 / N) at a random point whose layers are as large as what f prints there.

  Gaussian weights, then `rounds` times: each layer (W1, ..., v) rescaled to the RMS of the
  predictions at its own coordinates. Matrix-free (Hutchinson with `probes` Gaussian vectors), so
  any width: what the bulk of J's spectrum looks like where no fixed point has been solved for.
  """
  f = StandardisedQuine(width, activation, gain, seed, depth=depth)
  g = torch.Generator().manual_seed(seed + 1)
  theta = self_consistent_point(f, g, rounds)
  total = 0.0
  for _ in range(probes):
    xi = torch.randn(f.num_weights, generator=g, dtype=torch.float64)
    total += float(torch.func.jvp(f, (theta,), (xi,))[1].pow(2).sum() / xi.pow(2).sum())
  return dict(width=width, depth=depth, n=f.num_weights, activation=activation, gain=gain,
              seed=seed, rho=rho(f, theta), weight_rms=float(theta.pow(2).mean().sqrt()),
              frobenius_radius=math.sqrt(total / probes))


def plot(row, extra, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
  eig = extra['eigenvalues']
  circle = np.exp(1j * np.linspace(0, 2 * np.pi, 200))
  ax1.plot(circle.real, circle.imag, 'k--', lw=0.8, label='unit circle')
  ax1.scatter(eig.real, eig.imag, s=12, label=f'eigenvalues of J (radius '
              f'{row["spectral_radius"]:.3f})')
  ax1.set_aspect('equal')
  ax1.set_xlabel('Re')
  ax1.set_ylabel('Im')
  ax1.legend(fontsize=7, loc='lower left')
  ax1.set_title(f'width {row["width"]}, depth {row["depth"]} (N = {row["n"]}), '
                f'{row["activation"]} hidden, seed {row["seed"]}', fontsize=9)
  gens = np.arange(len(extra['rhos']))
  ax2.semilogy(gens, [max(r or 1e300, 1e-32) for r in extra['rhos']], label='rho of generation g')
  for i, curve in enumerate(extra['curves']):
    ax2.semilogy(np.arange(1, len(curve) + 1), np.maximum(curve, 1e-32), color='C1', lw=0.6,
                 alpha=0.7, label=f'{row["noise"]:.0%} perturbed copies: distance' if i == 0 else None)
  ax2.axhline(QUINE_RHO, color='k', ls=':', lw=0.8)
  ax2.set_xlabel('generation')
  ax2.set_title(f'lineage (float32): {row["fertile_generations"]}/{row["lineage_generations_tried"]}'
                f' fertile; {row["noise_returned"]}/{row["perturbations"]} copies return', fontsize=9)
  ax2.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def plot_frontier(rows, path):
  """Spectral radius against rho, one series per row label (or depth, width, solver, start).

  Each point is annotated with its row's `annotation`, else its mu[/nu].
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  def name_of(r):  # a row's 'label', else its depth, width, solver, start and outlier term
    return r.get('label') or (
        f'depth {r["depth"]}, width {r["width"]}, {r["solver"]}'
        + (', warm start' if r.get('warm_start') else '')
        + (', + outlier term' if r.get('nu') else ''))

  fig, ax = plt.subplots(figsize=(7, 4.8))
  for i, name in enumerate(sorted({name_of(r) for r in rows})):
    sel = [r for r in rows if name_of(r) == name]
    xs = [max(r['rho'], 1e-32) for r in sel]
    ys = [r['spectral_radius'] for r in sel]
    ax.scatter(xs, ys, color=f'C{i % 10}', marker='os^vD<>'[i % 7], label=name)
    for r, x, y in zip(sel, xs, ys):
      text = r.get('annotation') or (f'{r.get("mu", 0):g}'
                                     + (f'/{r["nu"]:g}' if r.get('nu') else ''))
      ax.annotate(text, (x, y),
                  fontsize=6, xytext=(3, 3), textcoords='offset points')
  ax.axhline(1.0, color='k', ls='--', lw=0.8)
  ax.axvline(QUINE_RHO, color='k', ls=':', lw=0.8)
  ax.set_xscale('log')
  ax.set_yscale('log')
  ax.set_xlabel('rho (1 = prints zeros)')
  ax.set_ylabel('spectral radius of J')
  ax.set_title('a fertile quine sits left of rho = 1e-3 and below 1 '
               '(labels: mu[/nu] or the gain g)', fontsize=9)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main(argv):
  del argv
  if _REPLOT.value:
    if not _PLOT.value:
      print('standardised_quines.py: error: --replot needs --plot=PNG', file=sys.stderr)
      sys.exit(2)
    rows = []
    for path in _REPLOT.value:
      with open(path) as f:
        rows.extend(json.loads(line) for line in f if line.strip())
    plot_frontier(rows, _PLOT.value)
    return
  torch.set_num_threads(1)
  seeds = ([int(s) for s in _SEED_LIST.value] if _SEED_LIST.value else range(_SEEDS.value))
  widths, depths = [int(w) for w in _WIDTHS.value], [int(k) for k in _DEPTHS.value]
  gains = [float(x) for x in _GAINS.value]
  if _BULK.value:
    for width, depth, act, gain in itertools.product(widths, depths, _ACTIVATIONS.value, gains):
      print(json.dumps(bulk_at_random_point(width, act, gain, seeds[0], depth=depth)), flush=True)
    return
  activations, projection_std, start = _ACTIVATIONS.value, _PROJECTION_STD.value, None
  if _WARM_START.value:
    try:
      start, setting = warm_start(_WARM_START.value)
    except (ValueError, OSError) as e:
      print(f'standardised_quines.py: error: --warm_start={_WARM_START.value}: {e}',
            file=sys.stderr)
      sys.exit(2)
    if setting:  # a zoo export: its architecture and projection
      widths, depths, activations = [setting['width']], [setting['depth']], [setting['activation']]
      gains, seeds = [setting['gain']], [setting['seed']]
      projection_std = setting['projection_std']
    elif len(widths) * len(depths) * len(activations) * len(gains) * len(seeds) != 1:
      print('standardised_quines.py: error: --warm_start with a .npy takes one width, depth, '
            'activation, gain and seed', file=sys.stderr)
      sys.exit(2)
  results = []
  for width, depth, act, gain, seed in itertools.product(widths, depths, activations, gains,
                                                         seeds):
    if start is not None and start.numel() != depth * width * width + width:
      print(f'standardised_quines.py: error: --warm_start={_WARM_START.value}: it has '
            f'{start.numel()} weights, width {width} and depth {depth} have '
            f'{depth * width * width + width}', file=sys.stderr)
      sys.exit(2)
    results.append(run(width, act, gain, seed, _STEPS.value, _INIT_STD.value, projection_std,
                       _GENERATIONS.value, _PERTURBATIONS.value, _NOISE.value,
                       _NOISE_GENERATIONS.value, _SOLVER.value, _MU.value, _LEARNING_RATE.value,
                       _PENALTY_STEPS.value, depth, _NU.value, start, _TARGET.value))
  rows = [r for r, _ in results]
  if _SAVE_THETA.value:
    for row, extra in results:
      depth = '' if row['depth'] == 2 else f'_d{row["depth"]}'
      name = f'_w{row["width"]}{depth}_{row["activation"]}_s{row["seed"]}.npy'
      np.save(_SAVE_THETA.value + name, extra['theta'])
  quines = [r for r in rows if r['rho'] <= QUINE_RHO and r['weight_rms'] > 0.01]
  exact = [r for r in quines if r['exact']]
  contracting = [r for r in exact if r['contracting_quine']]
  print(f'{len(rows)} runs, {len(quines)} non-trivial quines (rho <= 1e-3), {len(exact)} exact '
        f'(rho <= {EXACT_RHO:g}), {len(contracting)} of them contracting', flush=True)
  if _OUTPUT.value:
    with open(_OUTPUT.value, 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in rows)
  if _PLOT.value and quines:
    best = min(range(len(rows)), key=lambda i: (not rows[i]['exact'], rows[i] not in quines,
                                                 rows[i]['spectral_radius']))
    plot(*results[best], _PLOT.value)


if __name__ == '__main__':
  app.run(main)
