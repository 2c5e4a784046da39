"""Tests of export.rest_api: TF Serving's REST API answered over real HTTP on a loopback port.

Also of export/serve.py: its refusals in this process (conftest.command_line), and one run as a
user starts it, a process serving pretrained quines (marked slow).
"""

import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
from werkzeug import serving as werkzeug_serving

from conftest import REPO_ROOT
from conftest import command_line
from conftest import import_binary
from export import exporter
from export import rest_api
from export import testing
from models import zoo

serve = import_binary('export.serve')

_TIMEOUT_S = 30


@contextlib.contextmanager
def _serve(app):
  """Serves `app` on a free loopback port in a thread; yields its URL."""
  server = werkzeug_serving.make_server('127.0.0.1', 0, app, threaded=True)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield f'http://127.0.0.1:{server.server_port}'
  finally:
    server.shutdown()
    thread.join(_TIMEOUT_S)


def _request(url, body=None, raw=None):
  """(status, parsed JSON) of a GET (no body) or POST."""
  data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
  try:
    with urllib.request.urlopen(urllib.request.Request(url, data=data),
                                timeout=_TIMEOUT_S) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


class ServerTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.models = {}
    for kind, config in testing.CONFIGS.items():
      cls.models[kind] = testing.make_workdir(os.path.join(cls.root, kind), config)
      exporter.export_workdir(os.path.join(cls.root, kind), os.path.join(cls.root, 'x'), kind)
    app = rest_api.ServingApp({'vanilla': os.path.join(cls.root, 'x', 'vanilla'),
                              'aux': os.path.join(cls.root, 'x', 'auxiliary')},
                             max_body_bytes=4096)
    cls.server = werkzeug_serving.make_server('127.0.0.1', 0, app, threaded=True)
    cls.url = f'http://127.0.0.1:{cls.server.server_port}'
    cls.thread = threading.Thread(target=cls.server.serve_forever, daemon=True)
    cls.thread.start()
    # A second server with a large body limit and a small row cap and chunk size.
    cls.capped = rest_api.ServingApp({'vanilla': os.path.join(cls.root, 'x', 'vanilla'),
                                     'aux': os.path.join(cls.root, 'x', 'auxiliary')},
                                    max_body_bytes=16 << 20, max_rows=1000, chunk_rows=64)
    cls.capped_server = werkzeug_serving.make_server('127.0.0.1', 0, cls.capped, threaded=True)
    cls.capped_url = f'http://127.0.0.1:{cls.capped_server.server_port}'
    cls.capped_thread = threading.Thread(target=cls.capped_server.serve_forever, daemon=True)
    cls.capped_thread.start()

  @classmethod
  def tearDownClass(cls):
    for server, thread in ((cls.server, cls.thread), (cls.capped_server, cls.capped_thread)):
      server.shutdown()
      thread.join(_TIMEOUT_S)
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def request(self, path, body=None, raw=None, url=None):
    """(status, parsed JSON) of a GET (no body) or POST to the first server (or `url`)."""
    return _request((url or self.url) + path, body, raw)

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
        # Any shape holding 16 pixels an image is accepted (models.quine.pixels); 2 is refused.
        ('/v1/models/aux:predict', b'{"instances": [[0, 1]]}', 400, '16 pixels each'),
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

  def test_json_nested_any_depth_is_a_400(self):
    def nested(depth, kind):
      return ('[' * depth + ']' * depth if kind == 'list'
              else '{"a": ' * depth + '0' + '}' * depth)

    for depth in (2, 33, 500, 990, 1000, 5000, 200000):
      for kind in ('list', 'dict'):
        x = nested(depth, kind)
        for raw in (x, f'{{"instances": {x}}}', f'{{"instances": [{x}]}}',
                    f'{{"inputs": {{"coordinates": {x}}}}}', f'{{"inputs": {x}}}',
                    f'{{"signature_name": {x}, "instances": [0]}}'):
          status, body = self.request('/v1/models/vanilla:predict', raw=raw.encode(),
                                      url=self.capped_url)
          self.assertEqual(status, 400, (depth, kind, raw[:60], body))
          self.assertTrue(body['error'])
    self.assertEqual(self.request('/v1/models/vanilla:predict', {'instances': [1]},
                                  url=self.capped_url)[0], 200)

  def test_rows_per_request_are_capped_with_the_limit_in_the_message(self):
    images, _ = testing.fake_images(1001, 16, 3)
    cases = [('vanilla', {'instances': [0] * 1001}),
             ('vanilla', {'inputs': [0] * 1001}),
             ('vanilla', {'inputs': {'coordinates': [0] * 1001}}),
             ('vanilla', {'instances': [{'coordinates': 0}] * 1001}),
             ('aux', {'instances': images.tolist()}),
             ('aux', {'inputs': {'images': images.tolist()}})]
    for name, body in cases:
      status, answer = self.request(f'/v1/models/{name}:predict', body, url=self.capped_url)
      self.assertEqual(status, 400, (name, answer))
      self.assertIn('limit of 1000 per request (--max_rows_per_request)', answer['error'])
    # At the cap the request is served, in chunks of 64 rows, with the live model's numbers.
    coordinates = np.arange(1000) % 36
    status, answer = self.request('/v1/models/vanilla:predict',
                                  {'instances': coordinates.tolist()}, url=self.capped_url)
    self.assertEqual(status, 200, answer)
    self.assertAllClose(answer['predictions'],
                        self.models['vanilla'].predict_weights(tf.constant(coordinates)),
                        rtol=0, atol=1e-7)
    status, answer = self.request('/v1/models/aux:predict', {'inputs': images[:1000].tolist()},
                                  url=self.capped_url)
    self.assertEqual(status, 200, answer)
    self.assertAllClose(answer['outputs']['logits'],
                        self.models['auxiliary'].classify(images[:1000]), atol=1e-5)

  def test_signatures_run_in_bounded_chunks(self):
    signature = self.capped.models['vanilla'].get().signatures['predict_weights']
    sizes = []
    run = signature._run  # pylint: disable=protected-access

    def spy(arrays):
      sizes.append(len(arrays['coordinates']))
      return run(arrays)

    coordinates = np.arange(150, dtype=np.int64) % 36
    with mock.patch.object(signature, '_run', spy):
      got = signature({'coordinates': coordinates}, chunk_rows=64)
    self.assertEqual(sizes, [64, 64, 22])
    self.assertAllClose(got['predicted_weights'],
                        self.models['vanilla'].predict_weights(tf.constant(coordinates)),
                        rtol=0, atol=1e-7)

  def test_bounded_load_on_loopback(self):
    # 96 requests from 8 threads, a third of them at the row cap, some over it: every one gets
    # the right answer or a 400 within the time bound, and the server answers afterwards.
    model = self.models['vanilla']
    rng = np.random.default_rng(0)
    sizes = [1000 if i % 3 == 0 else 1001 if i % 8 == 1 else int(rng.integers(1, 200))
             for i in range(96)]

    def ask(size):
      coordinates = (np.arange(size) * 7) % 36
      status, body = self.request('/v1/models/vanilla:predict',
                                  {'instances': coordinates.tolist()}, url=self.capped_url)
      return size, coordinates, status, body

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
      results = list(pool.map(ask, sizes, timeout=120))
    self.assertLess(time.monotonic() - start, 120)
    for size, coordinates, status, body in results:
      if size > 1000:
        self.assertEqual(status, 400, body)
        self.assertIn('limit of 1000', body['error'])
      else:
        self.assertEqual(status, 200, body)
        self.assertAllClose(body['predictions'], model.predict_weights(tf.constant(coordinates)),
                            rtol=0, atol=1e-7)
    self.assertEqual(self.request('/v1/models/vanilla', url=self.capped_url)[0], 200)

  def test_versions_that_fail_to_load_are_reported_and_skipped(self):
    base = os.path.join(self.create_tempdir().full_path, 'm')
    good = os.path.join(self.root, 'x', 'vanilla', '1')
    for version in (1, 2, 3, 4, 5):
      shutil.copytree(good, os.path.join(base, str(version)))
    for name in os.listdir(os.path.join(base, '2')):  # a half-finished copy
      if name != 'saved_model.pb':
        shutil.rmtree(os.path.join(base, '2', name), ignore_errors=True)
        if os.path.exists(os.path.join(base, '2', name)):
          os.remove(os.path.join(base, '2', name))
    for path in (os.path.join(base, '3', 'saved_model.pb'),  # truncated copies
                 os.path.join(base, '4', 'variables', 'variables.data-00000-of-00001'),
                 os.path.join(base, '5', 'saved_model.pb')):
      with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)
    app = rest_api.ServingApp({'m': base})
    with _serve(app) as url:
      status, body = _request(url + '/v1/models/m')
      self.assertEqual(status, 200, body)
      states = {e['version']: e for e in body['model_version_status']}
      self.assertEqual([e['version'] for e in body['model_version_status']],
                       ['5', '4', '3', '2', '1'])
      self.assertEqual(states['1']['state'], 'AVAILABLE')
      for version in ('2', '3', '4', '5'):
        self.assertEqual(states[version]['state'], 'END', states[version])
        self.assertNotEqual(states[version]['status']['error_code'], 'OK')
        self.assertTrue(states[version]['status']['error_message'])
      status, body = _request(url + '/v1/models/m/versions/4')
      self.assertEqual(body['model_version_status'][0]['state'], 'END')
      # The default route serves the newest version that loads.
      status, body = _request(url + '/v1/models/m:predict', {'instances': [0, 35]})
      self.assertEqual(status, 200, body)
      self.assertAllClose(body['predictions'],
                          self.models['vanilla'].predict_weights(tf.constant([0, 35])),
                          rtol=0, atol=1e-7)
      self.assertEqual(_request(url + '/v1/models/m/metadata')[1]['model_spec']['version'], '1')
      status, body = _request(url + '/v1/models/m/versions/3:predict', {'instances': [0]})
      self.assertEqual(status, 404, body)
      self.assertIn('failed to load', body['error'])
      # Once the copy of version 5 completes, it loads and becomes the default.
      shutil.copy(os.path.join(good, 'saved_model.pb'), os.path.join(base, '5'))
      self.assertEqual(_request(url + '/v1/models/m/metadata')[1]['model_spec']['version'], '5')
      self.assertEqual(_request(url + '/v1/models/m/versions/5')[1]['model_version_status'][0]
                       ['state'], 'AVAILABLE')

  def test_newest_version_is_served_by_default(self):
    base = os.path.join(self.create_tempdir().full_path, 'm')
    workdir = os.path.join(self.root, 'vanilla')
    exporter.export_workdir(workdir, os.path.dirname(base), 'm', version=3)
    app = rest_api.ServingApp({'m': base})
    self.assertEqual(app.models['m'].get().version, 3)
    exporter.export_workdir(workdir, os.path.dirname(base), 'm', version=10)
    os.makedirs(os.path.join(base, 'notes'))
    self.assertEqual(app.models['m'].get().version, 10)
    self.assertEqual(app.models['m'].versions(), [3, 10])


class PretrainedServerTest(tf.test.TestCase):

  @pytest.mark.slow
  def test_serve_binary_serves_pretrained_quines_by_name_and_cleans_up(self):
    env = dict(os.environ, TMPDIR=self.create_tempdir().full_path)
    process = subprocess.Popen(
        [sys.executable, os.path.join(REPO_ROOT, 'export', 'serve.py'),
         '--pretrained=exact_w5,exact_w10', '--port=0'], cwd=REPO_ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
      urls = []
      for line in process.stdout:  # 'Serving http://127.0.0.1:PORT/v1/models/NAME', then 'Ready'
        if line.startswith('Serving '):
          urls.append(line.split()[1])
        if line.startswith('Ready'):
          break
      # One URL per model (the banner named only the first).
      self.assertLen(urls, 2, 'the server did not say where it serves each model')
      self.assertEqual([u.split('/v1/models/')[1] for u in urls], ['exact_w5', 'exact_w10'])
      url = urls[0].split('/v1/')[0]
      status, body = _request(url + '/v1/models/exact_w10:predict', {'instances': [0, 209]})
      self.assertEqual(status, 200)
      self.assertAllClose(body['predictions'], zoo.load_theta('exact_w10')[[0, 209]], atol=1e-4)
      self.assertEqual(_request(url + '/v1/models/exact_w5')[1]['model_version_status'][0]
                       ['state'], 'AVAILABLE')
    finally:
      process.send_signal(signal.SIGTERM)
      process.wait(_TIMEOUT_S)
    # Its temporary exports are gone (other libraries may leave their own files there).
    self.assertEqual([n for n in os.listdir(env['TMPDIR']) if n.startswith('quine-zoo')], [])

  def test_unknown_pretrained_name_is_one_line(self):
    # `python export/serve.py --pretrained=exact_w5,nope`, in this process, as app.run would:
    # the exit message is what Python prints on stderr, with exit status 1.
    with self.assertRaises(SystemExit) as exited:
      with command_line(serve, '--pretrained=exact_w5,nope') as argv:
        serve.main(argv)
    self.assertEqual(exited.exception.code,
                     "serve.py: error: no pretrained quine named 'nope'; the zoo has "
                     + ', '.join(zoo.list_pretrained()))

  def test_model_name_names_one_pretrained_quine_only(self):
    with self.assertRaises(SystemExit) as exited:
      with command_line(serve, '--pretrained=exact_w5,exact_w10', '--model_name=q') as argv:
        serve.main(argv)
    self.assertEqual(exited.exception.code,
                     'serve.py: error: --model_name=q names one model, and --pretrained gives 2: '
                     'each is served under its own name')

  def test_a_base_path_that_holds_no_versions_is_refused_naming_the_right_one(self):
    # Was: served, and answered 404 for ever.
    root = self.create_tempdir().full_path
    testing.make_workdir(os.path.join(root, 'wd'), testing.VANILLA)
    version = exporter.export_workdir(os.path.join(root, 'wd'), os.path.join(root, 'x'), 'v')
    for path, problem in (
        (version, f'this is a version folder; serve its model folder: '
                  f'--model_base_path={root}/x/v'),
        (f'{root}/x', f'no numeric version folder here, but 1 model folder(s) are: serve one, '
                      f'e.g. --model_base_path={root}/x/v, or several with --model_config_file'),
        (f'{root}/nowhere', 'no such folder')):
      with self.assertRaises(SystemExit) as exited:
        with command_line(serve, f'--model_base_path={path}') as argv:
          serve.main(argv)
      self.assertEqual(exited.exception.code,
                       f'serve.py: error: --model_base_path={path}: {problem}')

  def test_exports_of_killed_servers_are_removed_and_live_ones_kept(self):
    root = tempfile.gettempdir()
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    orphan = tempfile.mkdtemp(prefix=f'quine-zoo-pretrained-{dead.pid}-')
    live = tempfile.mkdtemp(prefix=f'quine-zoo-pretrained-{os.getpid()}-')
    self.addCleanup(shutil.rmtree, live, ignore_errors=True)
    exporter._remove_orphaned_pretrained_exports()  # pylint: disable=protected-access
    self.assertFalse(os.path.exists(orphan))
    self.assertTrue(os.path.exists(live))
    self.assertEqual(os.path.dirname(orphan), root)


class ModelConfigFileTest(tf.test.TestCase):

  def test_reads_tf_serving_model_config_list(self):
    path = os.path.join(self.create_tempdir().full_path, 'models.config')
    with open(path, 'w') as f:
      f.write('# two quines\nmodel_config_list {\n'
              '  config { name: "vanilla" base_path: "/exports/vanilla" '
              'model_platform: "tensorflow" }\n'
              "  config {\n    name: 'aux'\n    base_path: 'aux'\n"
              '    model_version_policy { latest { num_versions: 1 } }\n  }\n}\n')
    self.assertEqual(rest_api.read_model_config_file(path),
                     {'vanilla': '/exports/vanilla',
                      'aux': os.path.join(os.path.dirname(path), 'aux')})

  def test_empty_config_is_refused(self):
    path = os.path.join(self.create_tempdir().full_path, 'models.config')
    with open(path, 'w') as f:
      f.write('model_config_list {}\n')
    with self.assertRaisesRegex(ValueError, 'no model_config_list'):
      rest_api.read_model_config_file(path)


if __name__ == '__main__':
  tf.test.main()
