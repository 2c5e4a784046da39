"""Non-trivial quines by solving the fixed-point equation f_theta(C) = theta directly.

The paper's methods (gradient steps on L_SR against frozen targets, regeneration) only shrink the
weights: every solution they find has rho = L_SR / sum(theta^2) ~ 1. Here the quine condition is
treated as what it is, N equations in N unknowns,

    F(theta) = f_theta(C) - theta = 0,        C = all N coordinates,

and solved with Levenberg-Marquardt whose Jacobian products (J v and J^T w, sharing one forward
pass per step) are computed without ever forming the N x N Jacobian; each LM step solves the damped
normal equations (J_r^T J_r + lambda I) delta = -J_r^T r by conjugate gradients.

Three things make this work where plain Newton does not:

* Normalisation. LM on F itself collapses to the trivial fixed point theta = 0 (J_F(0) = -I is
  perfectly conditioned, so Newton jumps there in a few steps). The residual here is
  r = F / ||theta||, whose squared norm is exactly rho, so shrinking does not pay.
* Optional deflation at the start. rho -> 1 as theta -> 0, so from a start with rho > 1 LM on rho
  can still slide to zero (width 6, seed 0); with deflation_power=2 the solver minimises
  ||F||^2 / ||theta||^4 (a pole at 0) while rho > 1/2.
* Smoothing continuation. SELU's slope jumps from 1.758 to 1.051 at 0, and with N * width
  pre-activations some always sit near the kink: LM on the real network stalls at rho ~1e-4..1e-3
  (a tanh quine, which is smooth, converges to rho ~1e-12). The solver first solves the quine with
  the kink rounded off over a width beta (the activation registry's `smooth` form), then shrinks
  beta stage by stage to 0, each stage starting from the previous solution. Smooth activations
  (tanh, sin, linear) skip the continuation.

`FixedPointSolver` runs one LM iteration per `step()` on a Keras `VanillaQuine` and writes the
iterate back into it; `solve()` loops it for scripts.
"""

import dataclasses
import math
import time

import numpy as np
import tensorflow as tf

from models import linearization


@dataclasses.dataclass(frozen=True)
class SolverConfig:
  """Hyper-parameters of `FixedPointSolver`.

  Attributes:
    dtype: 'float32' (default; ~2.5x faster than float64 at width 100 and enough for rho down to
      ~1e-10) or 'float64' (for polishing further).
    smoothing_schedule: the continuation: kink widths beta of the kinked activations' `smooth`
      forms, one stage each, the last 0.0 (the quine's real activations). Empty or (0.0,) means
      no smoothing; a quine without kinked activations ignores it.
    advance_rho: a stage ends once rho (under that stage's beta) is at most this.
    search_steps: most LM steps of the first stage (the global search from the initial weights).
    stage_steps: most LM steps of every later stage except the last (which runs until the caller
      stops it).
    initial_damping: LM damping lambda at the start of each stage, in units where the identity
      part of J_r has singular values 1 (so it does not depend on width or weight scale).
    min_damping: lower clamp of lambda.
    max_damping: upper clamp of lambda; reaching it ends a stage ('stalled').
    cg_iterations: conjugate-gradient iterations per LM step (each is one J v and one J^T w).
    cg_tolerance: relative residual at which CG stops early.
    deflation_power: p in the minimised ||F(theta)||^2 / ||theta||^(2p). p = 1 is rho itself, but
      rho -> 1 as theta -> 0, so from a start with rho > 1 (f_theta . theta < 0) LM can still
      slide down to the trivial quine; p = 2 puts a pole at theta = 0 (deflation) and keeps the
      same non-trivial roots. It also rewards growing weights, so it is used only while
      rho > deflate_above_rho (the start), and p = 1 (rho) afterwards. Default 1 (off): at width
      100, seed 1, p = 2 let rho climb from 1.1 to 1.4 while the weights grew.
    deflate_above_rho: see deflation_power.
    lineage_span: K, how many generations the residual spans. 1 is the quine condition alone. With
      K > 1 the solver minimises sum_g ||theta_{g+1} - theta_g||^2 / ||theta||^2 over the lineage
      theta_0 = theta, theta_{g+1} = f_{theta_g}(C), g < K: a near-quine whose first K - 1
      descendants are near-quines too. An approximate fixed point of regeneration is unstable
      (each generation multiplies its error ~25x at width 100), so K = 1 solutions have children
      that are not quines; K = 3 asks for the child and the grandchild as well.
    quine_steps: with lineage_span > 1, most LM steps of the real-activation quine stage before
      the lineage stage starts.
  """
  dtype: str = 'float32'
  smoothing_schedule: tuple = (0.03, 0.01, 0.003, 0.0)
  advance_rho: float = 1e-12
  search_steps: int = 20
  stage_steps: int = 8
  initial_damping: float = 1e-2
  min_damping: float = 1e-12
  max_damping: float = 1e8
  cg_iterations: int = 40
  cg_tolerance: float = 1e-6
  deflation_power: float = 1.0
  deflate_above_rho: float = 0.5
  lineage_span: int = 1
  quine_steps: int = 60


class FixedPointSolver(tf.Module):
  """Finds theta with f_theta(C) = theta, starting from (and writing back to) `model`'s weights.

  One `step()` is one Levenberg-Marquardt iteration on the normalised residual of the current
  continuation stage (kinked activations smoothed over the stage's beta, the real activations in
  the last stage). The solver is deterministic given the model's weights; its only state besides
  them is `damping`, `stage` and `stage_step` (tf.Variables: `tf.train.Checkpoint(solver=solver)`
  saves and restores them; so do `state_dict` / `load_state_dict`).
  """

  def __init__(self, model, config=SolverConfig(), name='fixed_point_solver'):
    super().__init__(name=name)
    if model.architecture.classifies:  # its fixed points would ignore the task
      raise ValueError('the fixed-point solver handles vanilla quines only')
    self.model = model
    self.config = config
    schedule = tuple(config.smoothing_schedule) or (0.0,)
    if schedule[-1] != 0.0:
      schedule += (0.0,)
    if not model.architecture.kinked:
      schedule = (0.0,)  # nothing to smooth: the continuation is for kinked activations only
    self.schedule = schedule
    # (kink width, generations) of each stage: the continuation solves the quine condition alone;
    # a lineage (lineage_span > 1) is a last stage that starts from its solution (from the initial
    # weights the lineage objective stalls at rho ~4e-3, width 10).
    self.stages = [(beta, 1) for beta in schedule]
    if config.lineage_span > 1:
      self.stages.append((0.0, config.lineage_span))
    self._dtype = tf.as_dtype(config.dtype)
    self.damping = tf.Variable(config.initial_damping, dtype=tf.float64, trainable=False,
                               name='damping')
    self.stage = tf.Variable(0, dtype=tf.int64, trainable=False, name='stage')
    self.stage_step = tf.Variable(0, dtype=tf.int64, trainable=False, name='stage_step')
    forward = linearization.make_forward(model, self._dtype)
    # beta is a tensor argument: one trace serves every smoothed stage; the real activation has
    # its own trace.
    self._forward = tf.function(forward)
    self._linearize, self._jvp, self._vjp = linearization.make_linearization(model, self._dtype)

  # ------------------------------------------------------------------- helpers (NumPy, float64)

  def _theta(self):
    return self.model.flatten().numpy().astype(np.float64)

  def _f(self, theta, beta):
    """f_theta(C) as a float64 NumPy vector, for kink width beta (0: the real activation)."""
    th = tf.constant(theta, self._dtype)
    y = self._forward(th, tf.constant(beta, self._dtype)) if beta > 0 else self._forward(th)
    return y.numpy().astype(np.float64)

  def _bind(self, theta, beta, generations):
    """The lineage at theta and its linearisation, as float64 NumPy values and functions.

    Returns:
      (thetas, jvp, vjp): thetas = [theta_0 = theta, theta_1, ..., theta_K] (theta_{g+1} =
      f_{theta_g}(C), K = generations); jvp(v) = [d theta_1, ..., d theta_K] along
      d theta_0 = v; vjp(cs) = sum_g (d theta_g / d theta)^T cs[g] for cs = [c_0, ..., c_K].
    """
    dt = self._dtype
    thetas, links = [theta], []
    for _ in range(generations):
      th = tf.constant(thetas[-1], dt)
      y, inputs, slopes = self._linearize(th, tf.constant(beta, dt), beta > 0)
      links.append((th, inputs, slopes))
      thetas.append(y.numpy().astype(np.float64))

    def jvp(v):
      out = []
      for th, inputs, slopes in links:  # d theta_{g+1} = J_g d theta_g
        v = self._jvp(th, inputs, slopes, tf.constant(v, dt)).numpy().astype(np.float64)
        out.append(v)
      return out

    def vjp(cs):
      a = cs[-1]
      for g in reversed(range(len(links))):
        th, inputs, slopes = links[g]
        a = self._vjp(th, inputs, slopes, tf.constant(a, dt)).numpy().astype(np.float64) + cs[g]
      return a

    return thetas, jvp, vjp

  def lineage(self, theta, beta=0.0, generations=1):
    """[theta_0, ..., theta_K] by K = `generations` regenerations (float64 NumPy vectors)."""
    thetas = [theta]
    for _ in range(generations):
      thetas.append(self._f(thetas[-1], beta))
    return thetas

  @staticmethod
  def _lineage_rho(thetas):
    """sum_g ||theta_{g+1} - theta_g||^2 / ||theta_0||^2 (rho itself for one generation)."""
    return float(sum(np.sum((b - a) ** 2) for a, b in zip(thetas[:-1], thetas[1:]))
                 / max(np.sum(thetas[0] ** 2), 1e-300))

  @classmethod
  def _rho(cls, theta, y):
    return cls._lineage_rho([theta, y])

  def _lm_step(self, theta, beta, generations):
    """One Levenberg-Marquardt step on F / ||theta||^p; returns (theta, diagnostics).

    F stacks the K generations' differences theta_{g+1} - theta_g (K = 1: f_theta(C) - theta).
    """
    cfg = self.config
    thetas, jvp, vjp = self._bind(theta, beta, generations)
    norm = np.linalg.norm(theta)
    r = np.concatenate([b - a for a, b in zip(thetas[:-1], thetas[1:])]) / norm
    rho = float(r @ r)
    k = len(thetas) - 1
    n = theta.shape[0]

    # Relative units x = delta / ||theta|| and u = theta / ||theta||. Up to the constant factor
    # ||theta||^(1-p), the Jacobian of F / ||theta||^p is then x -> dF x - p r (u . x), where
    # block g of dF x is d theta_{g+1} - d theta_g along d theta_0 = x.
    u = theta / norm
    power = cfg.deflation_power if rho > cfg.deflate_above_rho else 1.0

    def jr(v):
      ds = [v] + jvp(v)
      return np.concatenate([b - a for a, b in zip(ds[:-1], ds[1:])]) - power * r * (u @ v)

    def jrt(w):
      ws = np.split(w, k)
      # sum_g w_g . (d theta_{g+1} - d theta_g) = sum_g c_g . d theta_g.
      cs = [-ws[0]] + [ws[g - 1] - ws[g] for g in range(1, k)] + [ws[k - 1]]
      return vjp(cs) - power * u * (r @ w)

    def objective(candidate):  # ||F||^2 / ||theta||^(2p), in units where it is rho at theta
      scale = (norm / np.linalg.norm(candidate)) ** (2 * (power - 1))
      lineage = self.lineage(candidate, beta, k)
      return self._lineage_rho(lineage) * scale, scale, lineage

    lam = float(self.damping.numpy())
    x = np.zeros(n)
    res = -jrt(r)
    p = res.copy()
    rs = res @ res
    g_norm = math.sqrt(rs)
    cg_iters = 0
    for cg_iters in range(1, cfg.cg_iterations + 1):
      ap = jrt(jr(p)) + lam * p
      alpha = rs / (p @ ap)
      x += alpha * p
      res -= alpha * ap
      rs_new = res @ res
      if math.sqrt(rs_new) < cfg.cg_tolerance * g_norm:
        break
      p = res + (rs_new / rs) * p
      rs = rs_new
    jx = jr(x)
    predicted = rho - float((r + jx) @ (r + jx))
    candidate = theta + norm * x
    obj_new, scale, candidate_thetas = objective(candidate)
    gain = (rho - obj_new) / max(predicted, 1e-300)
    accepted = bool(np.isfinite(obj_new) and obj_new < rho)
    rho_new = obj_new / scale
    if accepted and gain > 0.75:
      lam = max(lam / 3.0, cfg.min_damping)
    elif not accepted or gain < 0.25:
      lam = min(lam * 4.0, cfg.max_damping)
    self.damping.assign(lam)
    if accepted:
      theta, rho, thetas = candidate, rho_new, candidate_thetas
    return theta, {'stage_rho': rho, 'quine_rho': self._rho(thetas[0], thetas[1]),
                   'damping': lam, 'cg_iterations': cg_iters, 'accepted': accepted}

  # ---------------------------------------------------------------------------------- API

  def step(self):
    """One LM iteration of the current stage; updates the model's weights in place.

    Returns:
      A dict of Python scalars: rho (of the real network, after the step), stage (index into
      `stages`), beta (its kink width), lineage_span (the generations its objective spans), stage_rho (the
      minimised objective under beta: rho, or the lineage's sum for lineage_span > 1), damping,
      cg_iterations, accepted, weight_rms.
    """
    cfg = self.config
    stage = int(self.stage.numpy())
    beta, generations = self.stages[stage]
    theta, diag = self._lm_step(self._theta(), beta, generations)
    self.stage_step.assign_add(1)
    last = stage == len(self.stages) - 1
    limit = cfg.search_steps if stage == 0 else cfg.stage_steps
    if stage == len(self.schedule) - 1:  # not last: a lineage stage follows
      limit = cfg.quine_steps
    if not last and (diag['stage_rho'] <= cfg.advance_rho or diag['damping'] >= cfg.max_damping
                     or int(self.stage_step.numpy()) >= limit):
      self.stage.assign(stage + 1)
      self.stage_step.assign(0)
      self.damping.assign(cfg.initial_damping)
    self.model.assign_flat(theta.astype(np.float32))
    # The step already ran the real network on theta unless this stage smooths the kink.
    quine_rho = diag.pop('quine_rho')
    diag['rho'] = quine_rho if beta == 0 else self._rho(theta, self._f(theta, 0.0))
    diag.update(stage=stage, beta=beta, lineage_span=generations,
                weight_rms=float(np.sqrt(np.mean(theta ** 2))))
    return diag

  def state_dict(self):
    """The solver's state besides the weights, as plain Python numbers."""
    return {'damping': float(self.damping.numpy()), 'stage': int(self.stage.numpy()),
            'stage_step': int(self.stage_step.numpy())}

  def load_state_dict(self, state):
    """Restores what `state_dict` returned."""
    self.damping.assign(state['damping'])
    self.stage.assign(state['stage'])
    self.stage_step.assign(state['stage_step'])


def solve(model, max_steps=100, target_rho=0.0, config=SolverConfig(), log_every=0,
          time_limit_s=None):
  """Runs `FixedPointSolver` on `model` until rho <= target_rho, a stall, or max_steps.

  Args:
    model: a built `VanillaQuine`; its weights are the starting point and receive the result.
    max_steps: most solver iterations.
    target_rho: stop once rho (of the float64 solver iterate) is at most this.
    config: `SolverConfig`.
    log_every: print a line every this many steps (0: silent).
    time_limit_s: stop after this many seconds of wall time (None: no limit).

  Returns:
    A list of the per-step diagnostics dicts, each with 'step' and 'seconds' added.
  """
  solver = FixedPointSolver(model, config)
  history = []
  start = time.time()
  for i in range(max_steps):
    diag = solver.step()
    diag.update(step=i + 1, seconds=time.time() - start)
    history.append(diag)
    if log_every and (i + 1) % log_every == 0:
      print(' '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}'
                     for k, v in diag.items()), flush=True)
    if diag['rho'] <= target_rho:
      break
    if diag['stage'] == len(solver.stages) - 1 and diag['damping'] >= config.max_damping:
      break
    if time_limit_s is not None and diag['seconds'] > time_limit_s:
      break
  return history
