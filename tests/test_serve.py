"""Tests of export.serving: TF Serving's REST API answered over real HTTP on a loopback port."""

import concurrent.futures
import json
import os
import shutil
import tempfile
import threading
import urllib.error
import urllib.request

import numpy as np
import tensorflow as tf
from werkzeug import serving as werkzeug_serving

from export import saved_model
from export import serving
from export import testing

_TIMEOUT_S = 30


class ServerTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.models = {}
    for kind, config in testing.CONFIGS.items():
      cls.models[kind] = testing.make_workdir(os.path.join(cls.root, kind), config)
      saved_model.export_workdir(os.path.join(cls.root, kind), os.path.join(cls.root, 'x'), kind)
    app = serving.ServingApp({'vanilla': os.path.join(cls.root, 'x', 'vanilla'),
                              'aux': os.path.join(cls.root, 'x', 'auxiliary')},
                             max_body_bytes=4096)
    cls.server = werkzeug_serving.make_server('127.0.0.1', 0, app, threaded=True)
    cls.url = f'http://127.0.0.1:{cls.server.server_port}'
    cls.thread = threading.Thread(target=cls.server.serve_forever, daemon=True)
    cls.thread.start()

  @classmethod
  def tearDownClass(cls):
    cls.server.shutdown()
    cls.thread.join(_TIMEOUT_S)
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def request(self, path, body=None, raw=None):
    """(status, parsed JSON) of a GET (no body) or POST."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(self.url + path, data=data)
    try:
      with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
        return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
      return e.code, json.loads(e.read())

  def test_status_and_metadata(self):
    status, body = self.request('/v1/models/vanilla')
    self.assertEqual(status, 200)
    self.assertEqual(body['model_version_status'][0]['version'], '1')
    self.assertEqual(body['model_version_status'][0]['state'], 'AVAILABLE')
    status, body = self.request('/v1/models/aux/metadata')
    self.assertEqual(status, 200)
    self.assertEqual(body['model_spec'], {'name': 'aux', 'signature_name': '', 'version': '1'})
    signatures = body['metadata']['signature_def']['signature_def']
    self.assertCountEqual(signatures, ['serving_default', 'classify', 'predict_weights',
                                       'weights'])
    self.assertEqual(signatures['predict_weights']['inputs']['coordinates']['dtype'], 'DT_INT64')

  def test_predict_rows_and_columns(self):
    model = self.models['vanilla']
    want = model.predict_weights(tf.constant([0, 5, 35])).numpy()
    status, body = self.request('/v1/models/vanilla:predict', {'instances': [0, 5, 35]})
    self.assertEqual(status, 200, body)
    self.assertAllClose(body['predictions'], want, rtol=0, atol=1e-7)
    status, body = self.request('/v1/models/vanilla/versions/1:predict', {
        'signature_name': 'predict_weights', 'inputs': {'coordinates': [0, 5, 35]}})
    self.assertEqual(status, 200, body)
    self.assertAllClose(body['outputs'], want, rtol=0, atol=1e-7)
    status, body = self.request('/v1/models/vanilla:predict',
                                {'signature_name': 'weights', 'inputs': {}})
    self.assertEqual(status, 200, body)
    self.assertAllEqual(np.float32(body['outputs']), model.flatten())

  def test_classify_images(self):
    images, _ = testing.fake_images(2, 16, 3)
    want = self.models['auxiliary'].classify(images).numpy()
    status, body = self.request('/v1/models/aux:predict', {'instances': images.tolist()})
    self.assertEqual(status, 200, body)
    self.assertLen(body['predictions'], 2)
    self.assertAllClose([p['logits'] for p in body['predictions']], want, atol=1e-5)
    self.assertAllClose([sum(p['probabilities']) for p in body['predictions']], [1, 1])
    status, body = self.request('/v1/models/aux:predict', {'inputs': images.tolist()})
    self.assertEqual(status, 200, body)
    self.assertAllClose(body['outputs']['logits'], want, atol=1e-5)

  def test_bad_requests_get_error_json_and_the_server_keeps_serving(self):
    cases = [
        ('/v1/models/vanilla:predict', b'{"instances": [0, 1', 400, 'JSON'),
        ('/v1/models/vanilla:predict', b'[1, 2]', 400, 'JSON object'),
        ('/v1/models/vanilla:predict', b'{"foo": 1}', 400, "Missing 'inputs' or 'instances'"),
        ('/v1/models/vanilla:predict', b'{"instances": [0.5]}', 400, 'int64'),
        ('/v1/models/vanilla:predict', b'{"instances": ["a"]}', 400, 'int64'),
        ('/v1/models/vanilla:predict', b'{"instances": [[0, 1], [2]]}', 400, 'rectangular'),
        ('/v1/models/vanilla:predict', b'{"instances": [36]}', 400, 'coordinates must be <'),
        ('/v1/models/aux:predict', b'{"instances": [[0, 1]]}', 400, 'shape'),
        ('/v1/models/vanilla:predict', b'{"signature_name": "nope", "instances": [0]}', 400,
         'nope'),
        ('/v1/models/unknown:predict', b'{"instances": [0]}', 404, 'Servable not found'),
        ('/v1/models/vanilla/versions/9:predict', b'{"instances": [0]}', 404,
         'Servable not found'),
        ('/v1/models/vanilla:classify', b'{"instances": [0]}', 400, ':predict'),
        ('/v1/models/vanilla:predict', b'{"instances": [' + b'0, ' * 3000 + b'0]}', 413,
         'exceeds'),
    ]
    for path, raw, code, message in cases:
      status, body = self.request(path, raw=raw)
      self.assertEqual(status, code, (path, raw[:40], body))
      self.assertIn(message, body['error'])
    self.assertEqual(self.request('/v1/models/unknown')[0], 404)
    self.assertEqual(self.request('/v2/nothing')[0], 404)
    self.assertEqual(self.request('/v1/models/vanilla:predict')[0], 405)  # a GET
    self.assertEqual(self.request('/v1/models/vanilla:predict', {'instances': [1]})[0], 200)

  def test_concurrent_requests(self):
    model = self.models['vanilla']

    def ask(i):
      coordinates = [i % 36, (7 * i) % 36]
      status, body = self.request('/v1/models/vanilla:predict', {'instances': coordinates})
      return status, body, model.predict_weights(tf.constant(coordinates)).numpy()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
      results = list(pool.map(ask, range(32), timeout=_TIMEOUT_S))
    for status, body, want in results:
      self.assertEqual(status, 200, body)
      self.assertAllClose(body['predictions'], want, rtol=0, atol=1e-7)

  def test_newest_version_is_served_by_default(self):
    base = os.path.join(self.create_tempdir().full_path, 'm')
    workdir = os.path.join(self.root, 'vanilla')
    saved_model.export_workdir(workdir, os.path.dirname(base), 'm', version=3)
    app = serving.ServingApp({'m': base})
    self.assertEqual(app.models['m'].get().version, 3)
    saved_model.export_workdir(workdir, os.path.dirname(base), 'm', version=10)
    os.makedirs(os.path.join(base, 'notes'))
    self.assertEqual(app.models['m'].get().version, 10)
    self.assertEqual(app.models['m'].versions(), [3, 10])


class ModelConfigFileTest(tf.test.TestCase):

  def test_reads_tf_serving_model_config_list(self):
    path = os.path.join(self.create_tempdir().full_path, 'models.config')
    with open(path, 'w') as f:
      f.write('# two quines\nmodel_config_list {\n'
              '  config { name: "vanilla" base_path: "/exports/vanilla" '
              'model_platform: "tensorflow" }\n'
              "  config {\n    name: 'aux'\n    base_path: 'aux'\n"
              '    model_version_policy { latest { num_versions: 1 } }\n  }\n}\n')
    self.assertEqual(serving.read_model_config_file(path),
                     {'vanilla': '/exports/vanilla',
                      'aux': os.path.join(os.path.dirname(path), 'aux')})

  def test_empty_config_is_refused(self):
    path = os.path.join(self.create_tempdir().full_path, 'models.config')
    with open(path, 'w') as f:
      f.write('model_config_list {}\n')
    with self.assertRaisesRegex(ValueError, 'no model_config_list'):
      serving.read_model_config_file(path)


if __name__ == '__main__':
  tf.test.main()
