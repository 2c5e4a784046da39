"""Tests of trainers/aux_quine.py: rho + lambda * cross-entropy makes a replicating classifier."""

import dataclasses

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from conftest import fake_mnist
from models import quine as quine_lib
from models.config import ModelConfig
from trainers import aux_quine
from trainers import configs


def _tiny_model():
  """The 'tiny' auxiliary preset's quine: N = 2 * 8 * 8 + 8 + 8 * 3 = 160 weights."""
  return quine_lib.build_quine(configs.AUX_PRESETS['tiny'].model)


def _data(model):
  return fake_mnist(model.config, num_train=120, num_test=60, separable=True)


class AuxQuineTest(tf.test.TestCase):

  def test_num_weights_of_tiny_preset(self):
    self.assertEqual(_tiny_model().num_weights, 2 * 8 * 8 + 8 + 8 * 3)

  def test_trains_a_replicating_classifier(self):
    model = _tiny_model()
    data = _data(model)
    config = aux_quine.AuxQuineConfig(task_weight=0.1, num_steps=1500, learning_rate=1e-2,
                                      image_batch_size=16, coordinate_batch_size=64,
                                      steps_per_loop=500)
    history = aux_quine.train(model, data, config)
    start, end = history[0], history[-1]
    self.assertGreater(start['rho'], 0.5)  # an untrained quine copies nothing
    self.assertEqual(end['step'], 1500)
    # A real copy, not a shrunk one: rho well below 1 with the weights at least as large.
    self.assertLess(end['rho'], 0.1)
    self.assertGreater(end['r2'], 0.8)
    self.assertGreater(end['weight_rms'], start['weight_rms'])
    self.assertGreater(end['test_accuracy'], 0.8)  # chance is 1/3
    # evaluate() measures the Keras model itself.
    theta = model.flatten().numpy().astype(np.float64)
    predictions = model.predict_weights(tf.range(model.num_weights)).numpy()
    self.assertAllClose(np.sum((predictions - theta) ** 2) / np.sum(theta ** 2), end['rho'],
                        rtol=1e-4)

  def test_full_coordinate_batch_estimates_rho_exactly(self):
    model = _tiny_model()
    trainer = aux_quine.ReplicatingClassifierTrainer(
        model, _data(model), aux_quine.AuxQuineConfig(coordinate_batch_size=0, task_weight=0.0))
    rho = trainer.evaluate()['rho']
    _, train_rho, _ = trainer.train_block(tf.constant(1)).numpy()
    self.assertAllClose(train_rho, rho, rtol=1e-4)  # the rho of the weights before the step

  def test_coordinate_minibatch_estimate_is_unbiased(self):
    model = _tiny_model()
    data = _data(model)
    rho = aux_quine.ReplicatingClassifierTrainer(model, data).evaluate()['rho']
    # A learning rate so small that the weights stay put: each step's estimate is a fresh sample
    # of 16 of the 160 coordinates at the same theta.
    trainer = aux_quine.ReplicatingClassifierTrainer(
        model, data, aux_quine.AuxQuineConfig(coordinate_batch_size=16, learning_rate=1e-12))
    one = trainer.train_block(tf.constant(1)).numpy()[1]
    mean = trainer.train_block(tf.constant(400)).numpy()[1]
    self.assertAllClose(mean, rho, rtol=0.05)
    self.assertNotAllClose(one, rho, rtol=1e-3)  # it is a sample, not the full pass

  def test_block_does_not_retrace(self):
    model = _tiny_model()
    trainer = aux_quine.ReplicatingClassifierTrainer(model, _data(model))
    trainer.train_block(tf.constant(2))
    trainer.train_block(tf.constant(3))
    self.assertEqual(trainer.train_block.experimental_get_tracing_count(), 1)
    self.assertEqual(int(trainer.step.numpy()), 5)

  def test_restored_run_equals_uninterrupted_run(self):
    config = aux_quine.AuxQuineConfig(num_steps=20, coordinate_batch_size=32, image_batch_size=8)
    model = _tiny_model()
    data = _data(model)
    trainer = aux_quine.ReplicatingClassifierTrainer(model, data, config)
    trainer.train_block(tf.constant(20))
    uninterrupted = model.flatten().numpy()

    first = _tiny_model()
    trainer = aux_quine.ReplicatingClassifierTrainer(first, data, config)
    trainer.train_block(tf.constant(10))
    path = tf.train.Checkpoint(trainer=trainer).write(self.create_tempdir().full_path + '/ckpt')
    resumed = _tiny_model()
    trainer = aux_quine.ReplicatingClassifierTrainer(resumed, data, config)
    tf.train.Checkpoint(trainer=trainer).read(path).assert_consumed()
    self.assertEqual(int(trainer.step.numpy()), 10)
    trainer.train_block(tf.constant(10))
    self.assertAllClose(resumed.flatten().numpy(), uninterrupted, rtol=1e-5, atol=1e-7)
    self.assertNotAllClose(resumed.flatten().numpy(), _tiny_model().flatten().numpy())

  def test_rejects_vanilla_quine_and_bad_config(self):
    vanilla = quine_lib.build_quine(ModelConfig(width=4))
    data = fake_mnist(configs.AUX_PRESETS['tiny'].model)
    with self.assertRaisesRegex(ValueError, 'auxiliary'):
      aux_quine.ReplicatingClassifierTrainer(vanilla, data)
    with self.assertRaisesRegex(ValueError, 'task_weight'):
      aux_quine.AuxQuineConfig(task_weight=-1.0).validate()
    model = quine_lib.build_quine(
        dataclasses.replace(configs.AUX_PRESETS['tiny'].model, image_size=9))
    with self.assertRaisesRegex(ValueError, 'pixels'):
      aux_quine.ReplicatingClassifierTrainer(model, data)


if __name__ == '__main__':
  absltest.main()
