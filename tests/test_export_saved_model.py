"""Tests of export.saved_model: SavedModel round trip, signatures, versions, bad workdirs."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf

from export import dump as dump_lib
from export import exporter
from export import testing
from models import build_quine
from models.quine import VanillaQuine


class RoundTripTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.models, cls.paths = {}, {}
    for kind, config in testing.CONFIGS.items():
      workdir = os.path.join(cls.root, kind)
      cls.models[kind] = testing.make_workdir(workdir, config, scale=1.5)  # not the init
      cls.paths[kind] = exporter.export_workdir(workdir, os.path.join(cls.root, 'x'), kind)

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

  @pytest.mark.slow  # saved_model_cli, a process
  def test_saved_model_cli_lists_signatures_with_their_names(self):
    cli = os.path.join(os.path.dirname(sys.executable), 'saved_model_cli')
    out = subprocess.run([cli, 'show', '--all', '--dir', self.paths['auxiliary']],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    for text in ("signature_def['serving_default']", "signature_def['predict_weights']",
                 "signature_def['weights']", "signature_def['classify']", "inputs['images']",
                 "inputs['coordinates']", "outputs['probabilities']", "outputs['logits']",
                 "outputs['predicted_weights']", "outputs['theta']"):
      self.assertIn(text, out)

  def _session_run(self, kind, signature, feeds=None):
    """Runs `signature` the way TF Serving does: TF1 loader, fresh graph, Session, tensor names."""
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
      meta_graph = tf.compat.v1.saved_model.loader.load(sess, ['serve'], self.paths[kind])
      signature_def = meta_graph.signature_def[signature]
      self.assertCountEqual(signature_def.inputs, feeds or {})
      feed_dict = {signature_def.inputs[k].name: v for k, v in (feeds or {}).items()}
      fetches = {k: t.name for k, t in signature_def.outputs.items()}
      return sess.run(fetches, feed_dict)

  @parameterized.parameters('vanilla', 'auxiliary')
  def test_tf1_session_loader_runs_every_signature(self, kind):
    model = self.models[kind]
    coordinates = np.arange(model.num_weights, dtype=np.int64)
    self.assertAllEqual(self._session_run(kind, 'weights')['theta'], model.flatten())
    out = self._session_run(kind, 'predict_weights', {'coordinates': coordinates})
    self.assertAllClose(out['predicted_weights'], model.predict_weights(coordinates),
                        rtol=0, atol=1e-7)
    if kind == 'auxiliary':
      images, _ = testing.fake_images(5, 16, 3)
      expected = model.classify(images)
      for name in ('serving_default', 'classify'):
        out = self._session_run(kind, name, {'images': images})
        self.assertEqual(sorted(out), ['logits', 'probabilities'])
        self.assertAllClose(out['logits'], expected, rtol=1e-6, atol=1e-6)
        self.assertAllClose(out['probabilities'], tf.nn.softmax(expected), atol=1e-6)
    else:
      out = self._session_run(kind, 'serving_default', {'coordinates': coordinates})
      self.assertAllClose(out['predicted_weights'], model.predict_weights(coordinates),
                          rtol=0, atol=1e-7)

  def test_tf1_session_loader_refuses_out_of_range_coordinates(self):
    for bad in (-1, 36):
      with self.assertRaisesRegex(tf.errors.InvalidArgumentError, 'coordinates must be'):
        self._session_run('vanilla', 'predict_weights', {'coordinates': np.array([bad])})

  @parameterized.parameters(('vanilla', 'serving_default'), ('auxiliary', 'serving_default'),
                            ('auxiliary', 'predict_weights'))
  @pytest.mark.slow  # saved_model_cli, a process each; the Session loader test is the fast twin
  def test_saved_model_cli_run_gives_the_live_models_numbers(self, kind, signature):
    # `saved_model_cli run` restores through a Session, as TensorFlow Serving's C++ loader does.
    # (It refuses a run without inputs, so the `weights` signature is checked above instead.)
    model = self.models[kind]
    out_dir = self.create_tempdir().full_path
    coordinates = np.array([0, 1, model.num_weights - 1], np.int64)
    images, _ = testing.fake_images(4, 16, 3)
    if signature == 'serving_default' and kind == 'auxiliary':
      np.save(os.path.join(out_dir, 'images.npy'), images)
      inputs = ['--inputs', f'images={os.path.join(out_dir, "images.npy")}']
      want = {'logits': model.classify(images)}
    else:
      inputs = ['--input_exprs', f'coordinates={coordinates.tolist()}']
      want = {'predicted_weights': model.predict_weights(coordinates)}
    cli = os.path.join(os.path.dirname(sys.executable), 'saved_model_cli')
    result = subprocess.run(
        [cli, 'run', '--dir', self.paths[kind], '--tag_set', 'serve', '--signature_def',
         signature, '--outdir', out_dir, '--overwrite'] + inputs,
        capture_output=True, text=True, timeout=180, check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    for key, value in want.items():
      self.assertAllClose(np.load(os.path.join(out_dir, f'{key}.npy')), value,
                          rtol=1e-6, atol=1e-6)

  def test_versions_increment_and_are_never_overwritten_unless_asked(self):
    base = os.path.join(self.create_tempdir().full_path, 'exports')
    workdir = os.path.join(self.root, 'vanilla')
    first = exporter.export_workdir(workdir, base, 'm')
    second = exporter.export_workdir(workdir, base, 'm', force_new_version=True)
    self.assertEqual([os.path.basename(first), os.path.basename(second)], ['1', '2'])
    stamp = os.path.getmtime(os.path.join(first, 'manifest.json'))
    with self.assertRaisesRegex(exporter.ExportError, 'already exists.*--overwrite'):
      exporter.export_workdir(workdir, base, 'm', version=1)
    self.assertEqual(os.path.getmtime(os.path.join(first, 'manifest.json')), stamp)
    exporter.export_workdir(workdir, base, 'm', version=1, overwrite=True)
    dump_lib.read_dump(first)
    self.assertEqual(sorted(os.listdir(os.path.join(base, 'm'))), ['1', '2'])

  def test_the_same_checkpoint_is_not_exported_again_unless_forced(self):
    base = os.path.join(self.create_tempdir().full_path, 'exports')
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    testing.make_workdir(workdir, testing.VANILLA, scale=2.0)
    first = exporter.export_workdir(workdir, base, 'm')
    stamp = os.path.getmtime(os.path.join(first, 'manifest.json'))
    with self.assertLogs(level='WARNING') as logs:
      again = exporter.export_workdir(workdir, base, 'm')
    self.assertEqual(again, first)
    self.assertIn('already holds this export', logs.output[0])
    self.assertEqual(os.path.getmtime(os.path.join(first, 'manifest.json')), stamp)
    self.assertEqual(exporter.versions(os.path.join(base, 'm')), [1])
    source = dump_lib.read_dump(first).manifest['source']
    self.assertEqual(source['theta_sha256'],
                     hashlib.sha256(dump_lib.read_dump(first).theta.tobytes()).hexdigest())
    forced = exporter.export_workdir(workdir, base, 'm', force_new_version=True)
    self.assertEqual(os.path.basename(forced), '2')
    # The same checkpoint path with other weights (a run trained again) is a new export.
    shutil.rmtree(workdir)
    testing.make_workdir(workdir, testing.VANILLA, scale=3.0)
    self.assertEqual(os.path.basename(exporter.export_workdir(workdir, base, 'm')), '3')
    # So is the same checkpoint when the newest version is damaged.
    os.remove(os.path.join(base, 'm', '3', 'weights.safetensors'))
    self.assertEqual(os.path.basename(exporter.export_workdir(workdir, base, 'm')), '4')

  def test_folders_left_by_killed_exports_are_cleaned_by_the_next(self):
    base = os.path.join(self.create_tempdir().full_path, 'exports')
    workdir = os.path.join(self.root, 'vanilla')
    first = exporter.export_workdir(workdir, base, 'm')
    model_dir = os.path.dirname(first)
    for name in ('.2.tmp-killed', '.1.old-finished'):  # a killed export, a killed overwrite
      os.makedirs(os.path.join(model_dir, name, 'variables'))
    shutil.copytree(first, os.path.join(model_dir, '.3.old-interrupted'))  # version 3 moved aside
    with open(os.path.join(model_dir, '.2.tmp-killed', 'saved_model.pb'), 'wb') as f:
      f.write(b'half')
    os.makedirs(os.path.join(model_dir, '.notes'))  # anything else is left alone
    exporter.export_workdir(workdir, base, 'm', force_new_version=True)
    self.assertEqual(sorted(os.listdir(model_dir)), ['.notes', '1', '3', '4'])
    dump_lib.read_dump(os.path.join(model_dir, '3'))

  def test_an_unwritable_export_dir_is_an_export_error(self):
    base = self.create_tempdir().full_path
    with open(os.path.join(base, 'file'), 'w') as f:
      f.write('not a folder')
    with self.assertRaisesRegex(exporter.ExportError, 'cannot export into'):
      exporter.export_workdir(os.path.join(self.root, 'vanilla'), os.path.join(base, 'file'),
                                 'm')

  def test_exported_theta_is_the_checkpointed_one(self):
    for kind, config in testing.CONFIGS.items():
      theta = dump_lib.read_dump(self.paths[kind]).theta
      self.assertAllEqual(theta, self.models[kind].flatten())
      self.assertNotAllClose(theta, build_quine(config).flatten())

  def test_manifest_records_the_source(self):
    manifest = dump_lib.read_dump(self.paths['vanilla']).manifest
    source = manifest['source']
    self.assertEqual(source['workdir'], 'vanilla')
    self.assertEqual(source['checkpoint'], os.path.join('checkpoints', 'ckpt-1'))
    self.assertEqual((source['model_name'], source['version']), ('vanilla', 1))
    # No absolute path of the exporting machine anywhere in the manifest.
    self.assertNotIn(self.root, json.dumps(manifest))


class BadWorkdirTest(tf.test.TestCase):

  def test_workdir_without_checkpoint_fails_clearly(self):
    workdir = self.create_tempdir().full_path
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      json.dump({'model': testing.VANILLA.to_dict()}, f)
    with self.assertRaisesRegex(exporter.ExportError, 'holds no checkpoint'):
      exporter.export_workdir(workdir, os.path.join(workdir, 'x'), 'm')
    self.assertFalse(os.path.exists(os.path.join(workdir, 'x')))

  def test_folder_without_config_is_not_a_workdir(self):
    workdir = self.create_tempdir().full_path
    with self.assertRaisesRegex(exporter.ExportError, 'config.json is missing'):
      exporter.export_workdir(workdir, os.path.join(workdir, 'x'), 'm')

  def test_checkpoint_of_another_architecture_is_refused(self):
    workdir = self.create_tempdir().full_path
    testing.make_workdir(workdir, testing.VANILLA)
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      json.dump({'model': testing.AUXILIARY.to_dict()}, f)
    with self.assertRaisesRegex(exporter.ExportError, 'does not hold every weight'):
      exporter.export_workdir(workdir, os.path.join(workdir, 'x'), 'm')

  def test_checkpoint_missing_some_kernels_is_refused(self):
    workdir = self.create_tempdir().full_path
    testing.make_workdir(workdir, testing.VANILLA)
    partial = tf.Module()  # a checkpoint holding the weight head alone
    partial.weight_head = tf.Module()
    partial.weight_head._kernel = tf.Variable(tf.zeros([4, 1]))  # pylint: disable=protected-access
    shutil.rmtree(os.path.join(workdir, 'checkpoints'))
    tf.train.CheckpointManager(tf.train.Checkpoint(model=partial),
                               os.path.join(workdir, 'checkpoints'), 1).save()
    with self.assertRaisesRegex(exporter.ExportError,
                                'does not hold every weight.*hidden_1'):
      exporter.export_workdir(workdir, os.path.join(workdir, 'x'), 'm')

  def test_a_model_tracking_all_its_kernels_restores_old_and_new_checkpoints(self):
    # What export sees once models/ tracks the hidden layers itself (checkpoint keys
    # model/hidden_layer_<i>/...): both checkpoints written before and after such a change load.
    class TrackingQuine(VanillaQuine):

      def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        for i, layer in enumerate(self.hidden):
          setattr(self, f'hidden_layer_{i + 1}', layer)

    def build(config):
      return TrackingQuine(config, name='vanilla_quine').build_weights()

    old = self.create_tempdir().full_path
    model = testing.make_workdir(old, testing.VANILLA, scale=3.0)
    new = self.create_tempdir().full_path
    testing.make_workdir(new, testing.VANILLA)
    tracking = build(testing.VANILLA)
    tracking.assign_flat(model.flatten())
    shutil.rmtree(os.path.join(new, 'checkpoints'))
    tf.train.CheckpointManager(tf.train.Checkpoint(model=tracking),
                               os.path.join(new, 'checkpoints'), 1).save()
    with mock.patch.object(exporter, 'build_quine', build):
      for workdir in (old, new):
        restored, _ = exporter.load_model(workdir)
        self.assertAllEqual(restored.flatten(), model.flatten())

  def test_bad_model_name_is_refused(self):
    workdir = self.create_tempdir().full_path
    testing.make_workdir(workdir, testing.VANILLA)
    for name in ('', '../up', '.hidden'):
      with self.assertRaisesRegex(exporter.ExportError, 'model name'):
        exporter.export_workdir(workdir, os.path.join(workdir, 'x'), name)


class TrainerCheckpointTest(tf.test.TestCase):

  def test_exports_what_the_vanilla_trainer_checkpointed(self):
    from trainers import train_lib  # pylint: disable=g-import-not-at-top
    from conftest import tiny_train_config  # pylint: disable=g-import-not-at-top
    workdir = self.create_tempdir().full_path
    config = tiny_train_config(num_epochs=1)
    train_lib.run(config, workdir)
    path = exporter.export_workdir(workdir, os.path.join(workdir, 'x'), 'tiny')
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
