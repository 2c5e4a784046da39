"""Tests of export.frameworks: the forward pass in TF, ONNX Runtime, PyTorch and NumPy agrees."""

import os
import shutil
import tempfile
from unittest import mock

from absl.testing import parameterized
import numpy as np
import onnx
import tensorflow as tf
import torch

from conftest import coordinate_rows
from conftest import image_rows
from conftest import numpy_heads
from conftest import numpy_kernels
from conftest import numpy_predict_weights
from conftest import tiny_aux_config
from export import dump as dump_lib
from export import frameworks
from export import manifest as manifest_lib
from export import onnx_graph
from export import replication
from export import exporter
from export import testing
from models import generator
from models.config import ModelConfig


class ReplicaTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.models, cls.dumps = {}, {}
    for kind, config in testing.CONFIGS.items():
      cls.models[kind] = testing.make_workdir(os.path.join(cls.root, kind), config)
      path = exporter.export_workdir(os.path.join(cls.root, kind), cls.root + '/x', kind)
      cls.dumps[kind] = dump_lib.read_dump(path)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  @parameterized.product(kind=['vanilla', 'auxiliary'], framework=frameworks.FRAMEWORKS)
  def test_predictions_agree_with_tensorflow(self, kind, framework):
    model, dump = self.models[kind], self.dumps[kind]
    replica = frameworks.make_replica(framework, dump)
    self.assertAllEqual(replica.theta, model.flatten())
    coordinates = np.arange(model.num_weights)
    want = model.predict_weights(tf.constant(coordinates)).numpy()
    got = replica.predict_all()
    self.assertEqual(got.dtype, np.float32)
    scale = replication.max_abs(want, replica.theta)
    self.assertAllClose(got, want, rtol=0, atol=replication.RTOL * scale)
    oracle = numpy_predict_weights(model.config, numpy_kernels(model), coordinates)
    self.assertAllClose(got, oracle, rtol=0, atol=replication.RTOL * scale)
    if kind == 'auxiliary':
      images, _ = testing.fake_images(7, 16, 3)
      want = model.classify(images).numpy()
      self.assertAllClose(replica.classify(images), want, rtol=0,
                          atol=replication.RTOL * replication.max_abs(want))

  def test_keras_rebuild_equals_saved_model(self):
    dump = self.dumps['auxiliary']
    saved = frameworks.make_replica('tensorflow', dump)
    keras = frameworks.make_replica('tensorflow', dump, use_saved_model=False)
    self.assertEqual((saved.name, keras.name), ('tensorflow[saved_model]', 'tensorflow[keras]'))
    self.assertAllEqual(saved.theta, keras.theta)
    self.assertAllClose(saved.predict_all(), keras.predict_all(), rtol=0, atol=1e-7)

  def test_onnxruntime_reads_theta_from_the_onnx_file(self):
    dump = self.dumps['vanilla']
    fake = dump_lib.Dump(dump.path, dump.manifest,
                         {k: np.zeros_like(v) for k, v in dump.weights.items()})
    self.assertAllEqual(frameworks.make_replica('onnxruntime', fake).theta, dump.theta)

  def test_torch_projection_is_bit_identical(self):
    rows = np.array([0, 1, 2, 12345, 2**31 - 1, 2**31, 2**32 - 1], np.int64)
    for seed, columns, std in ((0, 5, 0.0577), (2**32 - 2, 3, 1.0), (7, 100, 0.01)):
      want = generator.projection_rows(seed, rows, columns, std)
      got = frameworks.torch_projection(seed, torch.from_numpy(rows), columns, std).numpy()
      self.assertEqual(got.dtype, np.float32)
      self.assertEqual(got.tobytes(), want.tobytes())

  def test_onnx_graph_can_hash_the_projection_itself(self):
    base = self.create_tempdir().full_path
    with mock.patch.object(manifest_lib, 'EXPORT_TABLE_ENTRIES', 0):  # as for a paper-size quine
      path = exporter.export_model(self.models['vanilla'], base, 'hashed')
    dump = dump_lib.read_dump(path)
    self.assertIsNone(dump.manifest['projections']['coordinate']['onnx_initializer'])
    graph = onnx.load(dump.onnx_path).graph
    self.assertNotIn('projection/coordinate', [i.name for i in graph.initializer])
    self.assertIn('BitwiseXor', [n.op_type for n in graph.node])
    got = frameworks.make_replica('onnxruntime', dump).predict_all()
    want = frameworks.make_replica('numpy', dump).predict_all()
    self.assertAllClose(got, want, rtol=0, atol=1e-6)
    # The SavedModel hashes too: its graph holds the generator's ops, and the same predictions.
    served = tf.saved_model.load(path).signatures['predict_weights']
    coordinates = tf.range(dump.num_weights, dtype=tf.int64)
    self.assertAllClose(served(coordinates=coordinates)['predicted_weights'], want, atol=1e-6)
    with open(os.path.join(path, 'saved_model.pb'), 'rb') as f:
      self.assertIn(b'BitwiseXor', f.read())


class StandardisedExportTest(tf.test.TestCase):
  """A quine with weight-standardised hidden kernels (the --preset=stable variant) exports."""

  def test_every_framework_runs_the_standardised_forward_pass(self):
    config = ModelConfig(width=4, activation='tanh', output_activation='tanh',
                                       kernel_norm='standardise', gain=1.5, projection_std=0.5)
    base = self.create_tempdir().full_path
    model = testing.make_workdir(os.path.join(base, 'run'), config, scale=3.0)
    dump = dump_lib.read_dump(exporter.export_workdir(os.path.join(base, 'run'),
                                                         os.path.join(base, 'x'), 'stable'))
    coordinates = np.arange(model.num_weights)
    oracle = numpy_predict_weights(config, numpy_kernels(model), coordinates)
    for framework in frameworks.FRAMEWORKS:
      replica = frameworks.make_replica(framework, dump)
      self.assertAllEqual(replica.theta, model.flatten())
      self.assertAllClose(replica.predict_all(), oracle, rtol=0, atol=1e-6, msg=framework)
    # tf2onnx folds S(W) of a constant kernel; the dump's graph computes it from the kernel.
    with open(dump.onnx_path, 'rb') as f:
      data = f.read()
    graph = onnx.load_from_string(data).graph
    self.assertContainsSubset({'hidden_1', 'hidden_2', 'weight_head'},
                              {i.name for i in graph.initializer})
    self.assertIn('ReduceMean', [n.op_type for n in graph.node])
    # so a child's weights swapped into the same graph are standardised too
    import onnxruntime as ort  # pylint: disable=g-import-not-at-top
    child = {name: value * 2.0 for name, value in dump.weights.items()}
    child['hidden_1'] = child['hidden_1'] * 5.0
    session = ort.InferenceSession(onnx_graph.with_weights(data, child),
                                   providers=['CPUExecutionProvider'])
    got = session.run([manifest_lib.ONNX_PREDICTED_WEIGHTS],
                      {manifest_lib.ONNX_COORDINATES: coordinates})[0]
    want = numpy_predict_weights(config, [child[n] for n in ('hidden_1', 'hidden_2',
                                                             'weight_head')], coordinates)
    self.assertAllClose(got, want, rtol=0, atol=1e-6)
    self.assertIn('standardise(hidden_1)', ' '.join(dump.manifest['architecture']
                                                    ['predict_weights']))

  def test_a_standardised_auxiliary_quines_child_runs_in_its_parents_graph(self):
    # Its kernels are standardised on both paths (weights and classes): tf2onnx folds each into a
    # constant, and every one must follow the child's weights.
    import onnxruntime as ort  # pylint: disable=g-import-not-at-top
    config = tiny_aux_config(kernel_norm='standardise', gain=0.7, output_activation='tanh')
    base = self.create_tempdir().full_path
    model = testing.make_workdir(os.path.join(base, 'run'), config)
    dump = dump_lib.read_dump(exporter.export_workdir(os.path.join(base, 'run'),
                                                         os.path.join(base, 'x'), 'aux'))
    rng = np.random.default_rng(0)
    child = {name: (value * (1 + 0.1 * rng.standard_normal(value.shape))).astype(np.float32)
             for name, value in dump.weights.items()}
    with open(dump.onnx_path, 'rb') as f:
      session = ort.InferenceSession(onnx_graph.with_weights(f.read(), child),
                                     providers=['CPUExecutionProvider'])
    coordinates = np.arange(model.num_weights)
    images = rng.random((7, config.image_size), dtype=np.float32)
    got_weights, got_logits = session.run(
        [manifest_lib.ONNX_PREDICTED_WEIGHTS, manifest_lib.ONNX_LOGITS],
        {manifest_lib.ONNX_COORDINATES: coordinates, manifest_lib.ONNX_IMAGES: images})
    kernels = [child[name] for name, _ in model.architecture.weights]
    width, units = config.width, config.coordinate_units
    want_weights, _ = numpy_heads(config, kernels, np.concatenate(
        [coordinate_rows(config, coordinates), np.zeros((len(coordinates), width - units))], 1))
    _, want_logits = numpy_heads(config, kernels, np.concatenate(
        [np.zeros((7, units)), image_rows(config, images)], 1))
    self.assertAllClose(got_weights, want_weights, rtol=0, atol=1e-5)
    self.assertAllClose(got_logits, want_logits, rtol=1e-4, atol=1e-3)


if __name__ == '__main__':
  tf.test.main()
