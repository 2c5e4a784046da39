"""Tests of export.dump and export.onnx_graph: the format, the generator, and bad dumps."""

import json
import os
import shutil
import struct
import tempfile

from absl.testing import parameterized
import numpy as np
import safetensors.numpy
import tensorflow as tf

import formats
from export import dump as dump_lib
from export import manifest as manifest_lib
from export import onnx_graph
from export import exporter
from export import testing
from models import generator
from models import projection as projection_lib


class _ExportedTestCase(tf.test.TestCase):
  """Exports the tiny vanilla quine once; tests copy it before damaging it."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.model = testing.make_workdir(os.path.join(cls.root, 'wd'), testing.VANILLA)
    cls.path = exporter.export_workdir(os.path.join(cls.root, 'wd'),
                                          os.path.join(cls.root, 'exports'), 'vanilla')

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def copy(self):
    path = os.path.join(self.create_tempdir().full_path, 'dump')
    shutil.copytree(self.path, path)
    return path


class FormatTest(_ExportedTestCase):

  def test_theta_is_the_model_flattened_in_canonical_order(self):
    dump = dump_lib.read_dump(self.path)
    self.assertEqual(list(dump.weights), ['hidden_1', 'hidden_2', 'weight_head'])
    self.assertAllEqual(dump.theta, self.model.flatten().numpy())
    self.assertEqual(dump.num_weights, 2 * 4 * 4 + 4)

  def test_weights_file_data_block_is_theta(self):
    with open(os.path.join(self.path, dump_lib.WEIGHTS_FILE), 'rb') as f:
      data = f.read()
    (header,) = struct.unpack('<Q', data[:8])
    self.assertEqual(data[8 + header:], self.model.flatten().numpy().astype('<f4').tobytes())

  def test_safetensors_library_reads_our_file_and_we_read_its(self):
    loaded = safetensors.numpy.load_file(os.path.join(self.path, dump_lib.WEIGHTS_FILE))
    for name, value in zip(self.model.weight_names(), self.model.quine_variables):
      self.assertAllEqual(loaded[name], value.numpy())
    tensors = {'b': np.arange(6, dtype=np.float32).reshape(2, 3), 'a': np.arange(3)}
    ours, _ = formats.decode_safetensors(safetensors.numpy.save(tensors))
    self.assertAllEqual(ours['b'], tensors['b'])
    self.assertAllEqual(ours['a'], tensors['a'])

  def test_manifest_documents_the_forward_pass(self):
    manifest = dump_lib.read_dump(self.path).manifest
    self.assertEqual(manifest['weights']['order'], ['hidden_1', 'hidden_2', 'weight_head'])
    self.assertIn('[in, out]', manifest['architecture']['kernel_layout'])
    self.assertIn('selu', manifest['architecture']['activations'])
    projection = manifest['projections']['coordinate']
    self.assertEqual((projection['num_rows'], projection['num_columns']), (36, 4))
    self.assertEqual(projection['onnx_initializer'], 'projection/coordinate')
    self.assertEqual(manifest['lineage']['generation'], 0)
    self.assertEqual(manifest['onnx']['weight_initializers']['hidden_1'], 'hidden_1')

  def test_onnx_initializers_are_the_weights_and_the_projection_separately(self):
    dump = dump_lib.read_dump(self.path)
    with open(dump.onnx_path, 'rb') as f:
      values = onnx_graph.initializers(onnx_graph.parse(f.read()))
    for name, weight in dump.weights.items():
      self.assertAllEqual(values[name], weight)
    self.assertEqual(values['projection/coordinate'].tobytes(),
                     dump.projection('coordinate').tobytes())

  def test_equal_weight_tensors_keep_an_initializer_each(self):
    # A quine at a constant fixed point (here the zero quine): its hidden kernels are equal, and
    # tf2onnx would fold them into one initializer.
    from export import saved_model  # pylint: disable=g-import-not-at-top
    from models.quine import build_quine  # pylint: disable=g-import-not-at-top
    from models.config import ModelConfig  # pylint: disable=g-import-not-at-top
    model = build_quine(ModelConfig(width=4))
    model.assign_flat(tf.zeros([model.num_weights]))
    values = onnx_graph.initializers(saved_model.onnx_model(model))
    for name in model.weight_names():
      self.assertAllEqual(values[name], np.zeros_like(values[name]), msg=name)

  def test_weights_only_dump_reads_where_no_graph_is_needed(self):
    dump = dump_lib.read_dump(self.path)
    path = os.path.join(self.create_tempdir().full_path, 'weights_only')
    manifest = dump_lib.write_dump(path, dump.config, dump.theta, None)
    self.assertEqual(sorted(manifest['files']), [dump_lib.WEIGHTS_FILE])
    self.assertEqual(sorted(os.listdir(path)), [dump_lib.MANIFEST_FILE, dump_lib.WEIGHTS_FILE])
    light = dump_lib.read_dump(path, require_onnx=False)
    self.assertFalse(light.has_onnx)
    self.assertAllEqual(light.theta, dump.theta)
    with self.assertRaisesRegex(dump_lib.DumpError, 'files has no entry for model.onnx'):
      dump_lib.read_dump(path)

  def test_tensorflow_projection_is_bit_identical_to_the_generator(self):
    rows = np.array([0, 1, 35, 123456789, 2**31, 2**32 - 1], np.int64)
    want = generator.projection_rows(3, rows, 7, 0.05)
    self.assertEqual(projection_lib.tf_projection(3, tf.constant(rows), 7, 0.05).numpy()
                     .tobytes(), want.tobytes())


class BadDumpTest(_ExportedTestCase, parameterized.TestCase):

  def _truncate(self, path, name):
    full = os.path.join(path, name)
    with open(full, 'rb') as f:
      data = f.read()
    with open(full, 'wb') as f:
      f.write(data[:len(data) // 2])

  @parameterized.parameters(
      (dump_lib.WEIGHTS_FILE, r'weights\.safetensors: .*truncated'),
      (manifest_lib.ONNX_FILE, r'model\.onnx: .*truncated'),
      (dump_lib.MANIFEST_FILE, r'manifest\.json: not valid JSON'))
  def test_truncated_file_is_rejected(self, name, message):
    path = self.copy()
    self._truncate(path, name)
    with self.assertRaisesRegex(dump_lib.DumpError, message):
      dump_lib.read_dump(path)

  def test_truncated_weights_are_rejected_even_with_matching_manifest_sizes(self):
    path = self.copy()
    self._truncate(path, dump_lib.WEIGHTS_FILE)
    manifest_path = os.path.join(path, dump_lib.MANIFEST_FILE)
    with open(manifest_path) as f:
      manifest = json.load(f)
    manifest['files'][dump_lib.WEIGHTS_FILE]['bytes'] = os.path.getsize(
        os.path.join(path, dump_lib.WEIGHTS_FILE))
    with open(manifest_path, 'w') as f:
      json.dump(manifest, f)
    with self.assertRaisesRegex(dump_lib.DumpError, r'weights\.safetensors: .*truncated'):
      dump_lib.read_dump(path)

  def test_missing_file_is_rejected(self):
    path = self.copy()
    os.remove(os.path.join(path, manifest_lib.ONNX_FILE))
    with self.assertRaisesRegex(dump_lib.DumpError, r'model\.onnx: missing'):
      dump_lib.read_dump(path)

  def test_folder_without_manifest_is_not_a_dump(self):
    with self.assertRaisesRegex(dump_lib.DumpError, r'manifest\.json: missing'):
      dump_lib.read_dump(self.create_tempdir().full_path)

  def _rewrite_manifest(self, path, edit):
    manifest_path = os.path.join(path, dump_lib.MANIFEST_FILE)
    with open(manifest_path) as f:
      manifest = json.load(f)
    manifest = edit(manifest)
    with open(manifest_path, 'w') as f:
      json.dump(manifest, f)

  def test_manifest_inconsistent_with_its_config_is_rejected(self):
    path = self.copy()

    def edit(manifest):
      manifest['model']['config']['width'] = 5
      return manifest
    self._rewrite_manifest(path, edit)
    with self.assertRaisesRegex(dump_lib.DumpError,
                                r'manifest\.json: weights\.tensors .* do not match'):
      dump_lib.read_dump(path)

  def test_manifest_for_other_weights_is_rejected(self):
    path = self.copy()

    def edit(manifest):  # a consistent manifest, but of a width-5 quine
      config = dict(manifest['model']['config'], width=5)
      return dict(manifest_lib.build(config), files=manifest['files'])
    self._rewrite_manifest(path, edit)
    with self.assertRaisesRegex(
        dump_lib.DumpError,
        r"weights\.safetensors: tensor 'hidden_1' has shape \[4, 4\], manifest\.json says "
        r'\[5, 5\]'):
      dump_lib.read_dump(path)

  def test_onnx_disagreeing_with_safetensors_is_rejected(self):
    path = self.copy()
    onnx_path = os.path.join(path, manifest_lib.ONNX_FILE)
    with open(onnx_path, 'rb') as f:
      data = onnx_graph.with_weights(f.read(), {'hidden_2': np.ones([4, 4], np.float32)})
    with open(onnx_path, 'wb') as f:
      f.write(data)

    def edit(manifest):  # sizes made to match, so that only the contents differ
      manifest['files'][manifest_lib.ONNX_FILE]['bytes'] = len(data)
      return manifest
    self._rewrite_manifest(path, edit)
    with self.assertRaisesRegex(
        dump_lib.DumpError,
        r"model\.onnx: initializer 'hidden_2' disagrees with weights\.safetensors"):
      dump_lib.read_dump(path)

  def test_every_file_of_the_version_folder_is_hashed(self):
    # Was: only weights.safetensors and model.onnx were; a damaged SavedModel got through to
    # TensorFlow's loader (a traceback in replicate.py).
    files = dump_lib.read_dump(self.path).manifest['files']
    self.assertContainsSubset(['saved_model.pb', 'variables/variables.index',
                               dump_lib.WEIGHTS_FILE, dump_lib.ONNX_FILE], list(files))
    self.assertNotIn(dump_lib.MANIFEST_FILE, files)

  def test_damaged_saved_model_parts_are_named(self):
    path = self.copy()
    shutil.rmtree(os.path.join(path, 'variables'))
    with self.assertRaisesRegex(dump_lib.DumpError, r'variables/variables\.\S+: missing'):
      dump_lib.read_dump(path)
    path = self.copy()
    self._truncate(path, 'saved_model.pb')
    with self.assertRaisesRegex(dump_lib.DumpError, r'saved_model\.pb: .*truncated'):
      dump_lib.read_dump(path)
    path = self.copy()
    data_file = next(n for n in os.listdir(os.path.join(path, 'variables')) if 'data' in n)
    full = os.path.join(path, 'variables', data_file)
    with open(full, 'rb') as f:
      data = bytearray(f.read())
    data[len(data) // 2] ^= 0x01
    with open(full, 'wb') as f:
      f.write(bytes(data))
    with self.assertRaisesRegex(dump_lib.DumpError, f'variables/{data_file}: sha256'):
      dump_lib.read_dump(path)

  def test_edited_activation_is_caught(self):
    # Was: a manifest whose activation was edited read as a good dump.
    path = self.copy()

    def edit(manifest):
      manifest['model']['config']['activation'] = 'tanh'
      return manifest
    self._rewrite_manifest(path, edit)
    with self.assertRaisesRegex(dump_lib.DumpError, r'manifest\.json: architecture\.'):
      dump_lib.read_dump(path)
    path = self.copy()

    def edit_both(manifest):  # config and architecture section agree, the ONNX graph does not
      manifest['model']['config']['activation'] = 'tanh'
      manifest['architecture'] = manifest_lib.architecture_section(
          manifest_lib.architecture(manifest['model']['config']))
      return manifest
    self._rewrite_manifest(path, edit_both)
    with self.assertRaisesRegex(dump_lib.DumpError, r"model\.onnx: the graph has no \['Tanh'\]"):
      dump_lib.read_dump(path)

  def test_edited_weights_are_rejected(self):
    path = self.copy()
    weights_path = os.path.join(path, dump_lib.WEIGHTS_FILE)
    with open(weights_path, 'rb') as f:
      data = bytearray(f.read())
    data[-1] ^= 0x40  # same size, one weight changed
    with open(weights_path, 'wb') as f:
      f.write(bytes(data))
    with self.assertRaisesRegex(dump_lib.DumpError, r'weights\.safetensors: sha256'):
      dump_lib.read_dump(path)


class AtomicDirectoryTest(tf.test.TestCase):

  def test_existing_folder_is_kept_unless_overwrite(self):
    parent = self.create_tempdir().full_path
    target = os.path.join(parent, '1')
    os.makedirs(target)
    with self.assertRaises(FileExistsError):
      with dump_lib.atomic_directory(target):
        pass
    with dump_lib.atomic_directory(target, overwrite=True) as tmp:
      open(os.path.join(tmp, 'new'), 'w').close()
    self.assertEqual(os.listdir(target), ['new'])
    self.assertEqual(os.listdir(parent), ['1'])

  def test_failure_leaves_nothing_behind(self):
    parent = self.create_tempdir().full_path
    with self.assertRaises(RuntimeError):
      with dump_lib.atomic_directory(os.path.join(parent, '1')) as tmp:
        open(os.path.join(tmp, 'half'), 'w').close()
        raise RuntimeError('crash')
    self.assertEqual(os.listdir(parent), [])


if __name__ == '__main__':
  tf.test.main()
