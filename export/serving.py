"""TensorFlow Serving's REST API for exported quines, on werkzeug, so TF Serving clients work as is.

TF Serving itself cannot be installed here; this serves the same folders (`<base>/<name>/<N>/`
SavedModels) with the same URLs, JSON bodies and error JSON:

  GET  /v1/models/NAME[/versions/N]            version status
  GET  /v1/models/NAME[/versions/N]/metadata   signature defs (as TF Serving prints them)
  POST /v1/models/NAME[/versions/N]:predict    {"signature_name": ..., "instances": [...]} (rows)
                                               or {"inputs": ...} (columns)

The newest version is served by default; older ones stay addressable by /versions/N (TF Serving's
default policy would unload them). New versions are picked up when they appear. Bad requests get
`{"error": "..."}` with a 4xx status (TF Serving's codes: 400 invalid argument, 404 not found), and
the server goes on serving. Only `:predict` is supported: the quines export predict signatures.
"""

import json
import os
import re
import threading

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2
from werkzeug.wrappers import Request
from werkzeug.wrappers import Response

DEFAULT_MAX_BODY_BYTES = 64 << 20
_ROUTE = re.compile(r'^/v1/models/(?P<name>[^/:]+)'
                    r'(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?'
                    r'(?P<verb>:[A-Za-z]+|/metadata)?/?$')


class ServingError(Exception):
  """A request that cannot be served: an HTTP status and TF Serving's error message."""

  def __init__(self, status, message):
    super().__init__(message)
    self.status = status
    self.message = message


# --------------------------------------------------------------------------- servables


class Signature:
  """One signature of a loaded SavedModel: its function and input / output specs."""

  def __init__(self, function):
    self.function = function
    self.inputs = dict(function.structured_input_signature[1])
    self.outputs = dict(function.structured_outputs)

  def __call__(self, arrays):
    outputs = self.function(**{k: tf.constant(v) for k, v in arrays.items()})
    return {k: v.numpy() for k, v in outputs.items()}


class Servable:
  """A loaded version of a model."""

  def __init__(self, name, version, path):
    self.name = name
    self.version = version
    self.path = path
    self._loaded = tf.saved_model.load(path)
    self.signatures = {k: Signature(f) for k, f in self._loaded.signatures.items()}
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, 'saved_model.pb'), 'rb') as f:
      proto.ParseFromString(f.read())
    self.signature_defs = {
        k: json_format.MessageToDict(v, preserving_proto_field_name=True)
        for k, v in proto.meta_graphs[0].signature_def.items() if not k.startswith('__')}


class Model:
  """The versions of one model name under its base path, loaded when first asked for."""

  def __init__(self, name, base_path):
    self.name = name
    self.base_path = os.path.abspath(base_path)
    self._servables = {}
    self._lock = threading.Lock()

  def versions(self):
    """Numeric version folders holding a SavedModel, ascending (rescanned every call)."""
    if not os.path.isdir(self.base_path):
      return []
    return sorted(int(v) for v in os.listdir(self.base_path) if v.isdigit()
                  and os.path.exists(os.path.join(self.base_path, v, 'saved_model.pb')))

  def get(self, version=None):
    """The Servable of `version` (None: the newest).

    Raises:
      ServingError: 404 when there is no such version.
    """
    available = self.versions()
    if version is None:
      if not available:
        raise ServingError(404, f'Servable not found for request: Latest({self.name})')
      version = available[-1]
    elif version not in available:
      raise ServingError(404, f'Servable not found for request: Specific({self.name}, {version})')
    with self._lock:  # one load per version, even under concurrent first requests
      if version not in self._servables:
        self._servables[version] = Servable(
            self.name, version, os.path.join(self.base_path, str(version)))
      return self._servables[version]


# --------------------------------------------------------------------------- request bodies


def _tensor(value, spec, where):
  """A JSON value as a NumPy array of `spec`'s dtype and a compatible shape, or a 400."""
  try:
    array = np.asarray(value)
  except (ValueError, OverflowError) as e:
    raise ServingError(400, f'{where}: not a rectangular array of numbers ({e})') from e
  dtype = spec.dtype
  if array.size and array.dtype.kind not in ('iu' if dtype.is_integer else 'iuf'):
    got = ('mixed or ragged values' if array.dtype.kind == 'O'
           else f'values of type {array.dtype.name}')
    raise ServingError(400, f'{where}: {got} are not of expected type {dtype.name}')
  if dtype.is_integer and array.size and array.dtype.kind in 'iu' and (
      array.min() < dtype.min or array.max() > dtype.max):
    raise ServingError(400, f'{where}: values out of range of {dtype.name}')
  if not spec.shape.is_compatible_with(array.shape):
    raise ServingError(400, f'{where}: shape {list(array.shape)} does not match the signature\'s '
                       f'{[-1 if d is None else d for d in spec.shape.as_list()]}')
  return array.astype(dtype.as_numpy_dtype)


def _row_inputs(instances, signature):
  """Row format: a list of instances, each a value (one input) or a dict of inputs."""
  if not isinstance(instances, list):
    raise ServingError(400, "'instances' must be a list")
  names = list(signature.inputs)
  if not names:
    raise ServingError(400, 'this signature takes no inputs: send {"inputs": {}} (columnar)')
  if not instances:
    raise ServingError(400, "'instances' is empty")
  if all(isinstance(x, dict) for x in instances):
    columns = {}
    for name in names:
      if any(name not in x for x in instances):
        raise ServingError(400, f"Failed to process element: instances lack input '{name}'")
      columns[name] = [x[name] for x in instances]
    extra = {k for x in instances for k in x} - set(names)
    if extra:
      raise ServingError(400, f'unknown inputs {sorted(extra)}; the signature takes {names}')
  elif len(names) == 1 and not any(isinstance(x, dict) for x in instances):
    columns = {names[0]: instances}
  else:
    raise ServingError(400, f'instances must be objects with keys {names}')
  return {k: _tensor(v, signature.inputs[k], f"'instances' input '{k}'")
          for k, v in columns.items()}


def _column_inputs(inputs, signature):
  """Columnar format: one value (one input) or a dict input name -> value."""
  names = list(signature.inputs)
  if isinstance(inputs, dict) and (set(inputs) <= set(names) or not names):
    if set(inputs) != set(names):
      raise ServingError(400, f'inputs {sorted(inputs)} do not match the signature\'s {names}')
    return {k: _tensor(v, signature.inputs[k], f"'inputs' input '{k}'") for k, v in
            inputs.items()}
  if isinstance(inputs, dict):
    raise ServingError(400, f'unknown inputs {sorted(set(inputs) - set(names))}; the signature '
                       f'takes {names}')
  if len(names) != 1:
    raise ServingError(400, f'the signature takes {len(names)} inputs {names}: send an object')
  return {names[0]: _tensor(inputs, signature.inputs[names[0]], "'inputs'")}


def _op_error_message(error):
  """The informative line of a TensorFlow op error (not 'Graph execution error:' or stacks)."""
  lines = [line.strip() for line in error.message.splitlines() if line.strip()]
  useful = [line for line in lines if not line.startswith(
      ('Graph execution error', 'Detected at node', '<stack', '[[', 'File '))]
  return useful[0] if useful else lines[-1] if lines else type(error).__name__


def predict(servable, body):
  """Runs a :predict request body (parsed JSON) and returns the response object."""
  if not isinstance(body, dict):
    raise ServingError(400, 'the request body must be a JSON object')
  name = body.get('signature_name', 'serving_default')
  if not isinstance(name, str) or name not in servable.signatures:
    raise ServingError(400, f'Serving signature name: "{name}" not found in signature def '
                       f'(signatures: {sorted(servable.signatures)})')
  signature = servable.signatures[name]
  if ('instances' in body) == ('inputs' in body):
    raise ServingError(400, "Missing 'inputs' or 'instances' key" if 'inputs' not in body else
                       "Specify either 'instances' or 'inputs', not both")
  row = 'instances' in body
  arrays = (_row_inputs(body['instances'], signature) if row
            else _column_inputs(body['inputs'], signature))
  try:
    outputs = signature(arrays)
  except tf.errors.InvalidArgumentError as e:
    raise ServingError(400, _op_error_message(e)) from e
  except (ValueError, TypeError) as e:
    raise ServingError(400, str(e).strip().splitlines()[0]) from e
  if not row:
    values = {k: v.tolist() for k, v in outputs.items()}
    return {'outputs': next(iter(values.values())) if len(values) == 1 else values}
  batch = len(body['instances'])
  for k, v in outputs.items():
    if v.ndim == 0 or v.shape[0] != batch:
      raise ServingError(400, f'output {k!r} has shape {list(v.shape)}, not a batch of {batch}: '
                         'use the columnar format ("inputs")')
  if len(outputs) == 1:
    return {'predictions': next(iter(outputs.values())).tolist()}
  lists = {k: v.tolist() for k, v in outputs.items()}
  return {'predictions': [{k: lists[k][i] for k in lists} for i in range(batch)]}


# --------------------------------------------------------------------------- the WSGI app


def _json(status, obj):
  return Response(json.dumps(obj), status=status, mimetype='application/json')


class ServingApp:
  """The WSGI application: models by name, TF Serving's REST routes."""

  def __init__(self, models, max_body_bytes=DEFAULT_MAX_BODY_BYTES):
    """Args: models: dict name -> base path (the folder of numeric versions); max_body_bytes."""
    self.models = {name: Model(name, path) for name, path in models.items()}
    self.max_body_bytes = max_body_bytes

  def _model(self, name):
    if name not in self.models:
      raise ServingError(404, f'Servable not found for request: Latest({name}) '
                         f'(models: {sorted(self.models)})')
    return self.models[name]

  def _status(self, model, version):
    versions = [version] if version is not None else model.versions()
    if version is not None:
      model.get(version)
    elif not versions:
      raise ServingError(404, f'Could not find any versions of model {model.name}')
    return {'model_version_status': [
        {'version': str(v), 'state': 'AVAILABLE',
         'status': {'error_code': 'OK', 'error_message': ''}} for v in reversed(versions)]}

  def _body(self, request):
    length = request.content_length
    if length is not None and length > self.max_body_bytes:
      raise ServingError(413, f'request body of {length} bytes exceeds the limit of '
                         f'{self.max_body_bytes}')
    data = request.stream.read(self.max_body_bytes + 1)
    if len(data) > self.max_body_bytes:
      raise ServingError(413, f'request body exceeds the limit of {self.max_body_bytes} bytes')
    try:
      return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise ServingError(400, f'JSON Parse error: {e}') from e

  def handle(self, request):
    match = _ROUTE.match(request.path)
    if not match:
      raise ServingError(404, f'Malformed request: {request.method} {request.path}')
    if match['label']:
      raise ServingError(400, 'version labels are not supported by this server: use '
                         '/versions/N')
    version = None
    if match['version'] is not None:
      if not match['version'].isdigit():
        raise ServingError(400, f'version {match["version"]!r} is not a number')
      version = int(match['version'])
    model = self._model(match['name'])
    verb = match['verb']
    if verb in (None, '/metadata'):
      if request.method != 'GET':
        raise ServingError(405, f'{request.method} is not allowed here: use GET')
      if verb is None:
        return self._status(model, version)
      servable = model.get(version)
      return {'model_spec': {'name': model.name, 'signature_name': '',
                             'version': str(servable.version)},
              'metadata': {'signature_def': {'signature_def': servable.signature_defs}}}
    if verb != ':predict':
      raise ServingError(400, f'{verb} is not supported: the quines export predict signatures '
                         '(use :predict)')
    if request.method != 'POST':
      raise ServingError(405, f'{request.method} is not allowed here: use POST')
    body = self._body(request)
    return predict(model.get(version), body)

  def __call__(self, environ, start_response):
    request = Request(environ)
    try:
      response = _json(200, self.handle(request))
    except ServingError as e:
      response = _json(e.status, {'error': e.message})
    except Exception as e:  # pylint: disable=broad-except  (the server must keep serving)
      response = _json(500, {'error': f'{type(e).__name__}: {e}'})
    return response(environ, start_response)


# --------------------------------------------------------------------------- configuration


def _tokens(text):
  text = re.sub(r'#[^\n]*', '', text)
  return re.findall(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|[{}:]|[^\s{}:"\']+', text)


def _parse_text_proto(tokens, i=0):
  """A tiny text-format parser: returns (dict field -> list of values, next index)."""
  fields = {}
  while i < len(tokens) and tokens[i] != '}':
    key = tokens[i]
    i += 1
    if i < len(tokens) and tokens[i] == ':':
      i += 1
    if i < len(tokens) and tokens[i] == '{':
      value, i = _parse_text_proto(tokens, i + 1)
      i += 1  # the closing brace
    else:
      value = tokens[i]
      if value[:1] in ('"', "'"):
        value = value[1:-1]
      i += 1
    fields.setdefault(key, []).append(value)
  return fields, i


def read_model_config_file(path):
  """Models from a TF Serving model config file (text protobuf): dict name -> base path.

  Understood: model_config_list { config { name: '...' base_path: '...' } ... }; other fields
  (model_platform, model_version_policy) are ignored. Relative base paths are taken from the
  config file's folder.

  Raises:
    ValueError: the file names no models.
  """
  with open(path) as f:
    fields, _ = _parse_text_proto(_tokens(f.read()))
  models = {}
  for config_list in fields.get('model_config_list', []):
    for config in config_list.get('config', []):
      if 'name' not in config or 'base_path' not in config:
        raise ValueError(f'{path}: a config lacks name or base_path: {config}')
      base = config['base_path'][0]
      models[config['name'][0]] = os.path.join(os.path.dirname(os.path.abspath(path)), base)
  if not models:
    raise ValueError(f'{path}: no model_config_list {{ config {{ name: ... base_path: ... }} }}')
  return models
