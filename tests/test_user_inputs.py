"""Real MNIST test images sent the way users have them, and coordinates that name no weight.

The auxiliary quine's classify path takes an image as tensorflow-datasets gives it (0-255
integers, 28 x 28 x 1) or as a flat [0, 1] float vector, through the Keras model, the SavedModel
(TF Serving's REST API, a TF1 Session loader, `saved_model_cli run`) alike; NaN or out-of-range
pixels are refused with a message saying what is expected (HTTP 400). The ONNX graph gives NaN for
a coordinate outside [0, N).
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort
import pytest
import tensorflow as tf
from werkzeug.test import Client

from export import rest_api
from export import exporter
from export import testing
import models

_DATA_DIR = os.environ.get('TFDS_DATA_DIR') or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '..', 'shared', 'tfds')


def _mnist_test(count):
  """The first `count` MNIST test images as tfds gives them (uint8 [count, 28, 28, 1]), labels."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(os.path.join(_DATA_DIR, 'mnist')):
    raise AssertionError(f'no prepared MNIST in {_DATA_DIR} (set TFDS_DATA_DIR)')
  ds = tfds.load('mnist', split=f'test[:{count}]', data_dir=_DATA_DIR, download=False)
  examples = list(ds.as_numpy_iterator())
  return (np.stack([x['image'] for x in examples]),
          np.array([x['label'] for x in examples]))


def _forms(images):
  """{name: the images in that form}: each a way a user may hold MNIST."""
  return {
      'tfds_uint8_28x28x1': images,
      'flat_float_0_1': images.reshape(len(images), 784).astype(np.float32) / 255,
      'float_0_255_28x28': images[..., 0].astype(np.float32),
      'int64_flat_0_255': images.reshape(len(images), 784).astype(np.int64),
  }


_BAD = {  # (images, what the message must say)
    'nan': (np.full((1, 784), np.nan, np.float32), 'NaN'),
    'negative': (-np.ones((1, 784), np.float32), 'negative'),
    'above_255': (np.full((1, 784), 256.0, np.float32), 'above 255'),
    'fractional_above_1': (np.full((1, 784), 1.5, np.float32), 'fractional'),
    'wrong_size': (np.zeros((1, 27, 28), np.float32), '784 pixels each'),
}


class KerasModelTest(tf.test.TestCase):
  """models.load_pretrained('aux_replicate').classify, with images as users have them."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.images, cls.labels = _mnist_test(20)
    cls.quine = models.load_pretrained('aux_replicate')

  def test_every_form_gets_the_right_class_for_19_of_20(self):
    for name, images in _forms(self.images).items():
      right = int(np.sum(self.quine.classify(images).numpy().argmax(1) == self.labels))
      self.assertGreaterEqual(right, 19, name)

  def test_bad_pixels_raise_a_clear_error(self):
    for name, (images, message) in _BAD.items():
      with self.assertRaisesRegex((tf.errors.InvalidArgumentError, ValueError), message, msg=name):
        self.quine.classify(images)


class TinyExportTest(tf.test.TestCase):
  """The SavedModel's classify signature and the ONNX graph, on a tiny exported quine."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = cls.root = tempfile.mkdtemp()
    for kind, config in testing.CONFIGS.items():
      testing.make_workdir(os.path.join(root, kind), config)
      exporter.export_workdir(os.path.join(root, kind), os.path.join(root, 'x'), kind)
    cls.client = Client(rest_api.ServingApp({'aux': os.path.join(root, 'x', 'auxiliary')}))

  def test_bad_pixels_are_a_400_naming_what_is_expected(self):
    # The tiny quine takes 16 pixels; JSON bodies as a client would send them.
    row = lambda value: '{"instances": [[' + ', '.join([value] * 16) + ']]}'
    bodies = {'nan': (row('NaN'), 'NaN'), 'infinity': (row('Infinity'), 'NaN or an infinity'),
              'negative': (row('-1'), 'negative'), 'above_255': (row('256'), 'above 255'),
              'fractional_above_1': (row('1.5'), 'fractional'),
              'wrong_size': ('{"instances": [[' + ', '.join(['0'] * 15) + ']]}',
                             '16 pixels each')}
    for name, (body, message) in bodies.items():
      response = self.client.post('/v1/models/aux:predict', data=body)
      self.assertEqual(response.status_code, 400, name)
      self.assertIn(message, json.loads(response.get_data())['error'], name)

  def test_onnx_gives_nan_for_a_coordinate_that_names_no_weight(self):
    for kind, config in testing.CONFIGS.items():
      session = ort.InferenceSession(os.path.join(self.root, 'x', kind, '1', 'model.onnx'))
      n = config.num_weights
      feeds = {'coordinates': np.array([0, n - 1, n, -1, 2**40], np.int64)}
      if config.classifies:
        feeds['images'] = np.zeros((5, config.image_size), np.float32)
      (predicted,) = session.run(['predicted_weights'], feeds)
      self.assertTrue(np.all(np.isfinite(predicted[:2])), kind)
      self.assertTrue(np.all(np.isnan(predicted[2:])), kind)


@pytest.mark.slow
class ServedMnistTest(tf.test.TestCase):
  """aux_replicate exported, then sent real MNIST test images as users have them."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.images, cls.labels = _mnist_test(20)
    cls.root = tempfile.mkdtemp()
    cls.version = exporter.export_pretrained('aux_replicate', cls.root)
    cls.client = Client(rest_api.ServingApp({'aux': os.path.dirname(cls.version)}))

  def test_rest_api_rows_and_columns(self):
    for name, images in _forms(self.images).items():
      for body in ({'instances': images.tolist()}, {'inputs': images.tolist()}):
        response = self.client.post('/v1/models/aux:predict', data=json.dumps(body))
        self.assertEqual(response.status_code, 200, (name, response.get_data()[:200]))
        answer = json.loads(response.get_data())
        rows = answer.get('predictions') or [
            {'probabilities': p} for p in answer['outputs']['probabilities']]
        right = sum(int(np.argmax(r['probabilities']) == y) for r, y in zip(rows, self.labels))
        self.assertGreaterEqual(right, 19, name)

  def test_tf1_session_loader(self):
    # TF Serving's C++ loader reads a SavedModel as this does.
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
      meta = tf.compat.v1.saved_model.loader.load(session, ['serve'], self.version)
      signature = meta.signature_def['serving_default']
      fetch = signature.outputs['probabilities'].name
      for name, images in _forms(self.images).items():
        probabilities = session.run(fetch, {signature.inputs['images'].name: images})
        self.assertGreaterEqual(int(np.sum(probabilities.argmax(1) == self.labels)), 19, name)

  def test_saved_model_cli_run(self):
    path = os.path.join(self.root, 'images.npy')
    np.save(path, self.images)  # as tfds gives them
    cli = os.path.join(os.path.dirname(sys.executable), 'saved_model_cli')
    out = os.path.join(self.root, 'outputs')
    result = subprocess.run(
        [cli, 'run', '--dir', self.version, '--tag_set', 'serve', '--signature_def', 'classify',
         '--inputs', f'images={path}', '--outdir', out], capture_output=True, text=True,
        timeout=300, check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    probabilities = np.load(os.path.join(out, 'probabilities.npy'))
    self.assertGreaterEqual(int(np.sum(probabilities.argmax(1) == self.labels)), 19)


if __name__ == '__main__':
  tf.test.main()
