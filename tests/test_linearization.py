"""Tests of models/linearization.py: the replication pass as a function of theta, its derivatives."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from conftest import tiny_aux_config  # pylint: disable=g-bad-import-order
from conftest import tiny_model_config  # pylint: disable=g-bad-import-order
from models import build_quine
from models import linearization


def _model(width=5, **overrides):
  return build_quine(tiny_model_config(width=width, **overrides))


class ForwardTest(tf.test.TestCase, parameterized.TestCase):

  def test_an_auxiliary_quines_pass_pairs_each_coordinate_with_a_zero_image(self):
    # J over the whole theta: the class head is predicted but predicts nothing (zero columns).
    model = build_quine(tiny_aux_config())
    forward = linearization.make_forward(model)
    linearize, jvp, vjp = linearization.make_linearization(model)
    theta = tf.cast(model.flatten(), tf.float64)
    y, inputs, slopes = linearize(theta, tf.constant(0.0, tf.float64), False)
    self.assertAllClose(y, tf.cast(model.predict_weights(tf.range(model.num_weights)), tf.float64),
                        rtol=1e-5, atol=1e-7)
    rng = np.random.default_rng(0)
    v, w = (tf.constant(x) for x in rng.standard_normal((2, model.num_weights)))
    with tf.autodiff.ForwardAccumulator(theta, v) as accumulator:
      out = forward(theta)
    self.assertAllClose(jvp(theta, inputs, slopes, v), accumulator.jvp(out), rtol=1e-10)
    with tf.GradientTape() as tape:
      tape.watch(theta)
      out = forward(theta)
    self.assertAllClose(vjp(theta, inputs, slopes, w), tape.gradient(out, theta, w), rtol=1e-10)
    class_head = model.config.width * model.config.num_classes
    self.assertAllEqual(vjp(theta, inputs, slopes, w)[-class_head:], np.zeros(class_head))


  @parameterized.parameters('float32', 'float64')
  def test_forward_equals_model(self, dtype):
    model = _model()
    forward = linearization.make_forward(model, tf.as_dtype(dtype))
    got = forward(tf.cast(model.flatten(), dtype))
    want = model.predict_weights(tf.range(model.num_weights))
    self.assertAllClose(got, tf.cast(want, dtype), rtol=1e-5, atol=1e-7)

  @parameterized.parameters('tanh', 'sin', 'relu')
  def test_forward_equals_model_for_other_activations(self, activation):
    model = _model(activation=activation, output_activation='tanh', frequency=2.0)
    got = linearization.make_forward(model, tf.float32)(model.flatten())
    self.assertAllClose(got, model.predict_weights(tf.range(model.num_weights)), rtol=1e-6,
                        atol=1e-7)

  @parameterized.product(beta=[0.0, 0.01], kernel_norm=['none', 'standardise'])
  def test_linearized_products_match_autodiff(self, beta, kernel_norm):
    model = _model(kernel_norm=kernel_norm, num_hidden=3)
    forward = linearization.make_forward(model)
    linearize, jvp, vjp = linearization.make_linearization(model)
    rng = np.random.default_rng(0)
    theta, v = (tf.constant(x) for x in rng.standard_normal((2, model.num_weights)))
    w = tf.constant(rng.standard_normal(model.num_weights))
    beta_t = tf.constant(beta, tf.float64)
    call = (lambda th: forward(th, beta_t)) if beta else forward
    with tf.autodiff.ForwardAccumulator(theta, v) as acc:
      y_want = call(theta)
    with tf.GradientTape() as tape:
      tape.watch(theta)
      y2 = call(theta)
    y, inputs, slopes = linearize(theta, beta_t, beta > 0)
    self.assertAllClose(y, y_want, rtol=1e-12)
    self.assertAllClose(jvp(theta, inputs, slopes, v), acc.jvp(y_want), rtol=1e-10)
    self.assertAllClose(vjp(theta, inputs, slopes, w), tape.gradient(y2, theta, w), rtol=1e-10)
    # adjoint: <w, J v> = <J^T w, v>
    self.assertAllClose(tf.reduce_sum(w * jvp(theta, inputs, slopes, v)),
                        tf.reduce_sum(vjp(theta, inputs, slopes, w) * v), rtol=1e-10)


if __name__ == '__main__':
  absltest.main()
