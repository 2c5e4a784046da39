"""Tests of models/zoo.py and the shipped pretrained quines: every catalogue number is recomputed.

The catalogue (models/pretrained/catalogue.json) was measured by scripts/pretrained.py in
TensorFlow; here the numbers are recomputed from the shipped files twice, through the Keras model
`load_pretrained` builds (TensorFlow) and through export's NumPy replica (NumPy alone), and the
spectrum and lineage through models.stability, within the catalogue's stated tolerances.
"""

import contextlib
import io
import json
import os
import shutil
import sys

from absl.testing import absltest
from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import models
from export import dump as dump_lib
from export import frameworks
from export import replication
from models import stability
from models import zoo
from trainers import metrics as metrics_lib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'scripts'))
import pretrained as pretrained_script  # pylint: disable=g-import-not-at-top,wrong-import-position

CATALOGUE = zoo.catalogue()
NAMES = list(CATALOGUE)
VANILLA = [n for n in NAMES if CATALOGUE[n]['kind'] == 'vanilla']
AUXILIARY = [n for n in NAMES if CATALOGUE[n]['kind'] == 'auxiliary']
with open(os.path.join(zoo.PRETRAINED_DIR, zoo.CATALOGUE_FILE)) as _f:
  TOLERANCES = json.load(_f)['tolerances']
# The eleven quines the README and docs/PRETRAINED.md promise.
PROMISED = ('paper_adamax', 'paper_alternate', 'fixed_point_w100_s0', 'fixed_point_w100_s1',
            'fixed_point_w100_s2', 'exact_w5', 'exact_w10', 'stable_w4', 'stable_w142',
            'aux_paper', 'aux_replicate')


def _mnist():
  try:
    return replication.load_mnist_test()
  except replication.DataError as e:
    raise absltest.SkipTest(f'MNIST is not prepared here: {e}')


class CatalogueTest(tf.test.TestCase, parameterized.TestCase):

  def assertNumbersMatch(self, got, name, where):
    """got: recomputed metrics; compared with the catalogue's within its tolerances."""
    want = CATALOGUE[name]['metrics']
    for key in ('l_sr', 'rho', 'r2', 'weight_rms'):
      # Exact quines have rho ~1e-14: float32 round-off, which differs between frameworks.
      atol = TOLERANCES['rho_atol'] * (1.0 if key != 'l_sr' else
                                       want['weight_rms'] ** 2 * CATALOGUE[name][
                                           'architecture']['num_weights'])
      self.assertAllClose(got[key], want[key], rtol=TOLERANCES['rtol'], atol=atol,
                          msg=f'{name} {key} in {where}')
    if 'test_accuracy' in want:
      self.assertAllClose(got['test_accuracy'], want['test_accuracy'], rtol=0,
                          atol=TOLERANCES['accuracy_atol'], msg=f'{name} accuracy in {where}')

  def test_lists_the_zoo(self):
    self.assertContainsSubset(PROMISED, models.list_pretrained())
    self.assertEqual(models.list_pretrained(), NAMES)
    for name in NAMES:
      self.assertEqual(sorted(os.listdir(zoo.pretrained_dir(name))),
                       sorted(CATALOGUE[name]['files']))
      config = zoo.load_config(name)
      self.assertEqual(config.num_weights, CATALOGUE[name]['architecture']['num_weights'])
      self.assertEqual(config.kind, CATALOGUE[name]['kind'])

  def test_unknown_name_fails_with_the_names(self):
    with self.assertRaisesRegex(zoo.PretrainedError, r"no pretrained quine named 'nope'.*exact_w5"):
      models.load_pretrained('nope')

  def test_damaged_file_is_refused(self):
    directory = self.create_tempdir().full_path
    for name in (zoo.CATALOGUE_FILE, 'exact_w5'):
      source = os.path.join(zoo.PRETRAINED_DIR, name)
      (shutil.copytree if os.path.isdir(source) else shutil.copy)(
          source, os.path.join(directory, name))
    self.assertAllEqual(zoo.load_theta('exact_w5', directory), zoo.load_theta('exact_w5'))
    path = os.path.join(directory, 'exact_w5', zoo.WEIGHTS_FILE)
    with open(path, 'r+b') as f:
      f.seek(-1, os.SEEK_END)
      last = f.read(1)
      f.seek(-1, os.SEEK_END)
      f.write(bytes([last[0] ^ 1]))
    with self.assertRaisesRegex(zoo.PretrainedError, 'changed or damaged'):
      zoo.load_theta('exact_w5', directory)

  @parameterized.parameters(*NAMES)
  def test_numbers_recomputed_in_tensorflow(self, name):
    model = models.load_pretrained(name)
    self.assertEqual(model.name, name)
    theta = model.flatten()
    got = {k: float(v) for k, v in metrics_lib.replication_metrics(
        theta, model.predict_weights(tf.range(model.num_weights))).items()}
    if 'test_accuracy' in CATALOGUE[name]['metrics']:
      images, labels = _mnist()
      logits = model.classify(tf.constant(images)).numpy()
      got['test_accuracy'] = float(np.mean(np.argmax(logits, axis=1) == labels))
    self.assertNumbersMatch(got, name, 'TensorFlow')

  @parameterized.parameters(*NAMES)
  def test_numbers_recomputed_in_numpy(self, name):
    dump = dump_lib.read_dump(zoo.pretrained_dir(name), require_onnx=False)
    self.assertFalse(dump.has_onnx)
    replica = frameworks.make_replica('numpy', dump)
    images = labels = None
    if 'test_accuracy' in CATALOGUE[name]['metrics']:
      images, labels = _mnist()
    _, _, row = replication.evaluate(replica, images, labels)
    self.assertNumbersMatch(row, name, 'NumPy')

  @parameterized.parameters(*VANILLA)
  def test_stability_recomputed(self, name):
    want = CATALOGUE[name]['metrics']
    model = models.load_pretrained(name)
    radius = float(np.abs(stability.outer_eigenvalues(stability.Jacobian(model), k=6)[0]))
    self.assertAllClose(radius, want['spectral_radius'], rtol=TOLERANCES['spectral_radius_rtol'])
    line = stability.lineage(stability.regeneration_pass(model), model.flatten().numpy(),
                             want['lineage_generations_tried'])
    self.assertAllClose(line['fertile_generations'], want['fertile_generations'], rtol=0,
                        atol=TOLERANCES['fertile_generations_atol'])

  @parameterized.parameters(*NAMES)
  def test_regenerating_the_dump_gives_the_shipped_files(self, name):
    # What scripts/pretrained.py writes is a function of the config and theta alone: no
    # timestamps, no paths, so the shipped hashes are those of the files it writes.
    entry = {e.name: e for e in pretrained_script.ENTRIES}[name]
    directory = os.path.join(self.create_tempdir().full_path, name)
    dump = pretrained_script.write_entry_dump(entry, zoo.load_config(name), zoo.load_theta(name),
                                              directory)
    for filename, info in CATALOGUE[name]['files'].items():
      self.assertEqual(dump_lib.sha256_file(os.path.join(directory, filename)), info['sha256'],
                       msg=f'{name}/{filename}')
    self.assertEqual(CATALOGUE[name]['command'],
                     entry.command.format(workdir=f'runs/pretrained/{name}'))

  def test_keras_round_trip_predicts_identically(self):
    for name in ('fixed_point_w100_s0', 'aux_replicate'):
      model = models.load_pretrained(name)
      path = os.path.join(self.create_tempdir().full_path, 'q.keras')
      model.save(path)
      loaded = keras.models.load_model(path)
      self.assertEqual(type(loaded), type(model))
      coordinates = tf.range(model.num_weights)
      self.assertAllEqual(loaded.predict_weights(coordinates), model.predict_weights(coordinates))
      self.assertAllEqual(loaded.flatten(), model.flatten())

  def test_summary_shows_the_layers_and_n(self):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      models.load_pretrained('fixed_point_w100_s0').summary()
    for text in ('hidden_1', 'hidden_2', 'weight_head', '20,100'):
      self.assertIn(text, out.getvalue())

  def test_doc_table_is_the_catalogues(self):
    with open(pretrained_script.DOC) as f:
      self.assertIn(pretrained_script.markdown_table(list(CATALOGUE.values())), f.read())


if __name__ == '__main__':
  tf.test.main()
