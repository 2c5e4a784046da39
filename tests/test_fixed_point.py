"""Tests of trainers/fixed_point.py: the forward pass it solves, its derivatives, the solver."""

import dataclasses

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from conftest import tiny_model_config  # pylint: disable=g-bad-import-order
from models import build_quine
from trainers import fixed_point
from trainers import metrics as metrics_lib

# Small quines have large weights (init 1/sqrt(width), and solutions ~10x that), so their kinks need
# wider smoothing than the width-100 defaults. Width 5 (N = 2 * 5 * 5 + 5 = 55), seed 0 reaches
# rho ~4e-5 with this in ~10 s.
_FAST = fixed_point.SolverConfig(
    dtype='float64', smoothing_schedule=(0.3, 0.1, 0.03, 0.01, 0.003, 0.0), search_steps=40,
    stage_steps=10, cg_iterations=60)


def _model(width=5, **overrides):
  return build_quine(tiny_model_config(width=width, **overrides))


def _rho_and_rms(model):
  theta = model.flatten()
  predictions = model.predict_weights(tf.range(model.num_weights))
  m = metrics_lib.replication_metrics(theta, predictions)
  return float(m['rho']), float(m['weight_rms'])


class SolverTest(tf.test.TestCase, parameterized.TestCase):

  def test_finds_non_trivial_fixed_point(self):
    model = _model()
    rho0, rms0 = _rho_and_rms(model)
    self.assertGreater(rho0, 0.9)  # the initial network is no better than printing zeros
    history = fixed_point.solve(model, max_steps=120, target_rho=1e-6, config=_FAST)
    rho, rms = _rho_and_rms(model)  # measured on the float32 Keras model, not the solver
    self.assertLess(rho, 1e-3)
    self.assertGreaterEqual(rms, 0.5 * rms0)
    self.assertLess(history[-1]['rho'], 1e-3)

  def test_stages_advance_and_end_on_real_activation(self):
    model = _model()
    config = dataclasses.replace(_FAST, smoothing_schedule=(0.1, 0.0), search_steps=5,
                                 stage_steps=5)
    history = fixed_point.solve(model, max_steps=12, config=config)
    stages = [d['stage'] for d in history]
    self.assertEqual(stages, sorted(stages))
    self.assertEqual(stages[0], 0)
    self.assertEqual(history[-1]['beta'], 0.0)

  def test_lineage_products_are_adjoint_and_match_finite_differences(self):
    model = _model()
    solver = fixed_point.FixedPointSolver(model, dataclasses.replace(_FAST, lineage_span=3))
    theta = solver._theta()
    rng = np.random.default_rng(0)
    v, cs = rng.standard_normal(theta.size), [rng.standard_normal(theta.size) for _ in range(4)]
    thetas, jvp, vjp = solver._bind(theta, 0.1, 3)
    self.assertLen(thetas, 4)
    np.testing.assert_allclose(thetas[2], solver._f(thetas[1], 0.1), rtol=1e-12)
    dthetas = jvp(v)
    # <c, d theta> summed over generations 0..3 equals <vjp(c), v>.
    lhs = cs[0] @ v + sum(c @ d for c, d in zip(cs[1:], dthetas))
    self.assertAllClose(lhs, vjp(cs) @ v, rtol=1e-10)
    eps = 1e-6
    plus = solver.lineage(theta + eps * v, 0.1, 3)
    minus = solver.lineage(theta - eps * v, 0.1, 3)
    for g in range(3):
      np.testing.assert_allclose(dthetas[g], (plus[g + 1] - minus[g + 1]) / (2 * eps),
                                 rtol=1e-5, atol=1e-7)

  def test_lineage_stage_makes_children_quines(self):
    # One coarse smoothing stage and a single real-activation step: the lineage stage starts from
    # a network whose child and grandchild are far from quines, and must repair all three.
    model = _model()
    config = dataclasses.replace(_FAST, smoothing_schedule=(0.3, 0.0), search_steps=30,
                                 quine_steps=1, lineage_span=3)
    solver = fixed_point.FixedPointSolver(model, config)
    self.assertEqual(solver.stages, [(0.3, 1), (0.0, 1), (0.0, 3)])
    history = [solver.step() for _ in range(80)]
    switch = next(i for i, d in enumerate(history) if d['lineage_span'] == 3)
    self.assertLess(switch, 40)

    def generation_rhos():  # measured on float32 Keras models
      weights = model.flatten()
      rhos = []
      for _ in range(3):
        rhos.append(_rho_and_rms(model)[0])
        model.assign_flat(model.predict_weights(tf.range(model.num_weights)))
      model.assign_flat(weights)
      return rhos

    self.assertLess(history[-1]['stage_rho'], 1e-3 * history[switch]['stage_rho'])
    self.assertLess(max(generation_rhos()), 1e-3)
    restart = fixed_point.FixedPointSolver(_model(), config)
    for _ in range(switch):
      restart.step()
    model = restart.model
    self.assertGreater(max(generation_rhos()), 0.1)  # where the lineage stage started

  def test_deflation_keeps_a_bad_start_away_from_zero(self):
    # Width 6, seed 0 starts with rho > 1 (f . theta < 0): LM on rho alone (deflation_power=1)
    # (the default) slides to theta = 0; the deflated objective does not.
    collapsed, kept = _model(width=6), _model(width=6)
    rms0 = _rho_and_rms(kept)[1]
    config = dataclasses.replace(_FAST, smoothing_schedule=(0.1, 0.01, 0.0))
    fixed_point.solve(collapsed, max_steps=30, config=config)
    fixed_point.solve(kept, max_steps=30,
                      config=dataclasses.replace(config, deflation_power=2.0))
    self.assertLess(_rho_and_rms(collapsed)[1], 1e-3 * rms0)
    rho, rms = _rho_and_rms(kept)
    self.assertGreater(rms, rms0)
    self.assertLess(rho, 0.5)

  def test_deterministic(self):
    thetas = []
    for _ in range(2):
      model = _model()
      fixed_point.solve(model, max_steps=5, config=_FAST)
      thetas.append(model.flatten().numpy())
    self.assertAllEqual(thetas[0], thetas[1])

  def test_state_round_trip(self):
    model = _model()
    solver = fixed_point.FixedPointSolver(model, _FAST)
    for _ in range(3):
      solver.step()
    state = solver.state_dict()
    ckpt_dir = self.create_tempdir().full_path
    path = tf.train.Checkpoint(solver=solver).save(ckpt_dir + '/ckpt')

    other = fixed_point.FixedPointSolver(_model(), _FAST)
    tf.train.Checkpoint(solver=other).restore(path).assert_existing_objects_matched()
    self.assertEqual(other.state_dict(), state)
    third = fixed_point.FixedPointSolver(_model(), _FAST)
    third.load_state_dict(state)
    self.assertEqual(third.state_dict(), state)

  def test_resumed_run_matches_uninterrupted_run(self):
    straight = _model()
    solver = fixed_point.FixedPointSolver(straight, _FAST)
    for _ in range(4):
      solver.step()

    resumed = _model()
    first = fixed_point.FixedPointSolver(resumed, _FAST)
    for _ in range(2):
      first.step()
    second = fixed_point.FixedPointSolver(resumed, _FAST)
    second.load_state_dict(first.state_dict())
    for _ in range(2):
      second.step()
    self.assertAllEqual(straight.flatten(), resumed.flatten())

  def test_smooth_quines_skip_the_continuation(self):
    # Was: a tanh quine with the default schedule was a ValueError (and a traceback in the
    # trainer); the continuation applies to kinked activations only.
    solver = fixed_point.FixedPointSolver(_model(activation='tanh', output_activation='tanh'))
    self.assertEqual(solver.schedule, (0.0,))
    self.assertEqual(fixed_point.FixedPointSolver(_model()).schedule,
                     fixed_point.SolverConfig().smoothing_schedule)

  @parameterized.parameters('tanh', 'sin')
  def test_solves_smooth_quines(self, activation):
    # Width 4 (N = 36), seed 0: both reach rho ~1e-11 in 17 LM steps.
    model = _model(width=4, activation=activation)
    history = fixed_point.solve(model, max_steps=40, target_rho=1e-8,
                                config=dataclasses.replace(_FAST, smoothing_schedule=()))
    rho, rms = _rho_and_rms(model)
    self.assertLess(history[-1]['rho'], 1e-6)
    self.assertLess(rho, 1e-5)
    self.assertGreater(rms, 0.05)


if __name__ == '__main__':
  absltest.main()
