"""Tests of models/activations.py: every registered form agrees, kinks are smoothed, registration."""

import os

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import torch

from models import activations

_PARAMS = {'frequency': 3.0}


class RegistryTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(*activations.names())
  def test_forms_agree_in_float32(self, name):
    act = activations.get(name)
    x = np.linspace(-4, 4, 801).astype(np.float32)
    want = act.tensorflow(tf.constant(x), _PARAMS).numpy()
    self.assertEqual(want.dtype, np.float32)
    self.assertAllClose(act.numpy(x, _PARAMS), want, rtol=1e-6, atol=1e-6)
    self.assertAllClose(act.torch(torch.from_numpy(x), _PARAMS).numpy(), want, rtol=1e-6,
                        atol=1e-6)

  @parameterized.parameters(*[n for n in activations.names() if activations.get(n).kinked])
  def test_smooth_form_tends_to_the_activation_without_its_kink(self, name):
    act = activations.get(name)
    x = tf.constant(np.linspace(-3, 3, 601), tf.float64)
    self.assertAllClose(act.smooth(x, 1e-4, _PARAMS), act.tensorflow(x, _PARAMS), atol=1e-4)
    # The real slope jumps at 0 (SELU: 1.758 to 1.051); the smoothed one is continuous across it.
    x = tf.constant([-1e-6, 1e-6], tf.float64)
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = act.smooth(x, tf.constant(0.1, tf.float64), _PARAMS)
    slope = tape.gradient(y, x).numpy()
    self.assertAllClose(slope[0], slope[1], atol=1e-4)

  def test_sin_reads_its_frequency(self):
    sin = activations.get('sin')
    self.assertEqual(sin.params, ('frequency',))
    self.assertAllClose(sin.numpy(np.float32([0.5]), {'frequency': 2.0}), [np.sin(1.0)])
    self.assertIn('frequency = 2.0', sin.describe({'frequency': 2.0}))

  def test_unknown_name_is_a_clear_error(self):
    with self.assertRaisesRegex(ValueError, "unknown activation 'swish'.*registered"):
      activations.get('swish')

  def test_names_are_registered_once(self):
    with self.assertRaisesRegex(ValueError, 'already registered'):
      activations.register(activations.get('tanh'))


if __name__ == '__main__':
  absltest.main()


class RegisteredInTheTestTest(tf.test.TestCase):
  """One `register` call is all a new activation needs: train, export, replicate in four frameworks.

  Swish (x * sigmoid(x)) is registered here only; nothing outside this test knows it.
  """

  def setUp(self):
    super().setUp()
    activations.register(activations.Activation(
        name='toy_swish',
        formula='x * sigmoid(x)',
        tensorflow=lambda x, p: x * tf.math.sigmoid(x),
        numpy=lambda x, p: x / (np.float32(1) + np.exp(-x)),
        torch=lambda x, p: x * torch.sigmoid(x),
        onnx_ops=('Sigmoid',)))
    self.addCleanup(activations.unregister, 'toy_swish')

  def test_train_export_replicate(self):
    import dataclasses  # pylint: disable=g-import-not-at-top
    from export import dump as dump_lib  # pylint: disable=g-import-not-at-top
    from experiments import replication_report as report  # pylint: disable=g-import-not-at-top
    from export import exporter  # pylint: disable=g-import-not-at-top
    from trainers import configs  # pylint: disable=g-import-not-at-top
    from trainers import train_lib  # pylint: disable=g-import-not-at-top
    root = self.create_tempdir().full_path
    tiny = configs.PRESETS['tiny']
    config = dataclasses.replace(
        tiny, method='fixed_point', solver_steps=40,
        model=dataclasses.replace(tiny.model, activation='toy_swish'))
    record = train_lib.run(config, os.path.join(root, 'wd'))
    self.assertEqual(record['status'], 'finished')
    self.assertLess(record['rho'], 1e-3)  # the solver ran on the new activation's forward pass
    path = exporter.export_workdir(os.path.join(root, 'wd'), os.path.join(root, 'e'), 'toy')
    manifest = dump_lib.read_dump(path).manifest
    self.assertEqual(manifest['architecture']['activations'],
                     {'linear': 'x', 'toy_swish': 'x * sigmoid(x)'})
    self.assertIn('Sigmoid', manifest['onnx']['activation_ops'])
    result = report.run(path, generations=2, output_dir=os.path.join(root, 'r'),
                        log=lambda *a: None)
    self.assertTrue(result['agrees'])
    self.assertEqual(sorted(r['framework'] for r in result['replication']),
                     ['numpy', 'onnxruntime', 'tensorflow[saved_model]', 'torch'])
    for row in result['replication']:
      self.assertAllClose(row['rho'], record['rho'], rtol=1e-3)
