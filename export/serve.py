r"""Serves exported quines with TensorFlow Serving's REST API (werkzeug), on 127.0.0.1 by default.

Clients written for TF Serving work unchanged. Examples (from the repository root):

  python export/serve.py --model_base_path=exports/vanilla            # model name: vanilla
  python export/serve.py --model_config_file=models.config --rest_api_port=8501
  python export/serve.py --pretrained=fixed_point_w100_s0,aux_replicate   # from the zoo

  curl localhost:8501/v1/models/vanilla
  curl localhost:8501/v1/models/vanilla/metadata
  curl -d '{"instances": [0, 1, 2]}' localhost:8501/v1/models/vanilla:predict
  curl -d '{"signature_name": "weights", "inputs": {}}' localhost:8501/v1/models/vanilla:predict

For production, serve the same folder with TF Serving itself (see docs/EXPORT.md):

  docker run -p 8501:8501 -v "$PWD/exports/vanilla:/models/vanilla" -e MODEL_NAME=vanilla \
      tensorflow/serving
"""

import os
import signal
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # keep TensorFlow's C++ start-up notes out

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from werkzeug import serving as werkzeug_serving

from export import rest_api

_MODEL_BASE_PATH = flags.DEFINE_string(
    'model_base_path', None, 'Folder of one model\'s numeric versions (<export_dir>/<name>).')
_MODEL_NAME = flags.DEFINE_string('model_name', None,
                                  'Name to serve it under (default: the folder\'s name).')
_MODEL_CONFIG_FILE = flags.DEFINE_string(
    'model_config_file', None, 'TF Serving model config file (text protobuf) naming several '
    'models; instead of --model_base_path.')
_PORT = flags.DEFINE_integer('rest_api_port', 8501, 'HTTP port (0: any free port).',
                             lower_bound=0, upper_bound=65535)
flags.DEFINE_alias('port', 'rest_api_port')
_HOST = flags.DEFINE_string('host', '127.0.0.1', 'Address to bind (0.0.0.0 exposes the server).')
_MAX_BODY_BYTES = flags.DEFINE_integer('max_body_bytes', rest_api.DEFAULT_MAX_BODY_BYTES,
                                       'Largest accepted request body.', lower_bound=1)
_MAX_ROWS = flags.DEFINE_integer(
    'max_rows_per_request', rest_api.DEFAULT_MAX_ROWS, 'Most coordinates (or images) in one '
    'request; more get a 400 naming the limit. Requests are evaluated '
    f'{rest_api.DEFAULT_CHUNK_ROWS} rows at a time.', lower_bound=1)
_PRETRAINED = flags.DEFINE_list(
    'pretrained', None, 'Pretrained quines to serve, by name (models.list_pretrained()): each is '
    'exported into a temporary folder as version 1 and served under its name (or --model_name, '
    'for one).')
flags.register_multi_flags_validator(
    ['model_base_path', 'model_config_file', 'pretrained'],
    lambda f: sum(f[k] is not None for k in f) == 1,
    message='give exactly one of --model_base_path, --model_config_file and --pretrained')


def _interrupt(signum, frame):
  del signum, frame
  raise KeyboardInterrupt


def main(argv):
  if len(argv) > 1:
    sys.exit(f'serve.py: error: unexpected arguments {argv[1:]}')
  if _PRETRAINED.value:
    from export import exporter  # pylint: disable=g-import-not-at-top
    from export import saved_model  # pylint: disable=g-import-not-at-top
    from models import zoo  # pylint: disable=g-import-not-at-top
    saved_model.quiet_logs()
    names = _PRETRAINED.value
    if _MODEL_NAME.value and len(names) > 1:
      sys.exit(f'serve.py: error: --model_name={_MODEL_NAME.value} names one model, and '
               f'--pretrained gives {len(names)}: each is served under its own name')
    try:
      for name in names:
        zoo.entry(name)  # every name is checked before anything is exported
      if _MODEL_NAME.value:
        exporter.check_model_name(_MODEL_NAME.value)
      print(f'Exporting {", ".join(names)} from the zoo...', flush=True)
      # A stopped server (SIGTERM as well as Ctrl-C) removes its temporary exports.
      signal.signal(signal.SIGTERM, _interrupt)
      with exporter.temporary_pretrained_export(names) as models:
        if _MODEL_NAME.value:
          models = {_MODEL_NAME.value: models[names[0]]}
        _serve(models)
    except (zoo.PretrainedError, exporter.ExportError) as e:
      sys.exit(f'serve.py: error: {e}')
    return
  if _MODEL_CONFIG_FILE.value:
    try:
      models = rest_api.read_model_config_file(_MODEL_CONFIG_FILE.value)
    except (OSError, ValueError) as e:
      sys.exit(f'serve.py: error: {e}')
  else:
    base = os.path.abspath(_MODEL_BASE_PATH.value)
    problem = _base_path_problem(base)
    if problem:
      sys.exit(f'serve.py: error: --model_base_path={_MODEL_BASE_PATH.value}: {problem}')
    models = {_MODEL_NAME.value or os.path.basename(base.rstrip(os.sep)): base}
  _serve(models)


def _is_version(path):
  return os.path.basename(path).isdigit() and os.path.isfile(os.path.join(path, 'saved_model.pb'))


def _base_path_problem(base):
  """Why `base` is not a model's folder of numeric versions, or None.

  TF Serving waits for a version to appear in an empty model folder, and so does this server; a
  path that is a version itself, or a folder of models, would be waited on for ever (404s).
  """
  if not os.path.isdir(base):
    return 'no such folder'
  if _is_version(base):
    return (f'this is a version folder; serve its model folder: '
            f'--model_base_path={os.path.dirname(base)}')
  children = [os.path.join(base, c) for c in sorted(os.listdir(base))]
  if any(_is_version(c) for c in children):
    return None
  models = [c for c in children if os.path.isdir(c) and any(
      _is_version(os.path.join(c, v)) for v in os.listdir(c))]
  if models:
    return (f'no numeric version folder here, but {len(models)} model folder(s) are: serve one, '
            f'e.g. --model_base_path={models[0]}, or several with --model_config_file')
  return None


def _serve(models):
  """Serves {name: model base path} until interrupted."""
  application = rest_api.ServingApp(models, _MAX_BODY_BYTES.value, _MAX_ROWS.value)
  for name, model in application.models.items():
    found = model.versions()
    print(f'{name}: {model.base_path} versions {found or "none yet (waiting for one)"}')
  server = werkzeug_serving.make_server(_HOST.value, _PORT.value, application, threaded=True)
  for name in models:
    print(f'Serving http://{_HOST.value}:{server.server_port}/v1/models/{name}', flush=True)
  print('Ready (Ctrl-C stops).', flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass


if __name__ == '__main__':
  app.run(main)
