"""Tests of the replication loss and the honesty metrics against brute force and the paper."""

import math

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from conftest import tiny_model_config
from models import build_quine
from trainers import metrics


class ReplicationLossTest(tf.test.TestCase):

  def test_is_the_mean_squared_error(self):
    p = np.array([0.5, -1.0, 2.0], np.float32)
    t = np.array([0.0, 1.0, 2.5], np.float32)
    # (0.25 + 4 + 0.25) / 3 = 1.5
    self.assertAllClose(metrics.replication_loss(tf.constant(p), tf.constant(t)), 1.5)


class ReplicationMetricsTest(tf.test.TestCase, parameterized.TestCase):

  def test_l_sr_equals_a_loop_over_coordinates(self):
    model = build_quine(tiny_model_config())
    model.assign_flat(np.random.default_rng(0).normal(0, 0.3, 36).astype(np.float32))
    theta = model.flatten().numpy()
    l_sr = 0.0
    for c in range(model.num_weights):  # one forward pass per coordinate, as the paper defines
      prediction = float(model(tf.constant([c]))[0])
      l_sr += (prediction - float(theta[c]))**2
    got = metrics.replication_metrics(model.flatten(), model(tf.range(36)))
    self.assertAllClose(got['l_sr'], l_sr, rtol=1e-5)
    self.assertGreater(l_sr, 0.0)

  def test_all_metrics_match_numpy(self):
    rng = np.random.default_rng(1)
    theta = rng.normal(0.3, 0.2, 50).astype(np.float32)
    predictions = (theta + rng.normal(0, 0.05, 50)).astype(np.float32)
    t, p = theta.astype(np.float64), predictions.astype(np.float64)
    l_sr = np.sum((p - t)**2)
    want = {
        'l_sr': l_sr,
        'rho': l_sr / np.sum(t**2),
        'r2': 1 - l_sr / np.sum((t - t.mean())**2),
        'weight_rms': np.sqrt(np.mean(t**2)),
        'prediction_rms': np.sqrt(np.mean(p**2)),
        'margin': np.sqrt(l_sr / 50),
        'quotient': np.log(50 / l_sr),
    }
    got = metrics.replication_metrics(tf.constant(theta), tf.constant(predictions))
    self.assertCountEqual(got, want)
    for key, value in want.items():
      self.assertEqual(got[key].dtype, tf.float64, key)
      self.assertAllClose(got[key], value, rtol=1e-12, msg=key)

  def test_zero_output_network_has_rho_one(self):
    model = build_quine(tiny_model_config())
    model.weight_head.kernel.assign(tf.zeros_like(model.weight_head.kernel))
    theta = model.flatten()
    predictions = model(tf.range(36))
    np.testing.assert_array_equal(predictions.numpy(), np.zeros(36, np.float32))
    got = metrics.replication_metrics(theta, predictions)
    sum_sq = np.sum(theta.numpy().astype(np.float64)**2)
    self.assertAllClose(got['l_sr'], sum_sq, rtol=1e-12)
    self.assertAllClose(got['rho'], 1.0, rtol=1e-12)
    self.assertAllClose(got['prediction_rms'], 0.0)

  def test_perfect_copy_has_rho_zero_and_r2_one(self):
    theta = tf.constant([0.1, -0.2, 0.3])
    got = metrics.replication_metrics(theta, theta)
    self.assertAllClose(got['rho'], 0.0)
    self.assertAllClose(got['r2'], 1.0)

  def test_all_zero_weights_copied_exactly_are_a_perfect_copy(self):
    # The trivial fixed point a regenerating quine can collapse to: no 0/0 anywhere.
    got = metrics.replication_metrics(tf.zeros([4]), tf.zeros([4]))
    self.assertAllClose(got['l_sr'], 0.0)
    self.assertAllClose(got['rho'], 1.0)  # defined as "no better than printing zeros"
    self.assertAllClose(got['r2'], 1.0)

  def test_r2_is_not_perfect_when_the_copy_is_not(self):
    # theta has no variance (all zero, or all equal): R^2's denominator is 0. A non-zero error
    # must not be reported as R^2 = 1 (sklearn's r2_score reports 0.0 there).
    for theta in ([0.0, 0.0, 0.0, 0.0], [0.2, 0.2, 0.2, 0.2]):
      got = metrics.replication_metrics(tf.constant(theta), tf.constant([0.0, 0.1, 0.2, 0.3]))
      self.assertGreater(float(got['l_sr']), 0.0)
      self.assertLess(float(got['r2']), 1.0, msg=f'theta={theta}')

  @parameterized.named_parameters(
      # The paper's printed numbers for the vanilla quine, N = 20,100.
      ('l_sr_32_10', 32.10, 0.040, 3, 6.44, 2),
      ('l_sr_0_86', 0.86, 0.0065, 4, 10.06, 2),
  )
  def test_margin_and_quotient_reproduce_the_paper(self, l_sr, margin, margin_digits, quotient,
                                                   quotient_digits):
    n = 20100
    theta = np.zeros(n, np.float64)
    predictions = np.full(n, math.sqrt(l_sr / n), np.float64)
    got = metrics.replication_metrics(tf.constant(theta), tf.constant(predictions))
    self.assertAllClose(got['l_sr'], l_sr, rtol=1e-9)
    self.assertEqual(round(float(got['margin']), margin_digits), margin)
    self.assertEqual(round(float(got['quotient']), quotient_digits), quotient)
    # The formulas themselves: margin = sqrt(L_SR / N), quotient = ln(N / L_SR).
    self.assertAllClose(got['margin'], math.sqrt(l_sr / n))
    self.assertAllClose(got['quotient'], math.log(n / l_sr))

  def test_metrics_are_accumulated_in_float64(self):
    # 1e6 tiny squared errors: a float32 sum would lose the 1e-4 relative precision rho needs.
    n = 1_000_000
    theta = tf.ones([n], tf.float32)
    predictions = tf.fill([n], tf.constant(1.0 + 2.0**-12, tf.float32))
    got = metrics.replication_metrics(theta, predictions)
    self.assertAllClose(got['l_sr'], n * 2.0**-24, rtol=1e-9)
    self.assertAllClose(got['rho'], 2.0**-24, rtol=1e-9)


if __name__ == '__main__':
  tf.test.main()
