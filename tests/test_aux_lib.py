"""Tests of the auxiliary quine's training library on fake MNIST-shaped data."""

import dataclasses
import json
import os

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from conftest import aux_train_config, coordinate_rows, fake_mnist, image_rows, numpy_heads
from conftest import numpy_kernels, tiny_aux_config
from trainers import aux_lib
from trainers import configs


def _one_block(coordinates, image_indices):
  """One minibatch as the [1, B] blocks of coordinates and training-image indices."""
  return (tf.constant([coordinates], tf.int32), tf.constant([image_indices], tf.int32))


class AuxTrainerTest(tf.test.TestCase):

  def test_paper_parameter_count_includes_both_heads(self):
    # 2 * 100 * 100 (hidden) + 100 (weight head) + 100 * 10 (class head) = 21,100
    config = configs.AUX_PRESETS['paper']
    self.assertEqual(config.model.num_weights, 21_100)
    trainer = aux_lib.AuxTrainer(aux_train_config(), fake_mnist(tiny_aux_config()))
    names = trainer.model.weight_names()
    self.assertEqual(names, ['hidden_1', 'hidden_2', 'weight_head', 'class_head'])
    self.assertEqual(int(trainer.model.flatten().shape[0]), trainer.num_weights)

  def test_loss_parts_match_a_numpy_oracle(self):
    config = aux_train_config(task_weight=0.3, replication_weight=0.7)
    data = fake_mnist(config.model)
    trainer = aux_lib.AuxTrainer(config, data)
    coordinates = np.array([0, 5, 17, 42], np.int32)
    images, labels = data.train_images[:4], data.train_labels[:4]
    # Give the frozen targets values unlike theta, so the oracle sees them.
    trainer.targets.assign(tf.random.stateless_normal([trainer.num_weights], [1, 2]))
    kernels = numpy_kernels(trainer.model)
    before = [k.copy() for k in kernels]
    parts = trainer.aux_block(*_one_block(coordinates, [0, 1, 2, 3])).numpy()

    inputs = np.concatenate([coordinate_rows(config.model, coordinates),
                             image_rows(config.model, images)], axis=1)
    predictions, logits = numpy_heads(config.model, before, inputs)
    l_sr = np.mean((predictions - trainer.targets.numpy()[coordinates]) ** 2)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    l_task = -np.mean(log_probs[np.arange(4), labels])
    np.testing.assert_allclose(parts, [0.7 * l_sr + 0.3 * l_task, l_sr, l_task], rtol=1e-5)

  def test_baseline_zeroes_the_replication_gradient(self):
    config = aux_train_config(replication_weight=0.0, task_weight=1.0)
    data = fake_mnist(config.model)
    trainer = aux_lib.AuxTrainer(config, data)
    coordinates = tf.constant([1, 2, 3], tf.int32)
    images, labels = data.train_images[:3], data.train_labels[:3]
    with tf.GradientTape() as tape:
      predictions, _ = trainer.model((coordinates, images))
      l_sr = tf.reduce_sum((predictions - tf.gather(trainer.targets, coordinates)) ** 2)
      loss = config.replication_weight * l_sr
    grads = tape.gradient(loss, trainer.model.quine_variables)
    self.assertTrue(all(g is None or float(tf.reduce_max(tf.abs(g))) == 0.0 for g in grads))
    # ... and a baseline step moves only what the task loss moves: the weight head gets no
    # gradient from the class loss at all.
    head = trainer.model.weight_head.kernel.numpy().copy()
    trainer.aux_block(*_one_block([1, 2, 3], [0, 1, 2]))
    self.assertAllEqual(trainer.model.weight_head.kernel.numpy(), head)

  def test_a_few_epochs_raise_accuracy_on_a_separable_set(self):
    model = tiny_aux_config(width=16, coordinate_units=4, image_size=8, num_classes=3)
    config = dataclasses.replace(configs.AUX_PRESETS['tiny'], model=model, num_epochs=6,
                                 batch_size=4, task_weight=1.0, learning_rate=0.02, plot_every=0)
    data = fake_mnist(model, num_train=300, num_test=150, separable=True)
    workdir = self.create_tempdir().full_path
    final = aux_lib.run(config, workdir, data)
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      records = [json.loads(line) for line in f]
    self.assertEqual(final['status'], 'finished')
    self.assertLess(records[0]['test_accuracy'], 0.6)
    self.assertGreater(final['test_accuracy'], 0.9)
    for key in ('test_accuracy', 'l_task', 'l_task_sum', 'l_aux', 'l_sr', 'rho', 'r2',
                'weight_rms', 'train_l_task'):
      self.assertIn(key, final)
    self.assertAllClose(final['l_aux'], final['l_sr'] + config.task_weight * final['l_task_sum'])
    self.assertTrue(os.path.exists(os.path.join(workdir, 'plots', 'curves.png')))

  def test_epoch_visits_every_coordinate_once_with_training_images(self):
    config = aux_train_config(batch_size=4, steps_per_loop=3)
    data = fake_mnist(config.model)
    trainer = aux_lib.AuxTrainer(config, data)
    coordinate_blocks = trainer.epoch_batches(1)
    image_blocks = trainer.blocks(trainer.image_draws(1))
    self.assertEqual([b.shape for b in coordinate_blocks], [b.shape for b in image_blocks])
    seen = np.concatenate([b.numpy().ravel() for b in coordinate_blocks])
    self.assertCountEqual(seen, range(trainer.num_weights))
    picks = np.concatenate([b.numpy().ravel() for b in image_blocks])
    self.assertBetween(picks.min(), 0, len(data.train_labels) - 1)
    self.assertBetween(picks.max(), 0, len(data.train_labels) - 1)
    self.assertGreater(len(set(picks)), len(data.train_labels) // 2)
    # Stateless: a resumed phase draws the same examples; another phase draws others.
    self.assertAllEqual(trainer.image_draws(1), picks)
    self.assertNotAllEqual(trainer.image_draws(2), picks)

  def test_compiled_epoch_equals_eager_steps(self):
    compiled = aux_lib.AuxTrainer(aux_train_config(batch_size=4), fake_mnist(tiny_aux_config()))
    eager = aux_lib.AuxTrainer(aux_train_config(batch_size=4), fake_mnist(tiny_aux_config()))
    self.assertTrue(compiled.jit_compile)
    compiled.run_epoch('optimize', 1)
    eager.targets.assign(eager.model.flatten())
    data = fake_mnist(tiny_aux_config())
    for coordinates, picks in zip(eager.epoch_batches(1), eager.blocks(eager.image_draws(1))):
      for row, pick in zip(coordinates.numpy(), picks.numpy()):
        eager._aux_step(row, data.train_images[pick], data.train_labels[pick])
    self.assertAllClose(compiled.model.flatten(), eager.model.flatten(), rtol=1e-5, atol=1e-6)

  def test_replicate_learns_to_copy_and_classify_without_shrinking(self):
    model = tiny_aux_config(width=16, coordinate_units=4, image_size=8, num_classes=3)
    config = dataclasses.replace(
        configs.AUX_PRESETS['replicate'], model=model, num_steps=2000, image_batch_size=32,
        coordinate_batch_size=64, steps_per_loop=500, plot_every=0)
    data = fake_mnist(model, num_train=300, num_test=150, separable=True)
    workdir = self.create_tempdir().full_path
    final = aux_lib.run(config, workdir, data)
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      records = [json.loads(line) for line in f]
    self.assertEqual([r['kind'] for r in records], ['init'] + ['replicate'] * 4)
    self.assertEqual(final['step'], 2000)
    self.assertGreater(records[0]['rho'], 0.9)
    self.assertLess(final['rho'], 0.2)  # copies: measured over every coordinate
    self.assertGreater(final['weight_rms'], records[0]['weight_rms'])  # ... without shrinking
    self.assertGreater(final['test_accuracy'], 0.9)
    self.assertIn('train_rho', final)
    # The stability report follows its descendants with their accuracy, quines or not.
    with open(os.path.join(workdir, 'stability.json')) as f:
      stability = json.load(f)
    traced = stability['trajectory']
    self.assertLen(traced['accuracies'], 301)
    self.assertAlmostEqual(traced['accuracies'][0], final['test_accuracy'], places=6)
    self.assertEqual(stability['lineage_accuracies'],
                     traced['accuracies'][:len(stability['lineage_accuracies'])])

  def test_descendant_loss_matches_a_numpy_oracle(self):
    # K = 2: the cross-entropy is the mean over the quine, its child and its grandchild, each
    # built from all N predictions of its parent; rho is exact.
    config = aux_train_config(method='replicate', optimizer='adam', task_weight=0.3,
                              replication_weight=0.7, descendants=2, image_batch_size=6)
    data = fake_mnist(config.model)
    trainer = aux_lib.AuxTrainer(config, data)
    model = config.model
    _, picks = trainer.replicate_draws(tf.constant(0, tf.int64))
    images, labels = data.train_images[picks.numpy()], data.train_labels[picks.numpy()]
    kernels = numpy_kernels(trainer.model)
    shapes = [k.shape for k in kernels]
    all_coordinates = np.concatenate(
        [coordinate_rows(model, np.arange(trainer.num_weights)),
         np.zeros((trainer.num_weights, model.width - model.coordinate_units))], axis=1)
    image_inputs = np.concatenate(
        [np.zeros((len(labels), model.coordinate_units)), image_rows(model, images)], axis=1)

    def split(theta):
      sizes = np.cumsum([np.prod(s) for s in shapes])[:-1]
      return [p.reshape(s) for p, s in zip(np.split(theta, sizes), shapes)]

    def cross_entropy(kernel_list):
      _, logits = numpy_heads(model, kernel_list, image_inputs)
      shifted = logits - logits.max(axis=1, keepdims=True)
      log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
      return -np.mean(log_probs[np.arange(len(labels)), labels])

    theta = np.concatenate([k.reshape(-1) for k in kernels])
    child = numpy_heads(model, kernels, all_coordinates)[0]
    grandchild = numpy_heads(model, split(child), all_coordinates)[0]
    rho = np.sum((child - theta) ** 2) / np.sum(theta ** 2)
    task = np.mean([cross_entropy(kernels), cross_entropy(split(child)),
                    cross_entropy(split(grandchild))])
    parts = trainer.replicate_block(tf.constant(1, tf.int32)).numpy()
    np.testing.assert_allclose(parts, [0.7 * rho + 0.3 * task, rho, task], rtol=1e-4)
    self.assertNotAllClose(numpy_kernels(trainer.model)[0], kernels[0])  # it took the step

  def test_train_only_keeps_the_other_weights_at_their_initial_values(self):
    config = aux_train_config(method='replicate', optimizer='adam', num_steps=20,
                              train_only='class_head', replication_weight=0.0, task_weight=1.0)
    trainer = aux_lib.AuxTrainer(config, fake_mnist(config.model))
    before = numpy_kernels(trainer.model)
    trainer.replicate_block(tf.constant(20, tf.int32))
    after = numpy_kernels(trainer.model)
    for name, old, new in zip(trainer.model.weight_names(), before, after):
      if name == 'class_head':
        self.assertNotAllClose(old, new)
      else:
        self.assertAllEqual(old, new, msg=name)

  def test_descendants_and_train_only_are_checked(self):
    with self.assertRaisesRegex(ValueError, r'--descendants applies to --method=replicate, not '
                                '--method=optimize'):
      aux_train_config(descendants=2).validate()
    with self.assertRaisesRegex(ValueError, r"--train_only='class_head,bias' must name weight "
                                'tensors of this quine, comma-separated: hidden_1, hidden_2, '
                                'weight_head, class_head'):
      aux_train_config(method='replicate', train_only='class_head,bias').validate()
    with self.assertRaisesRegex(ValueError, '--descendants=-1 must be >= 0'):
      aux_train_config(method='replicate', descendants=-1).validate()
    with self.assertRaisesRegex(ValueError, '--descendants=1000000 must be at most 100'):
      aux_train_config(method='replicate', descendants=10**6).validate()

  def test_replicate_samples_coordinates_without_replacement(self):
    config = aux_train_config(method='replicate', optimizer='adam', coordinate_batch_size=20,
                              image_batch_size=7)
    trainer = aux_lib.AuxTrainer(config, fake_mnist(config.model))
    coordinates, picks = trainer.replicate_draws(tf.constant(3, tf.int64))
    self.assertLen(set(coordinates.numpy()), 20)
    self.assertBetween(int(tf.reduce_max(coordinates)), 0, trainer.num_weights - 1)
    self.assertEqual(picks.shape, [7])
    again, _ = trainer.replicate_draws(tf.constant(3, tf.int64))
    self.assertAllEqual(again, coordinates)  # stateless: a resumed run draws the same
    other, _ = trainer.replicate_draws(tf.constant(4, tf.int64))
    self.assertNotAllEqual(other, coordinates)

  def test_replicate_is_refused_for_vanilla_quines(self):
    config = dataclasses.replace(configs.PRESETS['tiny'], method='replicate')
    with self.assertRaisesRegex(ValueError, 'replicate trains auxiliary quines'):
      config.validate()

  def test_images_of_the_wrong_size_are_refused(self):
    config = aux_train_config()
    data = fake_mnist(dataclasses.replace(config.model, image_size=7))
    with self.assertRaisesRegex(ValueError, 'images have 7 pixels but the quine expects '
                                'image_size=5'):
      aux_lib.run(config, self.create_tempdir().full_path, data)

  def test_hill_climbing_is_refused_for_auxiliary_quines(self):
    with self.assertRaisesRegex(ValueError, 'hill_climb is not supported'):
      aux_train_config(method='hill_climb').validate()


if __name__ == '__main__':
  absltest.main()
