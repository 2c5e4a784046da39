"""Replication losses and the honesty metrics, as pure functions of theta and predictions.

L_SR alone cannot tell copying from shrinking: a network that outputs 0 everywhere scores
L_SR = sum(theta^2). Every report therefore shows, next to L_SR, rho = L_SR / sum(theta^2)
(1 = no better than printing zeros, 0 = a perfect copy), R^2 and the weight RMS.
"""

import tensorflow as tf

# Printed first, in this order, wherever metrics are shown.
MAIN_METRICS = ('l_sr', 'rho', 'r2', 'weight_rms')


def replication_loss(predictions, targets):
  """Mean squared error of a minibatch of weight predictions (the training loss)."""
  return tf.reduce_mean(tf.math.squared_difference(predictions, targets))


def replication_metrics(theta, predictions):
  """Metrics of a quine's full self-replication pass.

  Args:
    theta: float tensor [N], the weights in canonical order.
    predictions: float tensor [N], the network's prediction of each weight.

  Returns:
    A dict of scalar float64 tensors: l_sr (sum of squared errors), rho (l_sr / sum(theta^2)),
    r2 (1 - l_sr / sum((theta - mean)^2)), weight_rms, prediction_rms, and the paper's derived
    numbers margin = sqrt(l_sr / N) and quotient = ln(N / l_sr).
  """
  # Sums over 10^4..10^6 terms: accumulate in float64 so that rho ~ 1e-4 is still meaningful.
  theta = tf.cast(theta, tf.float64)
  predictions = tf.cast(predictions, tf.float64)
  n = tf.cast(tf.size(theta), tf.float64)
  l_sr = tf.reduce_sum(tf.math.squared_difference(predictions, theta))
  sum_sq = tf.reduce_sum(tf.square(theta))
  centred = tf.reduce_sum(tf.square(theta - tf.reduce_mean(theta)))
  return {
      'l_sr': l_sr,
      'rho': tf.math.divide_no_nan(l_sr, sum_sq) + tf.cast(tf.equal(sum_sq, 0.0), tf.float64),
      # Constant weights (centred == 0): R^2 is 1 only for an exact copy, else 0 (as sklearn's
      # r2_score with force_finite), never a perfect score for an imperfect copy.
      'r2': tf.where(centred > 0, 1.0 - tf.math.divide_no_nan(l_sr, centred),
                     tf.cast(tf.equal(l_sr, 0.0), tf.float64)),
      'weight_rms': tf.sqrt(sum_sq / n),
      'prediction_rms': tf.sqrt(tf.reduce_sum(tf.square(predictions)) / n),
      'margin': tf.sqrt(l_sr / n),
      'quotient': tf.math.log(n / l_sr),
  }
