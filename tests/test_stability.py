"""Tests of models/stability.py: the spectrum of J, lineages and the noise test."""

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from conftest import tiny_model_config  # pylint: disable=g-bad-import-order
from models import build_quine
from models import linearization
from models import stability
from trainers import fixed_point


def _dense_jacobian(model):
  forward = linearization.make_forward(model, tf.float64)
  theta = tf.constant(model.flatten().numpy().astype(np.float64))
  with tf.GradientTape() as tape:
    tape.watch(theta)
    y = forward(theta)
  return tape.jacobian(y, theta).numpy()


class SpectrumTest(tf.test.TestCase):

  def test_arpack_finds_the_dense_outer_eigenvalues(self):
    # Width 6: N = 2 * 36 + 6 = 78 > 64, so the matrix-free path runs.
    model = build_quine(tiny_model_config(width=6, init_seed=3))
    model.assign_flat(model.flatten() * 8.0)  # O(1) weights: a spectrum worth comparing
    jacobian = stability.Jacobian(model)
    self.assertEqual(jacobian.n, 78)
    dense = _dense_jacobian(model)
    want = np.sort(np.abs(np.linalg.eigvals(dense)))[::-1][:4]
    got = np.abs(stability.outer_eigenvalues(jacobian, k=4))
    self.assertAllClose(got, want, rtol=1e-5)
    self.assertAllClose(stability.largest_singular_value(jacobian), np.linalg.norm(dense, 2),
                        rtol=1e-5)
    # Hutchinson's estimate of the bulk radius against the exact sqrt(||J||_F^2 / N).
    exact = np.sqrt(np.sum(dense ** 2) / 78)
    self.assertAllClose(stability.frobenius_radius(jacobian, probes=400), exact, rtol=0.05)
    self.assertNotAllClose(stability.frobenius_radius(jacobian, probes=400), 1.2 * exact,
                           rtol=0.05)

  def test_unstable_quine_is_reported_with_its_lineage_and_noise(self):
    # The width-4 sin quine (rho ~1e-16 after 17 LM steps) has spectral radius ~2.2: float32
    # rounding grows ~2.2x per generation, so its lineage ends within a few dozen generations.
    model = build_quine(tiny_model_config(width=4, activation='sin'))
    fixed_point.solve(model, max_steps=40, target_rho=1e-14,
                      config=fixed_point.SolverConfig(dtype='float64', smoothing_schedule=()))
    report = stability.analyse(model, stability.StabilityConfig(
        generations=200, num_perturbations=3, noise_generations=30))
    self.assertGreater(report['spectral_radius'], 1.5)
    self.assertFalse(report['contracting'])
    self.assertLess(report['rho'], 1e-10)
    self.assertBetween(report['fertile_generations'], 3, 100)
    self.assertEqual(len(report['lineage_rhos']), report['fertile_generations'] + 2)
    self.assertGreater(report['lineage_rhos'][-1], stability.QUINE_RHO)
    self.assertEqual(report['noise']['returned'], 0)
    self.assertAllClose(np.hypot(*report['outer_eigenvalues'][0]), report['spectral_radius'])


class LineageTest(tf.test.TestCase):

  def test_a_contraction_heals_and_keeps_every_generation(self):
    theta = np.linspace(-1, 1, 50).astype(np.float32)
    contraction = lambda x: theta + 0.5 * (x - theta)
    line = stability.lineage(contraction, theta, generations=300)
    self.assertEqual(line['fertile_generations'], 300)
    self.assertIsNone(line['diverged_at'])
    noise = stability.noise_test(contraction, theta, stability.StabilityConfig(
        num_perturbations=4, noise_generations=20))
    self.assertEqual(noise['returned'], 4)  # 0.02 * 2**-20 < 1e-3

  def test_an_expansion_is_reported_diverged_at_its_first_non_finite_generation(self):
    theta = np.linspace(-1, 1, 50).astype(np.float32)
    line = stability.lineage(lambda x: x * np.float32(1e30), theta, generations=10,
                             threshold=np.inf)
    self.assertEqual(line['diverged_at'], 2)  # 1e30 is finite in float32, 1e60 is not
    self.assertEqual(line['fertile_generations'], 0)  # generation 1's rho needs generation 2


if __name__ == '__main__':
  absltest.main()
