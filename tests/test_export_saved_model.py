"""Tests of export.saved_model: SavedModel round trip, signatures, versions, bad workdirs."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from export import dump as dump_lib
from export import saved_model
from export import testing
from models import build_quine


class RoundTripTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.models, cls.paths = {}, {}
    for kind, config in testing.CONFIGS.items():
      workdir = os.path.join(cls.root, kind)
      cls.models[kind] = testing.make_workdir(workdir, config, scale=1.5)  # not the init
      cls.paths[kind] = saved_model.export_workdir(workdir, os.path.join(cls.root, 'x'), kind)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def test_layout_is_base_name_version(self):
    for kind, path in self.paths.items():
      self.assertEqual(path, os.path.join(self.root, 'x', kind, '1'))
      self.assertContainsSubset(
          ['saved_model.pb', 'variables', 'model.onnx', 'weights.safetensors', 'manifest.json'],
          os.listdir(path))
      self.assertFalse([f for f in os.listdir(os.path.dirname(path)) if f.startswith('.')])

  @parameterized.parameters('vanilla', 'auxiliary')
  def test_signatures_equal_the_live_model(self, kind):
    model = self.models[kind]
    loaded = tf.saved_model.load(self.paths[kind])
    n = model.num_weights
    coordinates = tf.range(n, dtype=tf.int64)
    theta = loaded.signatures['weights']()['theta']
    self.assertAllEqual(theta, model.flatten())
    predicted = loaded.signatures['predict_weights'](coordinates=coordinates)
    self.assertAllClose(predicted['predicted_weights'], model.predict_weights(coordinates),
                        rtol=0, atol=1e-7)
    if kind == 'auxiliary':
      images, _ = testing.fake_images(5, 16, 3)
      expected = model.classify(images)
      for name in ('serving_default', 'classify'):
        out = loaded.signatures[name](images=tf.constant(images))
        self.assertAllClose(out['logits'], expected, rtol=1e-6, atol=1e-6)
        self.assertAllClose(out['probabilities'], tf.nn.softmax(expected), atol=1e-6)
    else:
      out = loaded.signatures['serving_default'](coordinates=coordinates)
      self.assertAllClose(out['predicted_weights'], predicted['predicted_weights'], atol=0)

  def test_out_of_range_coordinates_are_refused(self):
    loaded = tf.saved_model.load(self.paths['vanilla'])
    for bad in (-1, 36):
      with self.assertRaisesRegex(tf.errors.InvalidArgumentError, 'coordinates must be'):
        loaded.signatures['predict_weights'](coordinates=tf.constant([bad], tf.int64))

  def test_saved_model_cli_lists_signatures_with_their_names(self):
    cli = os.path.join(os.path.dirname(sys.executable), 'saved_model_cli')
    out = subprocess.run([cli, 'show', '--all', '--dir', self.paths['auxiliary']],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    for text in ("signature_def['serving_default']", "signature_def['predict_weights']",
                 "signature_def['weights']", "signature_def['classify']", "inputs['images']",
                 "inputs['coordinates']", "outputs['probabilities']", "outputs['logits']",
                 "outputs['predicted_weights']", "outputs['theta']"):
      self.assertIn(text, out)

  def test_versions_increment_and_are_never_overwritten_unless_asked(self):
    base = os.path.join(self.create_tempdir().full_path, 'exports')
    workdir = os.path.join(self.root, 'vanilla')
    first = saved_model.export_workdir(workdir, base, 'm')
    second = saved_model.export_workdir(workdir, base, 'm')
    self.assertEqual([os.path.basename(first), os.path.basename(second)], ['1', '2'])
    stamp = os.path.getmtime(os.path.join(first, 'manifest.json'))
    with self.assertRaisesRegex(saved_model.ExportError, 'already exists.*--overwrite'):
      saved_model.export_workdir(workdir, base, 'm', version=1)
    self.assertEqual(os.path.getmtime(os.path.join(first, 'manifest.json')), stamp)
    saved_model.export_workdir(workdir, base, 'm', version=1, overwrite=True)
    dump_lib.read_dump(first)
    self.assertEqual(sorted(os.listdir(os.path.join(base, 'm'))), ['1', '2'])

  def test_exported_theta_is_the_checkpointed_one(self):
    for kind, config in testing.CONFIGS.items():
      theta = dump_lib.read_dump(self.paths[kind]).theta
      self.assertAllEqual(theta, self.models[kind].flatten())
      self.assertNotAllClose(theta, build_quine(config).flatten())

  def test_manifest_records_the_source(self):
    source = dump_lib.read_dump(self.paths['vanilla']).manifest['source']
    self.assertEqual(source['workdir'], os.path.join(self.root, 'vanilla'))
    self.assertIn('ckpt-1', source['checkpoint'])
    self.assertEqual((source['model_name'], source['version']), ('vanilla', 1))


class BadWorkdirTest(tf.test.TestCase):

  def test_workdir_without_checkpoint_fails_clearly(self):
    workdir = self.create_tempdir().full_path
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      json.dump({'model': testing.VANILLA.to_dict()}, f)
    with self.assertRaisesRegex(saved_model.ExportError, 'holds no checkpoint'):
      saved_model.export_workdir(workdir, os.path.join(workdir, 'x'), 'm')
    self.assertFalse(os.path.exists(os.path.join(workdir, 'x')))

  def test_folder_without_config_is_not_a_workdir(self):
    workdir = self.create_tempdir().full_path
    with self.assertRaisesRegex(saved_model.ExportError, 'config.json is missing'):
      saved_model.export_workdir(workdir, os.path.join(workdir, 'x'), 'm')

  def test_checkpoint_of_another_architecture_is_refused(self):
    workdir = self.create_tempdir().full_path
    testing.make_workdir(workdir, testing.VANILLA)
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      json.dump({'model': testing.AUXILIARY.to_dict()}, f)
    with self.assertRaisesRegex(saved_model.ExportError, 'does not hold every weight'):
      saved_model.export_workdir(workdir, os.path.join(workdir, 'x'), 'm')

  def test_checkpoint_missing_some_kernels_is_refused(self):
    workdir = self.create_tempdir().full_path
    testing.make_workdir(workdir, testing.VANILLA)
    model = build_quine(testing.VANILLA)  # the model alone does not track its hidden kernels
    shutil.rmtree(os.path.join(workdir, 'checkpoints'))
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model),
                               os.path.join(workdir, 'checkpoints'), 1).save()
    with self.assertRaisesRegex(saved_model.ExportError,
                                'does not hold every weight.*hidden_1'):
      saved_model.export_workdir(workdir, os.path.join(workdir, 'x'), 'm')

  def test_bad_model_name_is_refused(self):
    workdir = self.create_tempdir().full_path
    testing.make_workdir(workdir, testing.VANILLA)
    for name in ('', '../up', '.hidden'):
      with self.assertRaisesRegex(saved_model.ExportError, 'model name'):
        saved_model.export_workdir(workdir, os.path.join(workdir, 'x'), name)


class TrainerCheckpointTest(tf.test.TestCase):

  def test_exports_what_the_vanilla_trainer_checkpointed(self):
    from trainers import train_lib  # pylint: disable=g-import-not-at-top
    from conftest import tiny_train_config  # pylint: disable=g-import-not-at-top
    workdir = self.create_tempdir().full_path
    config = tiny_train_config(num_epochs=1)
    train_lib.run(config, workdir)
    path = saved_model.export_workdir(workdir, os.path.join(workdir, 'x'), 'tiny')
    trainer = train_lib.QuineTrainer(config)  # restored the way the trainer resumes
    trainer.checkpoint.restore(tf.train.latest_checkpoint(
        os.path.join(workdir, 'checkpoints'))).assert_existing_objects_matched()
    dump = dump_lib.read_dump(path)
    self.assertAllEqual(dump.theta, trainer.model.flatten())
    self.assertNotAllClose(dump.theta, build_quine(config.model).flatten())
    last = dump.manifest['source']['last_metrics']
    self.assertEqual(last['phase'], 1)
    _, _, record = trainer.replication()
    self.assertAllClose(last['l_sr'], record['l_sr'])
    self.assertTrue(np.all(np.isfinite(dump.theta)))


if __name__ == '__main__':
  tf.test.main()
