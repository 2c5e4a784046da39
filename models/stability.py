"""Whether a quine is fertile: the stability of its weights as a fixed point of regeneration.

A quine's child is the network whose weights are its predictions, theta_{g+1} = f_{theta_g}(C).
The lineage stays a lineage of quines for ever only at a contracting fixed point: every eigenvalue
of J = d f_theta(C) / d theta inside the unit circle; then small errors (float32 rounding,
noise) heal instead of growing by |lambda| per generation. This module measures it for a vanilla
quine, matrix-free (Jacobian-vector products of `models.linearization`, float64; ARPACK through
scipy for the outer eigenvalues and the largest singular value, no dense N x N matrix), and tests
it the way a lineage does: regenerating the quine itself, and perturbed copies of it.
"""

import dataclasses
import functools
import math

import numpy as np
import scipy.sparse.linalg as sla
import tensorflow as tf

from models import backends
from models import linearization
from models.quine import pixels

# A descendant counts as a quine while its rho is at most this.
QUINE_RHO = 1e-3
# Up to this N the Jacobian is formed densely (N products) rather than handed to ARPACK.
_DENSE_MAX_N = 64


@dataclasses.dataclass(frozen=True)
class StabilityConfig:
  """What `analyse` measures.

  Attributes:
    num_eigenvalues: outer eigenvalues of J to find (ARPACK, largest modulus).
    generations: longest lineage to regenerate (stops at the first non-quine or non-finite one).
    num_perturbations: K copies of the quine perturbed by noise of relative size `noise`.
    noise: ||delta|| / ||theta|| of each perturbation.
    noise_generations: G, regenerations of each perturbed copy.
    return_tolerance: a perturbed copy has returned when ||theta_G - theta|| / ||theta|| <= this.
    seed: seed of the perturbations.
  """
  num_eigenvalues: int = 6
  generations: int = 300
  num_perturbations: int = 10
  noise: float = 0.02
  noise_generations: int = 100
  return_tolerance: float = 1e-3
  seed: int = 0


class Jacobian:
  """J = d f_theta(C) / d theta of a quine at its current weights, as products (float64)."""

  def __init__(self, model):
    linearize, self._jvp, self._vjp = linearization.make_linearization(model, tf.float64)
    self.theta = model.flatten().numpy().astype(np.float64)
    self._th = tf.constant(self.theta)
    y, self._inputs, self._slopes = linearize(self._th, tf.constant(0.0, tf.float64), False)
    self.predictions = y.numpy()
    self.n = self.theta.size

  def matvec(self, v):
    return self._jvp(self._th, self._inputs, self._slopes,
                     tf.constant(np.asarray(v, np.float64).reshape(-1))).numpy()

  def rmatvec(self, w):
    return self._vjp(self._th, self._inputs, self._slopes,
                     tf.constant(np.asarray(w, np.float64).reshape(-1))).numpy()

  def operator(self):
    return sla.LinearOperator((self.n, self.n), matvec=self.matvec, rmatvec=self.rmatvec,
                              dtype=np.float64)

  @property
  def small(self):
    """Whether the dense matrix is cheaper than ARPACK (which also needs k < n - 1)."""
    return self.n <= _DENSE_MAX_N

  @functools.cached_property
  def dense(self):
    """The N x N matrix, column by column (small quines only); built once."""
    return np.stack([self.matvec(e) for e in np.eye(self.n)], axis=1)


def outer_eigenvalues(jacobian, k=6, seed=0):
  """The k eigenvalues of largest modulus (complex, sorted by modulus, descending)."""
  n = jacobian.n
  if jacobian.small or n <= k + 2:
    values = np.linalg.eigvals(jacobian.dense)
  else:
    v0 = np.random.default_rng(seed).standard_normal(n)
    values = sla.eigs(jacobian.operator(), k=k, which='LM', v0=v0, maxiter=20 * n, tol=1e-6,
                      return_eigenvectors=False)
  values = values[np.argsort(-np.abs(values))]
  return values[:k]


def largest_singular_value(jacobian, seed=0):
  """||J||_2."""
  n = jacobian.n
  if jacobian.small:
    return float(np.linalg.norm(jacobian.dense, 2))
  v0 = np.random.default_rng(seed).standard_normal(n)
  return float(sla.svds(jacobian.operator(), k=1, v0=v0, tol=1e-6, maxiter=20 * n,
                        return_singular_vectors=False)[0])


def frobenius_radius(jacobian, probes=16, seed=0):
  """sqrt(||J||_F^2 / N): the radius of the bulk of J's spectrum, by Hutchinson's estimator.

  For an N x N matrix whose entries behave like independent ones (the circular law) the
  eigenvalues fill a disc of this radius; the spectral radius is then this, unless outliers lie
  beyond it (at the paper-size quine: 2.52 against a spectral radius of 2.59). Exact from the
  dense matrix for small quines; otherwise the mean of ||J xi||^2 / N over `probes` Rademacher
  vectors xi.
  """
  if jacobian.small:
    return float(np.sqrt(np.sum(jacobian.dense ** 2) / jacobian.n))
  rng = np.random.default_rng(seed)
  total = 0.0
  for _ in range(probes):
    xi = rng.choice([-1.0, 1.0], size=jacobian.n)
    total += float(np.sum(jacobian.matvec(xi) ** 2))
  return float(np.sqrt(total / probes / jacobian.n))


def _rho(theta, predictions):
  theta = np.asarray(theta, np.float64)
  return float(np.sum((np.asarray(predictions, np.float64) - theta) ** 2)
               / max(np.sum(theta ** 2), 1e-300))


def _regenerations(regenerate, theta, generations, accuracy=None, stop_above=None):
  """Regenerates `theta` up to `generations` times with the quine's own float32 pass.

  Returns:
    (rhos, accuracies, diverged_at): generation g's rho (against its child) and, with `accuracy`,
    its test accuracy, from the quine (g = 0) on. It stops after the first generation whose rho
    exceeds `stop_above` (None: never), or at the first non-finite child: that generation's rho
    is inf and diverged_at = g + 1 (else None).
  """
  rhos, accuracies, diverged_at = [], [], None
  current = np.asarray(theta, np.float32)
  for g in range(generations + 1):  # `current` is generation g (0: the quine itself)
    with np.errstate(all='ignore'):
      child = np.asarray(regenerate(current), np.float32)
    if accuracy:
      accuracies.append(accuracy(current))
    if not np.all(np.isfinite(child)):
      rhos.append(math.inf)
      diverged_at = g + 1
      break
    rhos.append(_rho(current, child))
    if stop_above is not None and rhos[-1] > stop_above:
      break
    current = child
  return rhos, accuracies, diverged_at


def _lineage_of(rhos, accuracies, diverged_at, threshold):
  """`lineage`'s result from a run of `_regenerations`: its generations up to the first that is
  not a quine (that one included when its child is finite)."""
  quines = 0
  while quines < len(rhos) and math.isfinite(rhos[quines]) and rhos[quines] <= threshold:
    quines += 1
  diverged = quines < len(rhos) and not math.isfinite(rhos[quines])
  end = quines if diverged else min(quines + 1, len(rhos))
  result = {'fertile_generations': max(quines - 1, 0), 'rhos': rhos[:end],
            'diverged_at': diverged_at if diverged else None}
  if accuracies:
    result['accuracies'] = accuracies[:end]
  return result


def lineage(regenerate, theta, generations, threshold=QUINE_RHO, accuracy=None):
  """Regenerates `theta` up to `generations` times with the quine's own float32 pass.

  Args:
    regenerate: theta [N] float32 -> predictions [N] (the child's weights).
    theta: the quine's weights.
    generations: most children to build.
    threshold: a generation is a quine while its rho is at most this.
    accuracy: optional theta -> test accuracy (an auxiliary quine's task, `accuracy_fn`).

  Returns:
    dict: fertile_generations (consecutive descendants, the quine itself not counted, that are
    quines), rhos (rho of each generation from the quine on, until the first non-quine or
    non-finite one), diverged_at (the first generation with non-finite or overflowing weights,
    or None), and with `accuracy` accuracies (of the same generations).
  """
  return _lineage_of(*_regenerations(regenerate, theta, generations, accuracy, threshold),
                     threshold)


def trajectory(regenerate, theta, generations, accuracy):
  """rho and test accuracy of generations 0..`generations`, quines or not.

  `lineage` stops at the first descendant that is not a quine; a quine that carries a task is
  judged by what its descendants still do after that (accuracy of generations 1, 5 and 300), so
  this one goes on until the weights stop being finite.

  Returns:
    dict: rhos and accuracies, one per generation from the quine itself (generation 0) on, until
    `generations` or the first non-finite child (diverged_at, else None).
  """
  rhos, accuracies, diverged_at = _regenerations(regenerate, theta, generations, accuracy)
  return {'rhos': rhos, 'accuracies': accuracies, 'diverged_at': diverged_at}


def noise_test(regenerate, theta, config, accuracy=None):
  """K perturbed copies of theta, each regenerated G times: how many return to theta.

  Returns:
    dict: returned (count), num_perturbations, noise, generations, final_distances (relative
    ||theta_G - theta|| / ||theta|| of each copy; inf where it diverged), and with `accuracy`
    (theta -> test accuracy) final_accuracies (each copy's after G generations; None where it
    diverged).
  """
  theta = np.asarray(theta, np.float64)
  norm = np.linalg.norm(theta)
  rng = np.random.default_rng(config.seed)
  distances, accuracies = [], []
  for _ in range(config.num_perturbations):
    z = rng.standard_normal(theta.size)
    current = (theta + config.noise * norm * z / np.linalg.norm(z)).astype(np.float32)
    with np.errstate(all='ignore'):
      for _ in range(config.noise_generations):
        current = np.asarray(regenerate(current), np.float32)
        if not np.all(np.isfinite(current)):
          break
      d = np.linalg.norm(current.astype(np.float64) - theta) / norm
    distances.append(float(d) if np.isfinite(d) else float('inf'))
    if accuracy:
      accuracies.append(accuracy(current) if np.all(np.isfinite(current)) else None)
  returned = sum(d <= config.return_tolerance for d in distances)
  result = {'returned': int(returned), 'num_perturbations': config.num_perturbations,
            'noise': config.noise, 'generations': config.noise_generations,
            'final_distances': distances}
  if accuracy:
    result['final_accuracies'] = accuracies
  return result


def accuracy_fn(model, images, labels):
  """theta [N] -> the test accuracy of the auxiliary quine with weights theta (float32).

  The network's classify path (a zero coordinate part) with the kernels taken from theta, one
  compiled call; the images' projection is computed once.
  """
  arch = model.architecture
  backend = backends.tensorflow()
  image_part = tf.matmul(pixels(images, arch.config.image_size),
                         tf.constant(model.image_projection.matrix()))
  kernels = linearization.kernel_split(arch)

  @tf.function(input_signature=[tf.TensorSpec([arch.num_weights], tf.float32)])
  def predicted_classes(theta):
    return tf.argmax(arch.classify(backend, kernels(theta), image_part), axis=1)

  labels = np.asarray(labels)
  return lambda theta: float(np.mean(
      predicted_classes(tf.constant(np.asarray(theta, np.float32))).numpy() == labels))


def regeneration_pass(model):
  """theta [N] -> f_theta(C) [N] in float32: the architecture's forward pass, one compiled call."""
  forward = tf.function(linearization.make_forward(model, tf.float32),
                        input_signature=[tf.TensorSpec([model.num_weights], tf.float32)])
  return lambda theta: forward(tf.constant(np.asarray(theta, np.float32))).numpy()


def regenerate(model, generations):
  """The paper's regeneration, theta <- f_theta(C), applied to the model's weights in place.

  It runs `generations` times in float32, or stops before the first non-finite child. It can only
  converge to an attracting (contracting) fixed point, so reaching a quine this way shows that the
  quine is fertile.

  Returns:
    How many regenerations ran.
  """
  regenerate_once = regeneration_pass(model)
  theta = model.flatten().numpy()
  done = 0
  while done < generations:
    child = regenerate_once(theta)
    if not np.all(np.isfinite(child)):
      break
    theta, done = child, done + 1
  model.assign_flat(tf.constant(theta))
  return done


def weight_shape(model, bins=200):
  """How a quine's weights are spread, and how much of them one number per coordinate explains.

  projection_sum_r2 is the share of the weights' variance explained by a function of
  u_c = sum_k P[c, k], the sum of coordinate c's projection row. The fit is theta averaged over
  quantile bins of u, at most `bins` of them and at least 100 weights each. The share is ~0 for
  weights unrelated to u, and 1 when theta_c = g(u_c).

  Returns:
    dict: weight_mean, weight_std, projection_sum_r2, and near_bounds (the share of weights within
    1% of the output activation's bounds) when that activation is bounded.
  """
  theta = model.flatten().numpy().astype(np.float64)
  bins = max(1, min(bins, theta.size // 100))
  u = model.architecture.projections['coordinate'].rows().astype(np.float64).sum(axis=1)
  fit = np.empty_like(theta)
  for part in np.array_split(np.argsort(u), bins):
    fit[part] = theta[part].mean()
  variance = np.sum((theta - theta.mean()) ** 2)
  shape = {'weight_mean': float(theta.mean()), 'weight_std': float(theta.std()),
           'projection_sum_r2': float(1 - np.sum((theta - fit) ** 2) / variance)
                                if variance else 0.0}
  bounds = model.architecture.output_activation.bounds
  if bounds:
    margin = 0.01 * (bounds[1] - bounds[0]) / 2
    shape['near_bounds'] = float(np.mean((theta <= bounds[0] + margin)
                                         | (theta >= bounds[1] - margin)))
  return shape


def analyse(model, config=StabilityConfig(), images=None, labels=None):
  """The stability report of a quine at its current weights.

  An auxiliary quine's J is taken over the whole of theta (its class head's columns are zero:
  those weights predict nothing); with test `images` and `labels` the report adds its accuracy,
  that of every generation of the lineage, and that of each perturbed copy after its generations.

  Returns:
    A JSON-serialisable dict: spectral_radius, outer_eigenvalues ([re, im] pairs), contracting
    (radius < 1), rayleigh_theta (u . J u for u = theta / ||theta||: the stretch of the quine's
    own scale), stretch_theta (||J u||), largest_singular_value, frobenius_radius
    (sqrt(||J||_F^2 / N), the bulk's radius), rho (float64), fertile_generations,
    lineage_rhos, diverged_at, noise (see `noise_test`).

    With images: accuracy, lineage_accuracies, noise['final_accuracies'], and trajectory (rho
    and accuracy of every generation up to config.generations, past the first non-quine too).
  """
  accuracy = (accuracy_fn(model, images, labels)
              if model.config.classifies and images is not None else None)
  jacobian = Jacobian(model)
  values = outer_eigenvalues(jacobian, config.num_eigenvalues, config.seed)
  norm = np.linalg.norm(jacobian.theta)
  u = jacobian.theta / norm if norm else jacobian.theta
  ju = jacobian.matvec(u)
  regenerate = regeneration_pass(model)
  theta = model.flatten().numpy()
  traced = None
  if accuracy:  # one run of 300 generations gives the trajectory, and the lineage as its prefix
    traced = trajectory(regenerate, theta, config.generations, accuracy)
    line = _lineage_of(traced['rhos'], traced['accuracies'], traced['diverged_at'], QUINE_RHO)
  else:
    line = lineage(regenerate, theta, config.generations)
  radius = float(np.abs(values[0]))
  report = {
      'spectral_radius': radius,
      'contracting': bool(radius < 1.0),
      'outer_eigenvalues': [[float(v.real), float(v.imag)] for v in values],
      'rayleigh_theta': float(u @ ju),
      'stretch_theta': float(np.linalg.norm(ju)),
      'largest_singular_value': largest_singular_value(jacobian, config.seed),
      'frobenius_radius': frobenius_radius(jacobian, seed=config.seed),
      'rho': _rho(jacobian.theta, jacobian.predictions),
      'fertile_generations': line['fertile_generations'],
      'lineage_generations_tried': config.generations,
      'lineage_rhos': line['rhos'],
      'diverged_at': line['diverged_at'],
      'noise': noise_test(regenerate, theta, config, accuracy),
  }
  if accuracy:
    report['accuracy'] = line['accuracies'][0]
    report['lineage_accuracies'] = line['accuracies']
    report['trajectory'] = traced
  return report


def summary_line(report):
  """One line of the headline numbers."""
  noise = report['noise']
  bulk = ('' if report.get('frobenius_radius') is None  # reports written before it existed
          else f'bulk sqrt(|J|_F^2/N) {report["frobenius_radius"]:.4g}, ')
  diverged = ('' if report['diverged_at'] is None
              else f' (diverged at generation {report["diverged_at"]})')
  task = ''
  if report.get('accuracy') is not None:
    accuracies = report['lineage_accuracies']
    task = f', test accuracy {accuracies[0]:.2%}'
    if len(accuracies) > 1:
      task += f' (generation {len(accuracies) - 1}: {accuracies[-1]:.2%})'
    traced = report.get('trajectory', {}).get('accuracies', [])
    shown = [g for g in (1, 5, 300) if g < len(traced)]
    if shown:
      task += ('; generations ' + '/'.join(map(str, shown)) + ' (quines or not): '
               + '/'.join(f'{traced[g]:.2%}' for g in shown))
    after = [a for a in noise.get('final_accuracies', []) if a is not None]
    if after:
      task += f', copies after noise {min(after):.2%}-{max(after):.2%}'
  return (f'spectral radius {report["spectral_radius"]:.4g} '
          f'({"contracting" if report["contracting"] else "not contracting"}), '
          f'|J|_2 {report["largest_singular_value"]:.4g}, {bulk}theta.J theta/|theta|^2 '
          f'{report["rayleigh_theta"]:.4g}, rho {report["rho"]:.3g}, '
          f'{report["fertile_generations"]}/{report["lineage_generations_tried"]} fertile '
          f'generations{diverged}, '
          f'{noise["returned"]}/{noise["num_perturbations"]} returned from {noise["noise"]:.0%} noise '
          f'after {noise["generations"]} generations' + task)
