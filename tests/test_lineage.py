"""Tests of experiments.lineage: children built in one framework give the same numbers in the others."""

import os
import shutil
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from export import dump as dump_lib
from export import frameworks
from experiments import lineage
from export import onnx_graph
from export import replication
from export import exporter
from export import testing


class LineageTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.dumps = {}
    for kind, config in testing.CONFIGS.items():
      # Doubled weights: an untrained quine's children shrink fast; keep generation 2 sizeable.
      testing.make_workdir(os.path.join(cls.root, kind), config, scale=2.0)
      cls.dumps[kind] = dump_lib.read_dump(exporter.export_workdir(
          os.path.join(cls.root, kind), os.path.join(cls.root, 'x'), kind))

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  @parameterized.parameters('vanilla', 'auxiliary')
  def test_generation_2_built_in_torch_gives_the_same_numbers_everywhere(self, kind):
    out = self.create_tempdir().full_path
    images, labels = testing.fake_images(6, 16, 3) if kind == 'auxiliary' else (None, None)
    rows = lineage.build_lineage(self.dumps[kind], 'torch', 2, out,
                                 check_frameworks=frameworks.FRAMEWORKS, images=images,
                                 labels=labels)
    self.assertEqual([r['generation'] for r in rows], [0, 1, 2])
    self.assertTrue(all(r['agrees'] for r in rows), rows)
    child = dump_lib.read_dump(lineage.generation_dir(out, 2))
    self.assertEqual(child.manifest['lineage']['built_with'], 'torch')
    self.assertEqual(child.manifest['lineage']['parent']['generation'], 1)
    self.assertGreater(float(np.sqrt(np.mean(child.theta**2))), 1e-5)  # not collapsed yet
    # The same numbers in every framework, re-imported from the dump torch wrote.
    reference = replication.metrics(child.theta,
                                    frameworks.make_replica('torch', child).predict_all())
    self.assertAllClose(rows[2]['l_sr'], reference['l_sr'], rtol=0, atol=0)
    for name in frameworks.FRAMEWORKS:
      replica = frameworks.make_replica(name, child)
      self.assertAllEqual(replica.theta, child.theta)
      got = replication.metrics(replica.theta, replica.predict_all())
      for key in ('l_sr', 'rho', 'r2', 'weight_rms'):
        self.assertAllClose(got[key], reference[key], rtol=1e-4, atol=0, msg=f'{name} {key}')
      if images is not None:
        self.assertEqual(replication.accuracy(replica.classify(images), labels),
                         rows[2]['test_accuracy'])

  def test_children_built_in_different_frameworks_agree(self):
    thetas = {}
    for name in ('numpy', 'torch', 'onnxruntime', 'tensorflow'):
      out = self.create_tempdir().full_path
      lineage.build_lineage(self.dumps['vanilla'], name, 2, out)
      thetas[name] = dump_lib.read_dump(lineage.generation_dir(out, 2)).theta
    scale = replication.max_abs(thetas['numpy'])
    for name, theta in thetas.items():
      self.assertAllClose(theta, thetas['numpy'], rtol=0, atol=10 * replication.RTOL * scale,
                          msg=name)

  def test_child_is_the_parents_predictions_in_the_same_format(self):
    out = self.create_tempdir().full_path
    parent = self.dumps['auxiliary']
    rows = lineage.build_lineage(parent, 'numpy', 1, out)
    child = dump_lib.read_dump(lineage.generation_dir(out, 1))  # validates ONNX vs safetensors
    self.assertAllEqual(child.theta, frameworks.make_replica('numpy', parent).predict_all())
    self.assertEqual(child.manifest['model'], parent.manifest['model'])
    self.assertEqual(child.manifest['lineage']['parent']['weights_sha256'],
                     parent.manifest['files'][dump_lib.WEIGHTS_FILE]['sha256'])
    with open(child.onnx_path, 'rb') as f:
      values = onnx_graph.initializers(onnx_graph.parse(f.read()))
    self.assertAllEqual(values['class_head'], child.weights['class_head'])
    distance = np.linalg.norm(child.theta.astype(np.float64) - parent.theta)
    self.assertAllClose(rows[1]['distance_to_parent'], distance)
    self.assertAllClose(rows[1]['distance_to_parent']**2, rows[0]['l_sr'], rtol=1e-6)

  def test_rerun_replaces_generations_but_not_other_folders(self):
    out = self.create_tempdir().full_path
    lineage.build_lineage(self.dumps['vanilla'], 'numpy', 1, out)
    lineage.build_lineage(self.dumps['vanilla'], 'numpy', 1, out)
    os.makedirs(os.path.join(out, 'other', 'generation_1'))
    with self.assertRaises(FileExistsError):
      lineage.build_lineage(self.dumps['vanilla'], 'numpy', 1, os.path.join(out, 'other'))

  def test_plot_is_a_png(self):
    rows = [{'generation': g, 'l_sr': 0.1 / (g + 1), 'rho': 0.5, 'weight_rms': 0.1,
             'relative_distance': None if g == 0 else 0.2, 'test_accuracy': 0.9}
            for g in range(3)]
    self.assertEqual(lineage.lineage_png(rows, 'title')[:8], b'\x89PNG\r\n\x1a\n')


if __name__ == '__main__':
  tf.test.main()
