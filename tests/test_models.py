"""Tests of the quine models and their configuration: sizes, canonical order, forward passes."""

import dataclasses
import os

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from conftest import coordinate_rows
from conftest import image_rows
from conftest import numpy_heads
from conftest import numpy_kernels
from conftest import numpy_predict_weights
from conftest import tiny_aux_config
from conftest import tiny_model_config
from models import AuxiliaryQuine
from models import build_quine
from models import ModelConfig
from models import VanillaQuine


class ModelConfigTest(tf.test.TestCase, parameterized.TestCase):

  def test_paper_vanilla_has_20100_weights(self):
    # Two 100 x 100 hidden matrices and a 100 x 1 weight head: 2 * 100 * 100 + 100.
    self.assertEqual(ModelConfig().num_weights, 20100)

  def test_paper_auxiliary_has_21100_weights(self):
    # The vanilla 20,100 plus the 100 x 10 class head: 2 * 100 * 100 + 100 + 100 * 10.
    self.assertEqual(ModelConfig(kind='auxiliary').num_weights, 21100)

  def test_paper_preset_has_20100_weights(self):
    from trainers import configs  # pylint: disable=g-import-not-at-top
    self.assertEqual(configs.PRESETS['paper'].model.num_weights, 20100)
    # 2 * 4 * 4 + 4.
    self.assertEqual(configs.PRESETS['tiny'].model.num_weights, 36)

  @parameterized.named_parameters(
      ('vanilla', tiny_model_config()),
      ('three_hidden', tiny_model_config(num_hidden=3, width=3)),
      ('auxiliary', tiny_aux_config()),
  )
  def test_num_weights_counts_the_trainable_weights(self, config):
    model = build_quine(config)
    self.assertEqual(sum(int(np.prod(v.shape)) for v in model.trainable_variables),
                     config.num_weights)
    self.assertEqual(model.num_weights, config.num_weights)

  @parameterized.named_parameters(
      ('kind', dict(kind='recurrent'), 'kind'),
      ('width', dict(width=0), 'width'),
      ('num_hidden', dict(num_hidden=0), 'num_hidden'),
      ('activation', dict(activation='gelu'), 'activation'),
      ('output_activation', dict(output_activation='softmax'), 'output_activation'),
      ('init', dict(init='zeros'), 'init'),
      ('projection_seed', dict(projection_seed=-1), 'projection_seed'),
      ('projection_std', dict(projection_std=0.0), 'projection_std'),
      ('coordinate_units', dict(kind='auxiliary', width=4, coordinate_units=4),
       'coordinate_units'),
      ('temperature', dict(kind='auxiliary', width=4, coordinate_units=2, temperature=0.0),
       'temperature'),
      ('frequency', dict(activation='sin', frequency=float('nan')), 'frequency'),
      ('kernel_norm', dict(kernel_norm='batch'), 'kernel_norm'),
      ('gain', dict(kernel_norm='standardise', gain=0.0), 'gain'),
  )
  def test_validate_names_the_bad_field(self, overrides, field):
    with self.assertRaisesRegex(ValueError, field):
      dataclasses.replace(tiny_model_config(), **overrides).validate()

  @parameterized.named_parameters(
      ('vanilla', tiny_model_config(init='he_normal', projection_seed=3)),
      ('auxiliary', tiny_aux_config()),
      ('sin', tiny_model_config(activation='sin', frequency=30.0)),
      ('standardised', tiny_model_config(kernel_norm='standardise', gain=1.5)),
  )
  def test_dict_round_trip(self, config):
    self.assertEqual(ModelConfig.from_dict(config.to_dict()), config)

  def test_kernel_norm_is_recorded_only_when_used(self):
    # Configs (and manifests) of the paper's quines stay as they were.
    self.assertNotIn('kernel_norm', tiny_model_config().to_dict())
    self.assertNotIn('gain', tiny_model_config().to_dict())
    d = tiny_model_config(kernel_norm='standardise', gain=2.0).to_dict()
    self.assertEqual((d['kernel_norm'], d['gain']), ('standardise', 2.0))

  def test_frequency_is_recorded_only_where_an_activation_reads_it(self):
    # Configs of quines without sin stay as they were (their workdirs resume unchanged).
    self.assertNotIn('frequency', tiny_model_config().to_dict())
    self.assertEqual(tiny_model_config(output_activation='sin', frequency=2.0).to_dict()
                     ['frequency'], 2.0)

  def test_from_dict_rejects_unknown_fields(self):
    d = dict(tiny_model_config().to_dict(), depth=3)
    with self.assertRaisesRegex(ValueError, 'depth'):
      ModelConfig.from_dict(d)


class QuineTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ('vanilla', tiny_model_config(), VanillaQuine,
       ['hidden_1', 'hidden_2', 'weight_head'], [(4, 4), (4, 4), (4, 1)]),
      ('auxiliary', tiny_aux_config(), AuxiliaryQuine,
       ['hidden_1', 'hidden_2', 'weight_head', 'class_head'], [(6, 6), (6, 6), (6, 1), (6, 3)]),
  )
  def test_canonical_order_names_and_shapes(self, config, cls, names, shapes):
    model = build_quine(config)
    self.assertIsInstance(model, cls)
    self.assertEqual(model.weight_names(), names)
    self.assertEqual([tuple(v.shape) for v in model.quine_variables], shapes)

  @parameterized.named_parameters(
      ('vanilla', tiny_model_config()),
      ('auxiliary', tiny_aux_config()),
  )
  def test_flatten_is_row_major_kernels_in_canonical_order(self, config):
    model = build_quine(config)
    want = np.concatenate([v.numpy().reshape(-1) for v in model.quine_variables])
    np.testing.assert_array_equal(model.flatten().numpy(), want)

  @parameterized.named_parameters(
      ('vanilla', tiny_model_config()),
      ('auxiliary', tiny_aux_config()),
  )
  def test_assign_flat_then_flatten_round_trip(self, config):
    model = build_quine(config)
    theta = np.random.default_rng(0).normal(size=config.num_weights).astype(np.float32)
    model.assign_flat(theta)
    np.testing.assert_array_equal(model.flatten().numpy(), theta)
    parts = model.unflatten(tf.constant(theta))
    self.assertEqual([tuple(p.shape) for p in parts],
                     [tuple(v.shape) for v in model.quine_variables])
    offset = 0
    for part, variable in zip(parts, model.quine_variables):
      size = int(np.prod(variable.shape))
      np.testing.assert_array_equal(part.numpy(), theta[offset:offset + size].reshape(part.shape))
      np.testing.assert_array_equal(variable.numpy(), part.numpy())
      offset += size
    self.assertEqual(offset, config.num_weights)

  @parameterized.named_parameters(
      ('vanilla', tiny_model_config()),
      ('auxiliary', tiny_aux_config()),
  )
  def test_checkpoint_of_the_model_alone_holds_every_weight_under_its_layer_name(self, config):
    # Layer names are API: they fix the checkpoint keys export reads. A checkpoint of the model
    # alone (no optimizer) must hold theta whole.
    model = build_quine(config)
    theta = np.arange(config.num_weights, dtype=np.float32)
    model.assign_flat(theta)
    path = tf.train.Checkpoint(model=model).save(
        os.path.join(self.create_tempdir().full_path, 'ckpt'))
    keys = [name for name, _ in tf.train.list_variables(path)]
    for name in model.weight_names():
      self.assertTrue(any(k.startswith(f'model/{name}/') for k in keys), f'{name} not in {keys}')
    fresh = build_quine(config)
    tf.train.Checkpoint(model=fresh).restore(path).assert_consumed()
    np.testing.assert_array_equal(fresh.flatten().numpy(), theta)

  def test_unflatten_then_flatten_is_identity(self):
    model = build_quine(tiny_model_config())
    theta = model.flatten()
    np.testing.assert_array_equal(tf.concat(
        [tf.reshape(p, [-1]) for p in model.unflatten(theta)], 0).numpy(), theta.numpy())

  def test_same_config_gives_same_weights_and_seed_changes_them(self):
    a = build_quine(tiny_model_config()).flatten().numpy()
    b = build_quine(tiny_model_config()).flatten().numpy()
    c = build_quine(tiny_model_config(init_seed=1)).flatten().numpy()
    np.testing.assert_array_equal(a, b)
    self.assertFalse(np.allclose(a, c))

  def test_paper_uniform_init_is_bounded_and_layers_differ(self):
    config = tiny_model_config(width=8)
    kernels = [v.numpy() for v in build_quine(config).quine_variables]
    for k in kernels:
      self.assertLessEqual(np.abs(k).max(), 1.0 / np.sqrt(8))  # uniform(+-1/sqrt(fan_in))
    self.assertFalse(np.allclose(kernels[0], kernels[1]))

  @parameterized.named_parameters(
      ('selu', tiny_model_config()),
      ('tanh_three_hidden', tiny_model_config(activation='tanh', num_hidden=3, width=3)),
      ('relu_tanh_out', tiny_model_config(activation='relu', output_activation='tanh')),
      ('he_normal_seeded', tiny_model_config(init='he_normal', init_seed=2, projection_seed=9)),
      ('sin_tanh_out', tiny_model_config(activation='sin', frequency=3.0,
                                         output_activation='tanh')),
      ('standardised', tiny_model_config(activation='tanh', output_activation='tanh',
                                         kernel_norm='standardise', gain=1.5, num_hidden=3)),
  )
  def test_vanilla_forward_matches_numpy(self, config):
    model = build_quine(config)
    coordinates = np.array([0, 1, 5, 17, config.num_weights - 1])
    got = model(tf.constant(coordinates, tf.int32)).numpy()
    want = numpy_predict_weights(config, numpy_kernels(model), coordinates)
    self.assertEqual(got.shape, (len(coordinates),))
    self.assertAllClose(got, want, rtol=1e-5, atol=1e-7)
    self.assertAllClose(model.predict_weights(tf.constant(coordinates)).numpy(), want,
                        rtol=1e-5, atol=1e-7)

  def test_vanilla_forward_matches_numpy_for_random_weights(self):
    # The initial outputs are small; random O(1) weights make a wrong layer order visible.
    config = tiny_model_config()
    model = build_quine(config)
    model.assign_flat(np.random.default_rng(1).normal(size=36).astype(np.float32))
    coordinates = np.arange(36)
    want = numpy_predict_weights(config, numpy_kernels(model), coordinates)
    self.assertAllClose(model(tf.range(36)).numpy(), want, rtol=1e-5, atol=1e-6)

  def test_standardised_quine_ignores_the_scale_of_its_hidden_kernels(self):
    config = tiny_model_config(activation='tanh', output_activation='tanh',
                               kernel_norm='standardise')
    model = build_quine(config)
    theta = np.random.default_rng(2).normal(size=36).astype(np.float32)
    model.assign_flat(theta)
    want = model(tf.range(36)).numpy()
    scaled = theta.copy()
    scaled[:16] *= 8.0  # hidden_1
    scaled[16:32] *= 0.25  # hidden_2
    model.assign_flat(scaled)
    self.assertAllClose(model(tf.range(36)).numpy(), want, rtol=1e-5, atol=1e-7)
    scaled[32:] *= 2.0  # the weight head is used as it is
    model.assign_flat(scaled)
    self.assertNotAllClose(model(tf.range(36)).numpy(), want)

  def test_forward_eager_equals_graph(self):
    model = build_quine(tiny_model_config())
    coordinates = tf.range(36)
    self.assertAllClose(tf.function(model.predict_weights)(coordinates),
                        model.predict_weights(coordinates), rtol=1e-6, atol=1e-8)

  def test_auxiliary_predict_weights_uses_a_zero_image(self):
    config = tiny_aux_config()
    model = build_quine(config)
    model.assign_flat(np.random.default_rng(2).normal(size=96).astype(np.float32))
    coordinates = np.array([0, 3, 50, 95])
    want = numpy_predict_weights(config, numpy_kernels(model), coordinates)
    self.assertAllClose(model.predict_weights(tf.constant(coordinates)).numpy(), want,
                        rtol=1e-5, atol=1e-6)

  def test_auxiliary_classify_uses_a_zero_coordinate_and_one_temperature(self):
    config = tiny_aux_config()
    model = build_quine(config)
    model.assign_flat(np.random.default_rng(3).normal(size=96).astype(np.float32))
    images = np.random.default_rng(4).uniform(size=(4, 5)).astype(np.float32)
    inputs = np.concatenate([np.zeros([4, 3]), image_rows(config, images)], axis=1)
    _, want = numpy_heads(config, numpy_kernels(model), inputs)
    got = model.classify(tf.constant(images)).numpy()
    self.assertEqual(got.shape, (4, 3))
    self.assertAllClose(got, want, rtol=1e-4, atol=1e-4)
    # Images of any shape are flattened first.
    self.assertAllClose(model.classify(tf.constant(images.reshape(4, 5, 1))).numpy(), want,
                        rtol=1e-4, atol=1e-4)

  def test_auxiliary_call_concatenates_coordinate_and_image_rows(self):
    config = tiny_aux_config()
    model = build_quine(config)
    model.assign_flat(np.random.default_rng(5).normal(size=96).astype(np.float32))
    coordinates = np.array([1, 2, 90])
    images = np.random.default_rng(6).uniform(size=(3, 5)).astype(np.float32)
    inputs = np.concatenate(
        [coordinate_rows(config, coordinates), image_rows(config, images)], axis=1)
    want_weights, want_logits = numpy_heads(config, numpy_kernels(model), inputs)
    weights, logits = model((tf.constant(coordinates), tf.constant(images)))
    self.assertAllClose(weights.numpy(), want_weights, rtol=1e-5, atol=1e-5)
    self.assertAllClose(logits.numpy(), want_logits, rtol=1e-4, atol=1e-4)

  @parameterized.named_parameters(
      ('vanilla_sin', tiny_model_config(activation='sin', frequency=2.0)),
      ('auxiliary', tiny_aux_config()),
      ('standardised', tiny_model_config(kernel_norm='standardise', gain=0.5)),
  )
  def test_keras_save_and_load_model_round_trip(self, config):
    # Was: get_config raised NotImplementedError, so model.save('q.keras') failed.
    model = build_quine(config)
    model.assign_flat(model.flatten() * 3.0)
    path = os.path.join(self.create_tempdir().full_path, 'q.keras')
    model.save(path)
    loaded = keras.models.load_model(path)
    self.assertIsInstance(loaded, type(model))
    self.assertEqual(loaded.config, config)
    coordinates = tf.range(config.num_weights)
    self.assertAllEqual(loaded.predict_weights(coordinates), model.predict_weights(coordinates))
    self.assertEqual(loaded.count_params(), config.num_weights)

  def test_auxiliary_image_projection_is_not_the_coordinate_projection(self):
    config = tiny_aux_config()
    model = build_quine(config)
    self.assertNotEqual(model.image_projection.seed, model.coordinate_projection.seed)
    self.assertEqual(model.coordinate_projection.num_columns, 3)
    self.assertEqual(model.image_projection.num_columns, 3)


if __name__ == '__main__':
  tf.test.main()
