"""Tests of scripts/standardised_quines.py: the search finds a contracting, non-trivial quine.

Width 4 (N = 36), tanh hidden layers, seed 5: Levenberg-Marquardt from N(0, 0.5^2) weights reaches
an exact fixed point whose regeneration map contracts (every eigenvalue of J inside the unit
circle), whose weights stay spread (not pushed to tanh's bounds) and at least half the starting
RMS, whose 300 float32 descendants are all quines, and to which 10 of 10 copies perturbed by 2%
relative noise return.
"""

import os
import sys

from absl.testing import absltest
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'scripts'))
import standardised_quines  # pylint: disable=g-import-not-at-top,wrong-import-position


class StandardisedQuinesTest(absltest.TestCase):

  def test_width_4_finds_a_contracting_quine(self):
    torch.set_num_threads(1)
    row, extra = standardised_quines.run(4, 'tanh', 1.0, 5)
    self.assertLess(row['rho'], 1e-20)
    self.assertLess(row['rho_float32'], 1e-12)
    self.assertLess(row['spectral_radius'], 1.0)
    self.assertGreater(row['weight_rms'], 0.25)  # half the starting RMS (init_std 0.5)
    self.assertLessEqual(row['near_bounds'], 0.1)
    self.assertLess(row['stretch_theta'], 1.0)
    self.assertEqual(row['fertile_generations'], 300)
    self.assertEqual(row['noise_returned'], 10)
    self.assertTrue(row['exact'])
    self.assertTrue(row['contracting_quine'])
    self.assertLessEqual(max(abs(extra['eigenvalues'])), row['spectral_radius'])

  def test_the_map_ignores_the_scale_of_standardised_kernels(self):
    f = standardised_quines.StandardisedQuine(4, 'tanh', 1.0, 0)
    theta = torch.randn(f.num_weights, dtype=torch.float64)
    scaled = theta.clone()
    scaled[:32] *= 7.0  # W1 and W2
    torch.testing.assert_close(f(theta), f(scaled))
    self.assertFalse(torch.allclose(f(theta), f(theta * 2.0)))  # v's scale still counts

  def test_depth_sets_the_hidden_kernels(self):
    for depth in (1, 3):
      f = standardised_quines.StandardisedQuine(5, 'tanh', 1.0, 0, depth=depth)
      self.assertEqual(f.num_weights, depth * 25 + 5)
      theta = torch.randn(f.num_weights, dtype=torch.float64)
      *kernels, v = f.layers(theta)
      self.assertLen(kernels, depth)
      self.assertEqual(v.shape, (5, 1))
      scaled = theta.clone()
      scaled[:depth * 25] *= 3.0  # every hidden kernel: f only sees their directions
      torch.testing.assert_close(f(theta), f(scaled))
    # the self-consistent point rescales theta's own layers, each to what f prints there (width
    # 20, one hidden layer: a point that does not shrink to the zero network, as deeper ones do)
    f = standardised_quines.StandardisedQuine(20, 'tanh', 1.0, 0, depth=1)
    point = standardised_quines.self_consistent_point(f, torch.Generator().manual_seed(1), 30)
    for layer, printed in zip(f.layers(point), f.layers(f(point))):
      self.assertGreater(float(layer.pow(2).mean().sqrt()), 0.1)
      self.assertAlmostEqual(float(layer.pow(2).mean().sqrt()),
                             float(printed.pow(2).mean().sqrt()), delta=0.01)

  def test_bulk_estimate_matches_the_dense_frobenius_norm(self):
    row = standardised_quines.bulk_at_random_point(10, probes=400)
    f = standardised_quines.StandardisedQuine(10, 'tanh', 1.0, 0)
    theta = standardised_quines.self_consistent_point(f, torch.Generator().manual_seed(1))
    dense = torch.func.jacfwd(f)(theta)
    exact = float((dense.pow(2).sum() / f.num_weights).sqrt())
    self.assertAlmostEqual(row['frobenius_radius'], exact, delta=0.05 * exact)
    # each layer prints about as large as it is: not collapsed, not exploded
    self.assertBetween(row['weight_rms'], 0.01, 1.0)

  def test_matrix_free_spectrum_matches_the_dense_one(self):
    f = standardised_quines.StandardisedQuine(6, 'tanh', 1.0, 0)
    theta = standardised_quines.self_consistent_point(f, torch.Generator().manual_seed(3))
    dense = torch.func.jacfwd(f)(theta)
    values, bulk = standardised_quines.matrix_free_spectrum(f, theta, probes=400)
    want = np.sort(np.abs(np.linalg.eigvals(dense.numpy())))[::-1][:6]
    np.testing.assert_allclose(np.sort(np.abs(values))[::-1], want, rtol=1e-5)
    exact = float((dense.pow(2).sum() / f.num_weights).sqrt())
    self.assertAlmostEqual(bulk, exact, delta=0.05 * exact)

  def test_adam_finds_a_near_quine_at_width_10(self):
    f = standardised_quines.StandardisedQuine(10, 'tanh', 1.0, 0)
    start = torch.randn(f.num_weights, generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64) * 0.5
    self.assertGreater(standardised_quines.rho(f, start), 0.5)
    theta = standardised_quines.solve_adam(f, start, 2000)
    self.assertLess(standardised_quines.rho(f, theta), 0.01)
    self.assertGreater(float(theta.pow(2).mean().sqrt()), 0.1)  # not the zero quine

  def test_a_search_that_stalls_is_not_called_contracting(self):
    row, _ = standardised_quines.run(4, 'tanh', 1.0, 0, steps=2, generations=5, perturbations=1,
                                     noise_generations=5)
    self.assertGreater(row['rho'], 1e-3)
    self.assertFalse(row['exact'])
    self.assertFalse(row['contracting_quine'])

  def test_outlier_term_pulls_the_top_eigenvalue_in(self):
    f = standardised_quines.StandardisedQuine(6, 'tanh', 1.0, 0, depth=1)
    start = torch.randn(f.num_weights, generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64) * 0.5
    radius = {}
    for nu in (0.0, 1.0):
      theta = standardised_quines.solve_adam(f, start, 300, nu=nu)
      radius[nu] = float(torch.linalg.eigvals(torch.func.jacfwd(f)(theta)).abs().max())
    self.assertLess(radius[1.0], 0.8 * radius[0.0])

  def test_stability_terms_below_their_target_leave_rho_alone(self):
    f = standardised_quines.StandardisedQuine(5, 'tanh', 1.0, 0, depth=1)
    start = torch.randn(f.num_weights, generator=torch.Generator().manual_seed(1),
                        dtype=torch.float64) * 0.5
    plain = standardised_quines.solve_adam(f, start, 50)
    hinged = standardised_quines.solve_adam(f, start, 50, mu=10.0, nu=10.0, target=100.0)
    np.testing.assert_allclose(hinged.numpy(), plain.numpy(), rtol=1e-6, atol=1e-7)
    pushed = standardised_quines.solve_adam(f, start, 50, mu=10.0, nu=10.0, target=0.1)
    self.assertGreater(float((pushed - plain).norm()), 1e-3)

  def test_frontier_plot_is_a_png(self):
    path = os.path.join(self.create_tempdir().full_path, 'frontier.png')
    rows = [dict(depth=1, width=142, solver='adam', rho=2e-3, spectral_radius=0.9, mu=10.0,
                 nu=10.0, warm_start=True),
            dict(label='zoo LM', depth=2, width=100, solver='lm', rho=3e-4, spectral_radius=1.3,
                 annotation='g 0.7')]
    standardised_quines.plot_frontier(rows, path)
    with open(path, 'rb') as f:
      self.assertEqual(f.read(8), b'\x89PNG\r\n\x1a\n')

  def test_warm_start_from_a_zoo_export_is_the_same_network(self):
    from export import saved_model  # pylint: disable=g-import-not-at-top
    from export import testing  # pylint: disable=g-import-not-at-top
    from models.config import ModelConfig  # pylint: disable=g-import-not-at-top
    base = self.create_tempdir().full_path
    config = ModelConfig(width=5, num_hidden=1, activation='tanh', output_activation='tanh',
                         kernel_norm='standardise', gain=1.3, projection_std=0.2,
                         projection_seed=4)
    model = testing.make_workdir(os.path.join(base, 'run'), config, scale=2.0)
    saved_model.export_workdir(os.path.join(base, 'run'), os.path.join(base, 'x'), 'q')
    theta, setting = standardised_quines.warm_start(os.path.join(base, 'x', 'q'))
    self.assertEqual(setting, dict(width=5, depth=1, activation='tanh', gain=1.3, seed=4,
                                   projection_std=0.2))
    np.testing.assert_array_equal(theta.numpy(), model.flatten().numpy())
    f = standardised_quines.StandardisedQuine(5, 'tanh', 1.3, 4, 0.2, depth=1)
    want = model.predict_weights(np.arange(config.num_weights)).numpy()
    np.testing.assert_allclose(f(theta).numpy(), want, rtol=1e-5, atol=1e-6)
    # an export of the paper's architecture is refused, naming what differs
    testing.make_workdir(os.path.join(base, 'paper'), ModelConfig(width=4))
    saved_model.export_workdir(os.path.join(base, 'paper'), os.path.join(base, 'x'), 'paper')
    with self.assertRaisesRegex(ValueError, "kernel_norm 'standardise' quines; the export has "
                                            "'none'"):
      standardised_quines.warm_start(os.path.join(base, 'x', 'paper'))


if __name__ == '__main__':
  absltest.main()
