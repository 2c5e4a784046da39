"""Framework-neutral weight dumps of a quine, written and read with NumPy alone.

A dump is a folder (an export version folder, or one generation of a lineage) holding

  manifest.json        what another framework needs to rebuild the forward pass: architecture,
                       activations, layer order and kernel layout, the canonical weight order,
                       the fixed random projections, the ONNX interface, provenance, file hashes;
  weights.safetensors  the weights theta, one tensor per layer, in canonical order (the file's
                       data block is theta itself, float32 little-endian);
  model.onnx           an ONNX graph (opset 18) from coordinates (and images) to predictions, whose
                       weight initializers carry the canonical names.

The fixed random projections are not part of theta. They are a documented generator
(`projection_rows`, MurmurHash3's finaliser on uint32, reproducible bit-for-bit in any framework);
where the ONNX graph holds one as a table it is a separate initializer named 'projection/...'.

`read_dump` rejects a dump whose files are missing or truncated, whose manifest does not match the
weights, or whose ONNX initializers disagree with the safetensors file, with a message naming the
file and the problem. The ONNX check needs the `onnx` package; everything else needs only NumPy.
"""

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import struct
import tempfile

import numpy as np

FORMAT = 'quine-zoo-dump'
FORMAT_VERSION = 1
MANIFEST_FILE = 'manifest.json'
WEIGHTS_FILE = 'weights.safetensors'
ONNX_FILE = 'model.onnx'
ONNX_OPSET = 18  # BitwiseXor, needed when the graph hashes the projection itself, is opset 18
# Projections up to this many entries are tables (as models.projection.Projection does).
MAX_TABLE_ENTRIES = 1 << 24

GENERATOR = 'fmix32-uniform-v1'
GOLDEN = 0x9E3779B9
COLUMN_MUL = 0x85EBCA77
COLUMN_ADD = 0x165667B1
GENERATOR_DEFINITION = [
    'All integer arithmetic on uint32, wrapping modulo 2**32.',
    'fmix32(h): h ^= h >> 16; h *= 0x85EBCA6B; h ^= h >> 13; h *= 0xC2B2AE35; h ^= h >> 16',
    'key = fmix32(seed ^ 0x9E3779B9)',
    'r = fmix32(row ^ key)',
    'h = fmix32(r ^ (column * 0x85EBCA77 + 0x165667B1))',
    'value = (float32(h >> 8) * 2**-23 - 1) * float32(std * sqrt(3))   # float32 arithmetic',
    'The first two float32 operations are exact, the last one rounds once: every framework gets '
    'the same bits.',
]

ACTIVATION_DEFINITIONS = {
    'selu': 'scale * (x if x > 0 else alpha * (exp(x) - 1)), alpha = 1.6732632423543772848170429916'
            '717, scale = 1.0507009873554804934193349852946 (tf.nn.selu, torch.nn.functional.selu)',
    'relu': 'max(x, 0)',
    'tanh': 'tanh(x)',
    'linear': 'x',
}

# The ONNX interface every dump's model.onnx has (names are API, like Keras layer names).
ONNX_COORDINATES = 'coordinates'
ONNX_IMAGES = 'images'
ONNX_PREDICTED_WEIGHTS = 'predicted_weights'
ONNX_LOGITS = 'logits'
ONNX_PROBABILITIES = 'probabilities'
ONNX_PROJECTION_PREFIX = 'projection/'

_SAFETENSORS_DTYPES = {'F32': '<f4', 'F64': '<f8', 'F16': '<f2', 'I64': '<i8', 'I32': '<i4',
                       'I16': '<i2', 'I8': 'i1', 'U8': 'u1', 'BOOL': '?'}


class DumpError(ValueError):
  """A dump cannot be used; the message names the file and the problem."""


# --------------------------------------------------------------------------- the generator


def fmix32(h):
  """MurmurHash3's 32-bit finaliser on uint32 arrays (wrapping arithmetic)."""
  h = np.array(h, np.uint32)  # a copy: the caller's array is not changed in place
  h ^= h >> np.uint32(16)
  h *= np.uint32(0x85EBCA6B)
  h ^= h >> np.uint32(13)
  h *= np.uint32(0xC2B2AE35)
  h ^= h >> np.uint32(16)
  return h


def projection_rows(seed, rows, num_columns, std):
  """Rows of a fixed random projection, bit-for-bit `models.projection.numpy_projection`.

  Kept here, free of TensorFlow, so that a dump can be read and replicated with NumPy alone.

  Args:
    seed: non-negative integer below 2**32 naming the projection.
    rows: integer array of row indices, each below 2**32.
    num_columns: number of columns.
    std: standard deviation of the entries.

  Returns:
    A float32 array [len(rows), num_columns].
  """
  with np.errstate(over='ignore'):
    key = fmix32(np.uint32(seed) ^ np.uint32(GOLDEN))
    r = fmix32(np.asarray(rows, np.uint32).reshape(-1) ^ key)
    cols = np.arange(num_columns, dtype=np.uint32) * np.uint32(COLUMN_MUL) + np.uint32(COLUMN_ADD)
    h = fmix32(r[:, None] ^ cols[None, :])
  unit = (h >> np.uint32(8)).astype(np.float32) * np.float32(2.0**-23) - np.float32(1.0)
  return unit * np.float32(std * math.sqrt(3.0))


# --------------------------------------------------------------------------- architecture


def _get(config, name):
  if name not in config:
    raise DumpError(f'model config has no field {name!r}')
  return config[name]


def coordinate_units(config):
  """Units fed by the coordinate projection: all of them for a vanilla quine."""
  if config['kind'] == 'auxiliary':
    return int(_get(config, 'coordinate_units'))
  return int(_get(config, 'width'))


def canonical_weights(config):
  """[(name, shape)] of theta's tensors in canonical order, implied by a ModelConfig dict."""
  width = int(_get(config, 'width'))
  shapes = [(f'hidden_{i + 1}', (width, width)) for i in range(int(_get(config, 'num_hidden')))]
  shapes.append(('weight_head', (width, 1)))
  if _get(config, 'kind') == 'auxiliary':
    shapes.append(('class_head', (width, int(_get(config, 'num_classes')))))
  return shapes


def num_weights(config):
  return sum(int(np.prod(shape)) for _, shape in canonical_weights(config))


def projection_specs(config):
  """The fixed projections a quine of this config uses, as manifest entries."""
  units = coordinate_units(config)
  n = num_weights(config)
  specs = {'coordinate': {
      'generator': GENERATOR, 'seed': int(config['projection_seed']), 'num_rows': n,
      'num_columns': units, 'std': float(config['projection_std']),
      'feeds': f'hidden units [0, {units}) of the first layer input',
      'onnx_initializer': (ONNX_PROJECTION_PREFIX + 'coordinate'
                           if n * units <= MAX_TABLE_ENTRIES else None)}}
  if config['kind'] == 'auxiliary':
    width = int(config['width'])
    specs['image'] = {
        'generator': GENERATOR, 'seed': int(config['projection_seed']) + 1,
        'num_rows': int(config['image_size']), 'num_columns': width - units,
        'std': float(config['image_projection_std']),
        'feeds': f'hidden units [{units}, {width}) of the first layer input (images @ matrix)',
        'onnx_initializer': ONNX_PROJECTION_PREFIX + 'image'}
  return specs


def _architecture(config):
  act, out_act = config['activation'], config['output_activation']
  hidden = [name for name, _ in canonical_weights(config) if name.startswith('hidden_')]
  trunk = [f'h = {act}(h @ {name})' for name in hidden]
  arch = {
      'kind': config['kind'],
      'kernel_layout': '[in, out], row-major (C order); a layer computes y = x @ kernel; no biases',
      'layers': ([{'name': name, 'shape': list(shape), 'activation': act}
                  for name, shape in canonical_weights(config) if name.startswith('hidden_')]
                 + [{'name': 'weight_head', 'shape': [int(config['width']), 1],
                     'activation': out_act}]),
      'activations': {name: ACTIVATION_DEFINITIONS[name] for name in sorted({act, out_act})},
  }
  if config['kind'] == 'auxiliary':
    units, width = coordinate_units(config), int(config['width'])
    arch['layers'].append({'name': 'class_head', 'shape': [width, int(config['num_classes'])],
                           'activation': 'none; logits = (h @ class_head) / temperature',
                           'temperature': float(config['temperature'])})
    arch['predict_weights'] = [
        f'h = concat([P_coordinate[c], zeros([B, {width - units}])], axis=1)  # zero image',
        *trunk, f'predicted_weights = {out_act}(h @ weight_head)[:, 0]']
    arch['classify'] = [
        f'images: float32 [M, {config["image_size"]}] (pixels / 255, flattened row-major)',
        f'h = concat([zeros([M, {units}]), images @ P_image], axis=1)  # zero coordinate',
        *trunk, f'logits = (h @ class_head) / {float(config["temperature"])!r}',
        'probabilities = softmax(logits, axis=1)']
  else:
    arch['predict_weights'] = ['h = P_coordinate[c]  # [B, width]', *trunk,
                               f'predicted_weights = {out_act}(h @ weight_head)[:, 0]']
  return arch


def onnx_interface(config):
  """The inputs, outputs and initializer names of a dump's model.onnx."""
  specs = projection_specs(config)
  inputs = {ONNX_COORDINATES: 'int64 [B], each in [0, num_weights)'}
  outputs = {ONNX_PREDICTED_WEIGHTS: 'float32 [B]'}
  if config['kind'] == 'auxiliary':
    inputs[ONNX_IMAGES] = (f'float32 [M, {config["image_size"]}]; feed M = 0 (or B = 0 '
                           'coordinates) to run one head only')
    outputs[ONNX_LOGITS] = f'float32 [M, {config["num_classes"]}]'
    outputs[ONNX_PROBABILITIES] = f'float32 [M, {config["num_classes"]}]'
  coordinate = specs['coordinate']['onnx_initializer']
  return {
      'file': ONNX_FILE, 'opset': ONNX_OPSET, 'inputs': inputs, 'outputs': outputs,
      'weight_initializers': {name: name for name, _ in canonical_weights(config)},
      'projection_initializers': {k: v['onnx_initializer'] for k, v in specs.items()
                                  if v['onnx_initializer']},
      'coordinate_projection': ('table initializer + Gather' if coordinate else
                                'computed in the graph by the generator (uint32 ops)'),
  }


# --------------------------------------------------------------------------- safetensors


def encode_safetensors(tensors, metadata=None):
  """The safetensors bytes of `tensors` (a dict, kept in its order); NumPy only.

  Args:
    tensors: dict name -> NumPy array.
    metadata: optional dict of strings stored as `__metadata__`.

  Returns:
    bytes.
  """
  codes = {np.dtype(v): k for k, v in _SAFETENSORS_DTYPES.items()}
  header = {'__metadata__': dict(metadata)} if metadata else {}
  blobs, offset = [], 0
  for name, array in tensors.items():
    array = np.ascontiguousarray(array)
    dtype = array.dtype.newbyteorder('<') if array.dtype.itemsize > 1 else array.dtype
    if dtype not in codes:
      raise ValueError(f'{name}: dtype {array.dtype} has no safetensors code')
    blob = array.astype(dtype, copy=False).tobytes()
    header[name] = {'dtype': codes[dtype], 'shape': list(array.shape),
                    'data_offsets': [offset, offset + len(blob)]}
    blobs.append(blob)
    offset += len(blob)
  text = json.dumps(header, separators=(',', ':')).encode('utf-8')
  text += b' ' * (-len(text) % 8)
  return struct.pack('<Q', len(text)) + text + b''.join(blobs)


def decode_safetensors(data, where='safetensors'):
  """Parses safetensors bytes; NumPy only.

  Args:
    data: the file's bytes.
    where: the file's name, for messages.

  Returns:
    (dict name -> array in the file's header order, metadata dict).

  Raises:
    DumpError: the bytes are truncated or not a safetensors file.
  """
  if len(data) < 8:
    raise DumpError(f'{where}: {len(data)} bytes: truncated (no header)')
  (size,) = struct.unpack('<Q', data[:8])
  if size > len(data) - 8:
    raise DumpError(f'{where}: header of {size} bytes but the file has {len(data)}: truncated')
  try:
    header = json.loads(data[8:8 + size].decode('utf-8'))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DumpError(f'{where}: header is not JSON ({e}): not a safetensors file') from e
  if not isinstance(header, dict):
    raise DumpError(f'{where}: header is not a JSON object: not a safetensors file')
  metadata = header.pop('__metadata__', None) or {}
  buffer = memoryview(data)[8 + size:]
  tensors, end = {}, 0
  for name, info in header.items():
    try:
      dtype = np.dtype(_SAFETENSORS_DTYPES[info['dtype']])
      shape = tuple(int(d) for d in info['shape'])
      begin, stop = (int(x) for x in info['data_offsets'])
    except (KeyError, TypeError, ValueError) as e:
      raise DumpError(f'{where}: bad header entry for {name!r}: {info!r}') from e
    if stop - begin != int(np.prod(shape)) * dtype.itemsize or begin < 0:
      raise DumpError(f'{where}: tensor {name!r} spans bytes [{begin}, {stop}), which does not '
                      f'fit its shape {list(shape)} of {info["dtype"]}')
    if stop > len(buffer):
      raise DumpError(f'{where}: tensor {name!r} ends at byte {stop} of the data block but the '
                      f'file has {len(buffer)}: truncated')
    tensors[name] = np.frombuffer(buffer[begin:stop], dtype).reshape(shape).astype(
        dtype.newbyteorder('='))
    end = max(end, stop)
  if end != len(buffer):
    raise DumpError(f'{where}: {len(buffer) - end} bytes after the last tensor')
  return tensors, metadata


# --------------------------------------------------------------------------- writing


def sha256_file(path):
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def _write_bytes(path, data):
  with open(path, 'wb') as f:
    f.write(data)


@contextlib.contextmanager
def atomic_directory(path, overwrite=False):
  """Yields a temporary folder that becomes `path` only when the block finishes without error.

  The temporary folder is a hidden sibling (TF Serving ignores non-numeric names). An existing
  `path` is replaced only if `overwrite`; it is moved aside first and deleted after the rename.

  Args:
    path: the final folder.
    overwrite: replace an existing `path`.

  Yields:
    The temporary folder to fill.

  Raises:
    FileExistsError: `path` exists and overwrite is False.
  """
  path = os.path.abspath(path)
  parent, base = os.path.split(path)
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f'{path} already exists (pass overwrite to replace it)')
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{base}.tmp-', dir=parent)
  os.chmod(tmp, 0o755)
  try:
    yield tmp
    if os.path.exists(path):
      if not overwrite:
        raise FileExistsError(f'{path} appeared while it was being written; not replaced')
      old = tempfile.mkdtemp(prefix=f'.{base}.old-', dir=parent)
      os.rmdir(old)
      os.rename(path, old)
      os.rename(tmp, path)
      shutil.rmtree(old, ignore_errors=True)
    else:
      try:
        os.rename(tmp, path)
      except OSError as e:  # created meanwhile by someone else
        raise FileExistsError(f'{path} appeared while it was being written; not replaced') from e
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def build_manifest(config, lineage=None, source=None):
  """The manifest of a dump of a quine with ModelConfig dict `config` (without `files`).

  Args:
    config: ModelConfig.to_dict() of the quine.
    lineage: dict with generation (0 = exported from training), parent, built_with.
    source: free-form provenance (workdir, checkpoint, export time, ...).

  Returns:
    A JSON-serialisable dict.
  """
  config = dict(config)
  weights = canonical_weights(config)
  tensors, offset = [], 0
  for name, shape in weights:
    size = int(np.prod(shape))
    tensors.append({'name': name, 'shape': list(shape), 'offset': offset, 'size': size})
    offset += size
  return {
      'format': FORMAT,
      'format_version': FORMAT_VERSION,
      'model': {'kind': config['kind'], 'num_weights': offset, 'config': config},
      'architecture': _architecture(config),
      'weights': {
          'file': WEIGHTS_FILE, 'dtype': 'float32', 'byte_order': 'little',
          'order': [name for name, _ in weights], 'tensors': tensors,
          'theta': 'concat([ravel(t) for t in order]) (C order); offset/size index theta',
      },
      'projections': {
          'note': 'fixed, not part of theta; reproduce with the generator or read the ONNX '
                  'initializer named in onnx_initializer',
          'generator': {'name': GENERATOR, 'definition': GENERATOR_DEFINITION},
          **projection_specs(config)},
      'onnx': onnx_interface(config),
      'lineage': dict(lineage or {'generation': 0, 'parent': None}),
      'source': dict(source or {}),
  }


def write_dump_files(directory, config, weights, onnx_bytes, lineage=None, source=None):
  """Writes a dump into an existing folder (the caller makes it atomic).

  Args:
    directory: the folder.
    config: ModelConfig dict.
    weights: dict name -> float32 array, or a flat theta [N] in canonical order.
    onnx_bytes: the serialised ONNX model whose initializers hold these weights.
    lineage: see build_manifest.
    source: see build_manifest.

  Returns:
    The manifest written.
  """
  manifest = build_manifest(config, lineage, source)
  weights = split_theta(config, weights) if not isinstance(weights, dict) else weights
  expected = canonical_weights(config)
  if [(n, tuple(np.shape(weights[n]))) for n, _ in expected if n in weights] != expected:
    raise ValueError(f'weights {[(k, np.shape(v)) for k, v in weights.items()]} do not match '
                     f'the config\'s {expected}')
  ordered = {name: np.asarray(weights[name], np.float32) for name, _ in expected}
  _write_bytes(os.path.join(directory, WEIGHTS_FILE), encode_safetensors(
      ordered, {'format': FORMAT, 'order': ','.join(ordered)}))
  _write_bytes(os.path.join(directory, ONNX_FILE), onnx_bytes)
  manifest['files'] = {
      name: {'bytes': os.path.getsize(os.path.join(directory, name)),
             'sha256': sha256_file(os.path.join(directory, name))}
      for name in (WEIGHTS_FILE, ONNX_FILE)}
  with open(os.path.join(directory, MANIFEST_FILE), 'w') as f:
    json.dump(manifest, f, indent=2)
    f.write('\n')
  return manifest


def write_dump(directory, config, weights, onnx_bytes, lineage=None, source=None,
               overwrite=False):
  """`write_dump_files` into a new folder, atomically; returns the manifest."""
  with atomic_directory(directory, overwrite) as tmp:
    return write_dump_files(tmp, config, weights, onnx_bytes, lineage, source)


def split_theta(config, theta):
  """A flat theta [N] as dict name -> array in canonical order."""
  theta = np.asarray(theta, np.float32).reshape(-1)
  n = num_weights(config)
  if theta.size != n:
    raise ValueError(f'theta has {theta.size} entries, the config implies {n}')
  out, offset = {}, 0
  for name, shape in canonical_weights(config):
    size = int(np.prod(shape))
    out[name] = theta[offset:offset + size].reshape(shape)
    offset += size
  return out


# --------------------------------------------------------------------------- reading


@dataclasses.dataclass(frozen=True)
class Dump:
  """A validated dump.

  Attributes:
    path: the folder.
    manifest: the parsed manifest.json.
    weights: dict name -> float32 array, in canonical order, as the safetensors file holds them.
  """
  path: str
  manifest: dict
  weights: dict

  @property
  def config(self):
    return self.manifest['model']['config']

  @property
  def kind(self):
    return self.config['kind']

  @property
  def num_weights(self):
    return self.manifest['model']['num_weights']

  @property
  def generation(self):
    return int(self.manifest.get('lineage', {}).get('generation', 0))

  @property
  def theta(self):
    """The flat weight vector [N] in canonical order."""
    return np.concatenate([w.reshape(-1) for w in self.weights.values()])

  @property
  def onnx_path(self):
    return os.path.join(self.path, ONNX_FILE)

  def projection(self, which, rows=None):
    """Rows (all when None) of the fixed projection `which` ('coordinate' or 'image')."""
    spec = self.manifest['projections'][which]
    if rows is None:
      rows = np.arange(spec['num_rows'])
    return projection_rows(spec['seed'], rows, spec['num_columns'], spec['std'])


def _fail(path, name, message):
  raise DumpError(f'{os.path.join(path, name)}: {message}')


def _read_manifest(path):
  if not os.path.isdir(path):
    raise DumpError(f'{path}: not a folder (a dump is a folder with {MANIFEST_FILE})')
  mpath = os.path.join(path, MANIFEST_FILE)
  if not os.path.exists(mpath):
    raise DumpError(f'{mpath}: missing: {path} is not a dump')
  try:
    with open(mpath, 'rb') as f:
      manifest = json.loads(f.read().decode('utf-8'))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DumpError(f'{mpath}: not valid JSON ({e}); truncated or damaged') from e
  if not isinstance(manifest, dict) or manifest.get('format') != FORMAT:
    _fail(path, MANIFEST_FILE, f'not a {FORMAT} manifest (format={manifest.get("format")!r})'
          if isinstance(manifest, dict) else 'not a JSON object')
  if manifest.get('format_version') != FORMAT_VERSION:
    _fail(path, MANIFEST_FILE, f'format_version {manifest.get("format_version")!r}; this reader '
          f'knows {FORMAT_VERSION}')
  for key in ('model', 'weights', 'projections', 'files'):
    if key not in manifest:
      _fail(path, MANIFEST_FILE, f'has no {key!r} section')
  return manifest


def _check_manifest(path, manifest):
  """The manifest's own consistency: weights list and sizes against its model config."""
  try:
    _check_manifest_fields(path, manifest)
  except (KeyError, TypeError, AttributeError) as e:
    _fail(path, MANIFEST_FILE, f'malformed ({type(e).__name__}: {e})')


def _check_manifest_fields(path, manifest):
  config = manifest['model'].get('config')
  if not isinstance(config, dict):
    _fail(path, MANIFEST_FILE, 'model.config is missing')
  try:
    expected = canonical_weights(config)
  except (DumpError, TypeError, ValueError) as e:
    _fail(path, MANIFEST_FILE, f'model.config is unusable: {e}')
  listed = [(t['name'], tuple(t['shape'])) for t in manifest['weights'].get('tensors', [])]
  if listed != expected:
    _fail(path, MANIFEST_FILE, f'weights.tensors {listed} do not match the architecture of '
          f'model.config, which implies {expected}')
  n = num_weights(config)
  if manifest['model'].get('num_weights') != n:
    _fail(path, MANIFEST_FILE, f'model.num_weights={manifest["model"].get("num_weights")} but '
          f'the config implies {n}')
  if manifest['weights'].get('order') != [name for name, _ in expected]:
    _fail(path, MANIFEST_FILE, f'weights.order {manifest["weights"].get("order")} is not the '
          f'canonical order {[name for name, _ in expected]}')
  for which, spec in projection_specs(config).items():
    got = manifest['projections'].get(which, {})
    for key in ('generator', 'seed', 'num_rows', 'num_columns', 'std'):
      if got.get(key) != spec[key]:
        _fail(path, MANIFEST_FILE, f'projections.{which}.{key}={got.get(key)!r} but the model '
              f'config implies {spec[key]!r}')


def _check_sizes(path, manifest):
  for name in (WEIGHTS_FILE, ONNX_FILE):
    info = manifest['files'].get(name)
    fpath = os.path.join(path, name)
    if info is None:
      _fail(path, MANIFEST_FILE, f'files has no entry for {name}')
    if not os.path.exists(fpath):
      _fail(path, name, 'missing')
    size = os.path.getsize(fpath)
    if size != info.get('bytes'):
      _fail(path, name, f'{size} bytes but the manifest says {info.get("bytes")}: '
            f'{"truncated" if size < info.get("bytes", 0) else "changed"} after export')


def _check_weights(path, manifest, tensors):
  listed = manifest['weights']['tensors']
  if list(tensors) != [t['name'] for t in listed]:
    _fail(path, WEIGHTS_FILE, f'holds tensors {list(tensors)}; {MANIFEST_FILE} lists '
          f'{[t["name"] for t in listed]}')
  for t in listed:
    array = tensors[t['name']]
    if array.dtype != np.float32:
      _fail(path, WEIGHTS_FILE, f'tensor {t["name"]!r} is {array.dtype}, the manifest says '
            'float32')
    if list(array.shape) != list(t['shape']):
      _fail(path, WEIGHTS_FILE, f'tensor {t["name"]!r} has shape {list(array.shape)}, '
            f'{MANIFEST_FILE} says {t["shape"]}')


def _check_hash(path, manifest, name):
  digest = sha256_file(os.path.join(path, name))
  if digest != manifest['files'][name].get('sha256'):
    _fail(path, name, f'sha256 {digest[:12]}... does not match the manifest\'s '
          f'{str(manifest["files"][name].get("sha256"))[:12]}...: changed after export')


def _onnx_available():
  try:
    import onnx  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True


def read_dump(path, verify_onnx=None):
  """Reads and validates a dump folder.

  Args:
    path: the dump's folder.
    verify_onnx: check that model.onnx's initializers equal the safetensors weights and the
      generator's projections; None means whenever the `onnx` package is installed.

  Returns:
    A Dump.

  Raises:
    DumpError: a file is missing, truncated or inconsistent; the message names it and says why.
  """
  path = os.path.abspath(path)
  manifest = _read_manifest(path)
  _check_manifest(path, manifest)
  _check_sizes(path, manifest)
  with open(os.path.join(path, WEIGHTS_FILE), 'rb') as f:
    tensors, _ = decode_safetensors(f.read(), os.path.join(path, WEIGHTS_FILE))
  _check_weights(path, manifest, tensors)
  _check_hash(path, manifest, WEIGHTS_FILE)
  dump = Dump(path, manifest, tensors)
  if verify_onnx or (verify_onnx is None and _onnx_available()):
    from export import onnx_graph  # pylint: disable=g-import-not-at-top
    onnx_graph.check_dump(dump)
  _check_hash(path, manifest, ONNX_FILE)
  return dump


def find_dump(path):
  """`path` itself if it is a dump, else its newest numeric version folder (an export's model)."""
  if os.path.exists(os.path.join(path, MANIFEST_FILE)):
    return path
  versions = sorted((int(v) for v in os.listdir(path) if v.isdigit()), reverse=True) \
      if os.path.isdir(path) else []
  for v in versions:
    if os.path.exists(os.path.join(path, str(v), MANIFEST_FILE)):
      return os.path.join(path, str(v))
  raise DumpError(f'{path}: no {MANIFEST_FILE} here nor in a numeric version folder below')
