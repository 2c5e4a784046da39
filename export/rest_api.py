"""TensorFlow Serving's REST API for exported quines, on werkzeug, so TF Serving clients work as is.

TF Serving itself cannot be installed here; this serves the same folders (`<base>/<name>/<N>/`
SavedModels) with the same URLs, JSON bodies and error JSON:

  GET  /v1/models/NAME[/versions/N]            version status
  GET  /v1/models/NAME[/versions/N]/metadata   signature defs (as TF Serving prints them)
  POST /v1/models/NAME[/versions/N]:predict    {"signature_name": ..., "instances": [...]} (rows)
                                               or {"inputs": ...} (columns)

The newest version that loads is served by default; older ones stay addressable by /versions/N
(TF Serving's default policy would unload them). New versions are picked up when they appear. A
version folder that fails to load (half copied, truncated) is reported in the model status as TF
Serving reports it (state END, the error in its status), is never chosen by default, and is tried
again once its files change. Bad requests get `{"error": "..."}` with a 4xx status (TF Serving's
codes: 400 invalid argument, 404 not found), and the server goes on serving. A request holds at
most `max_rows` coordinates or images, evaluated `chunk_rows` at a time, so that its memory is
bounded. Only `:predict` is supported: the quines export predict signatures.
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
# Rows (coordinates or images) per request. A row costs about 150 bytes of parsed JSON, arrays and
# response text, so 2**20 rows stay near 150 MB per request (measured: docs/EXPORT.md), well within
# a 24 GiB machine even with dozens of such requests at once; the signatures run on bounded
# chunks, so a quine's width does not multiply that.
DEFAULT_MAX_ROWS = 1 << 20
DEFAULT_CHUNK_ROWS = 1 << 14
_ERROR_CODES = {getattr(tf.errors, name): name for name in (
    'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND',
    'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED',
    'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED')}
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

  def _run(self, arrays):
    outputs = self.function(**{k: tf.constant(v) for k, v in arrays.items()})
    return {k: v.numpy() for k, v in outputs.items()}

  def __call__(self, arrays, chunk_rows=DEFAULT_CHUNK_ROWS):
    """Runs the signature, `chunk_rows` rows at a time when every input is a batch of rows.

    Args:
      arrays: dict input name -> NumPy array.
      chunk_rows: largest batch given to the function at once (bounds its intermediate tensors).

    Returns:
      dict output name -> NumPy array, the chunks' outputs concatenated.
    """
    rows = {a.shape[0] if a.ndim else None for a in arrays.values()}
    batched = all(spec.shape.rank and spec.shape[0] is None for spec in self.inputs.values())
    if not arrays or not batched or len(rows) != 1 or rows == {None} or max(rows) <= chunk_rows:
      return self._run(arrays)
    n = rows.pop()
    parts = []
    for start in range(0, n, chunk_rows):
      part = self._run({k: v[start:start + chunk_rows] for k, v in arrays.items()})
      size = min(chunk_rows, n - start)
      if any(v.ndim == 0 or v.shape[0] != size for v in part.values()):
        return self._run(arrays)  # not a row-wise signature: it needs the whole batch at once
      parts.append(part)
    return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


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


class LoadFailure:
  """Why a version folder did not load, and what its files were then (to retry once they change)."""

  def __init__(self, error, files):
    self.files = files
    self.error_code = (_ERROR_CODES.get(error.error_code, 'UNKNOWN')
                       if isinstance(error, tf.errors.OpError)
                       else 'NOT_FOUND' if isinstance(error, FileNotFoundError) else 'UNKNOWN')
    text = error.message if isinstance(error, tf.errors.OpError) else str(error)
    first = next((line.strip() for line in text.splitlines() if line.strip()), '')
    self.message = f'{type(error).__name__}: {first}'[:500]


def _files(path):
  """(relative path, size, mtime) of every file under `path`: changes when a copy progresses."""
  found = []
  for folder, _, names in os.walk(path):
    for name in names:
      try:
        stat = os.stat(os.path.join(folder, name))
      except OSError:
        continue
      found.append((os.path.relpath(os.path.join(folder, name), path), stat.st_size,
                    stat.st_mtime_ns))
  return tuple(sorted(found))


class Model:
  """The versions of one model name under its base path, loaded when first asked for."""

  def __init__(self, name, base_path):
    self.name = name
    self.base_path = os.path.abspath(base_path)
    self._servables = {}
    self._failures = {}
    self._lock = threading.Lock()

  def versions(self):
    """Numeric version folders holding a SavedModel, ascending (rescanned every call)."""
    if not os.path.isdir(self.base_path):
      return []
    return sorted(int(v) for v in os.listdir(self.base_path) if v.isdigit()
                  and os.path.exists(os.path.join(self.base_path, v, 'saved_model.pb')))

  def _load(self, version):
    """The Servable of `version`, or the LoadFailure of its current files (loaded at most once)."""
    path = os.path.join(self.base_path, str(version))
    with self._lock:  # one load per version, even under concurrent first requests
      if version in self._servables:
        return self._servables[version]
      failure = self._failures.get(version)
      files = _files(path)
      if failure is not None and failure.files == files:
        return failure
      try:
        self._servables[version] = Servable(self.name, version, path)
      except Exception as error:  # pylint: disable=broad-except  (any damage: reported, not raised)
        self._failures[version] = LoadFailure(error, files)
        return self._failures[version]
      self._failures.pop(version, None)
      return self._servables[version]

  def status(self, version=None):
    """TF Serving's model_version_status entries, newest first (loads the versions to know).

    Raises:
      ServingError: 404 when there is no such version, or no version at all.
    """
    available = self.versions()
    if version is not None and version not in available:
      raise ServingError(404, f'Servable not found for request: Specific({self.name}, {version})')
    if not available:
      raise ServingError(404, f'Could not find any versions of model {self.name}')
    entries = []
    for v in reversed([version] if version is not None else available):
      loaded = self._load(v)
      if isinstance(loaded, LoadFailure):
        entries.append({'version': str(v), 'state': 'END', 'status': {
            'error_code': loaded.error_code, 'error_message': loaded.message}})
      else:
        entries.append({'version': str(v), 'state': 'AVAILABLE',
                        'status': {'error_code': 'OK', 'error_message': ''}})
    return {'model_version_status': entries}

  def get(self, version=None):
    """The Servable of `version` (None: the newest version that loads).

    Raises:
      ServingError: 404 when there is no such version, or it (or every version) fails to load.
    """
    available = self.versions()
    if version is not None:
      if version not in available:
        raise ServingError(404, f'Servable not found for request: Specific({self.name}, '
                           f'{version})')
      loaded = self._load(version)
      if isinstance(loaded, LoadFailure):
        raise ServingError(404, f'Servable not found for request: Specific({self.name}, '
                           f'{version}): version {version} failed to load: {loaded.message}')
      return loaded
    failed = []
    for v in reversed(available):
      loaded = self._load(v)
      if not isinstance(loaded, LoadFailure):
        return loaded
      failed.append(v)
    why = f' (versions {failed} failed to load)' if failed else ''
    raise ServingError(404, f'Servable not found for request: Latest({self.name}){why}')


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


def _check_rows(value, where, max_rows):
  """Refuses a batch of more than `max_rows` rows before it is converted or evaluated."""
  if max_rows is not None and isinstance(value, list) and len(value) > max_rows:
    raise ServingError(400, f'{where}: {len(value)} rows (coordinates or images) exceed this '
                       f'server\'s limit of {max_rows} per request (--max_rows_per_request); '
                       'split the request')


def _row_inputs(instances, signature, max_rows=None):
  """Row format: a list of instances, each a value (one input) or a dict of inputs."""
  if not isinstance(instances, list):
    raise ServingError(400, "'instances' must be a list")
  names = list(signature.inputs)
  if not names:
    raise ServingError(400, 'this signature takes no inputs: send {"inputs": {}} (columnar)')
  if not instances:
    raise ServingError(400, "'instances' is empty")
  _check_rows(instances, "'instances'", max_rows)
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


def _column_inputs(inputs, signature, max_rows=None):
  """Columnar format: one value (one input) or a dict input name -> value."""
  names = list(signature.inputs)
  if isinstance(inputs, dict) and (set(inputs) <= set(names) or not names):
    if set(inputs) != set(names):
      raise ServingError(400, f'inputs {sorted(inputs)} do not match the signature\'s {names}')
    for k, v in inputs.items():
      _check_rows(v, f"'inputs' input '{k}'", max_rows)
    return {k: _tensor(v, signature.inputs[k], f"'inputs' input '{k}'") for k, v in
            inputs.items()}
  if isinstance(inputs, dict):
    raise ServingError(400, f'unknown inputs {sorted(set(inputs) - set(names))}; the signature '
                       f'takes {names}')
  if len(names) != 1:
    raise ServingError(400, f'the signature takes {len(names)} inputs {names}: send an object')
  _check_rows(inputs, "'inputs'", max_rows)
  return {names[0]: _tensor(inputs, signature.inputs[names[0]], "'inputs'")}


def _op_error_message(error):
  """The informative line of a TensorFlow op error (not 'Graph execution error:' or stacks)."""
  lines = [line.strip() for line in error.message.splitlines() if line.strip()]
  useful = [line for line in lines if not line.startswith(
      ('Graph execution error', 'Detected at node', '<stack', '[[', 'File '))]
  line = useful[0] if useful else lines[-1] if lines else type(error).__name__
  # A graph assertion reads 'assertion failed: [message] [Condition x == y ...] [x ...] ...':
  # the message is what the caller needs.
  match = re.match(r'assertion failed: \[(.*?)\](?: \[|$)', line)
  return match.group(1) if match else line


def predict(servable, body, max_rows=DEFAULT_MAX_ROWS, chunk_rows=DEFAULT_CHUNK_ROWS):
  """Runs a :predict request body (parsed JSON) and returns the response object.

  Args:
    servable: the loaded version to run.
    body: the parsed JSON body.
    max_rows: most rows (coordinates or images) of an input in one request; None: no limit.
    chunk_rows: rows evaluated at once.

  Returns:
    TF Serving's response object ({"predictions": ...} or {"outputs": ...}).

  Raises:
    ServingError: a request that cannot be served (its status and message).
  """
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
  arrays = (_row_inputs(body['instances'], signature, max_rows) if row
            else _column_inputs(body['inputs'], signature, max_rows))
  try:
    outputs = signature(arrays, chunk_rows)
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

  def __init__(self, models, max_body_bytes=DEFAULT_MAX_BODY_BYTES, max_rows=DEFAULT_MAX_ROWS,
               chunk_rows=DEFAULT_CHUNK_ROWS):
    """Makes the application.

    Args:
      models: dict name -> base path (the folder of numeric versions).
      max_body_bytes: larger request bodies get a 413.
      max_rows: most coordinates or images in one request (more get a 400); None: no limit.
      chunk_rows: rows given to a signature at once.
    """
    self.models = {name: Model(name, path) for name, path in models.items()}
    self.max_body_bytes = max_body_bytes
    self.max_rows = max_rows
    self.chunk_rows = chunk_rows

  def _model(self, name):
    if name not in self.models:
      raise ServingError(404, f'Servable not found for request: Latest({name}) '
                         f'(models: {sorted(self.models)})')
    return self.models[name]

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
    except RecursionError as e:  # Python's parser recurses once per nesting level
      raise ServingError(400, 'JSON Parse error: nested too deeply') from e

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
        return model.status(version)
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
    return predict(model.get(version), body, self.max_rows, self.chunk_rows)

  def __call__(self, environ, start_response):
    request = Request(environ)
    try:
      response = _json(200, self.handle(request))
    except ServingError as e:
      response = _json(e.status, {'error': e.message})
    except RecursionError:  # a parsed body deep enough to exhaust the stack of what reads it
      response = _json(400, {'error': 'the request is nested too deeply'})
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
