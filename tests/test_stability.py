"""Tests of models/stability.py: the spectrum of J, lineages, the noise test, regeneration to an
attractor and the weights' profile."""

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from conftest import fake_mnist  # pylint: disable=g-bad-import-order
from conftest import tiny_aux_config  # pylint: disable=g-bad-import-order
from conftest import tiny_model_config  # pylint: disable=g-bad-import-order
from models import build_quine
from models import linearization
from models import stability
from models.config import ModelConfig
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


class AuxiliaryTest(tf.test.TestCase):

  def test_an_auxiliary_quine_is_analysed_with_its_accuracy_along_the_lineage(self):
    config = tiny_aux_config()
    model = build_quine(config)
    data = fake_mnist(config, separable=True)
    report = stability.analyse(
        model, stability.StabilityConfig(generations=3, num_perturbations=2, noise_generations=2),
        data.test_images, data.test_labels)
    logits = model.classify(data.test_images).numpy()
    self.assertAllClose(report['accuracy'], np.mean(logits.argmax(1) == data.test_labels))
    self.assertLen(report['lineage_accuracies'], len(report['lineage_rhos']))
    self.assertLen(report['noise']['final_accuracies'], 2)
    self.assertIn('test accuracy', stability.summary_line(report))
    # Without images, the spectrum alone.
    self.assertNotIn('accuracy', stability.analyse(
        model, stability.StabilityConfig(generations=1, num_perturbations=0)))


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


def _relu_readout(gain, width=8):
  """The --preset=stable architecture at a tiny width."""
  return ModelConfig(width=width, num_hidden=1, activation='relu', output_activation='tanh',
                     kernel_norm='standardise', gain=gain)


class RegenerateTest(tf.test.TestCase):

  def test_regeneration_reaches_a_contracting_quine_above_the_threshold_gain(self):
    # Width 8 (N = 72), gain 6: the initial weights regenerate to an attracting fixed point.
    model = build_quine(_relu_readout(6.0))
    initial_rms = np.sqrt(np.mean(model.flatten().numpy() ** 2))
    self.assertEqual(stability.regenerate(model, 100), 100)
    theta = model.flatten().numpy()
    self.assertGreater(np.sqrt(np.mean(theta ** 2)), initial_rms)
    jacobian = stability.Jacobian(model)
    rho = np.sum((jacobian.predictions - jacobian.theta) ** 2) / np.sum(jacobian.theta ** 2)
    self.assertLess(rho, 1e-12)
    self.assertLess(np.abs(stability.outer_eigenvalues(jacobian)[0]), 1.0)
    self.assertTrue(np.all(theta >= 0))  # h >= 0 and v >= 0: the readout adds up coherently

  def test_below_the_threshold_gain_regeneration_goes_to_zero(self):
    model = build_quine(_relu_readout(2.0))
    stability.regenerate(model, 100)
    self.assertLess(np.sqrt(np.mean(model.flatten().numpy() ** 2)), 1e-6)

  def test_regeneration_stops_before_a_non_finite_child(self):
    model = build_quine(tiny_model_config(width=4))
    model.assign_flat(model.flatten() * 1e30)  # SELU, linear output: the child overflows
    self.assertLess(stability.regenerate(model, 5), 5)
    self.assertTrue(np.all(np.isfinite(model.flatten().numpy())))


class WeightShapeTest(tf.test.TestCase):

  def test_the_share_explained_by_the_projection_sum(self):
    model = build_quine(_relu_readout(1.0, width=40))  # N = 1,640: 16 bins of ~100
    u = model.architecture.projections['coordinate'].rows().astype(np.float64).sum(axis=1)
    profile = np.tanh(3 * u / u.std())
    model.assign_flat(tf.constant(profile, tf.float32))
    shape = stability.weight_shape(model)
    self.assertGreater(shape['projection_sum_r2'], 0.95)
    self.assertAllClose(shape['near_bounds'], np.mean(np.abs(profile) >= 0.99), atol=2e-3)
    self.assertGreater(shape['near_bounds'], 0.1)
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, model.num_weights)
    model.assign_flat(tf.constant(noise, tf.float32))
    shape = stability.weight_shape(model)
    self.assertLess(shape['projection_sum_r2'], 0.05)
    self.assertEqual(shape['near_bounds'], 0.0)


if __name__ == '__main__':
  absltest.main()
