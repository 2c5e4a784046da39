"""Framework-neutral weight dumps of a quine, written and read with NumPy, safetensors and onnx.

A dump is a folder (an export version folder, one generation of a lineage, or a pretrained quine
of `models/pretrained/`) holding

  manifest.json        what another framework needs to rebuild the forward pass
                       (`export.manifest`, derived from `models.architecture`);
  weights.safetensors  the weights theta, one tensor per layer, in canonical order (the file's
                       data block is theta itself, float32 little-endian; `formats`);
  model.onnx           an ONNX graph (opset 18) from coordinates (and images) to predictions, whose
                       weight initializers carry the canonical names (`export.onnx_graph`); a
                       weights-only dump (the pretrained quines) leaves it out, and exporting
                       it rebuilds the graph from the weights.

The fixed random projections are not part of theta: they are the documented generator of
`models.generator`; where the ONNX graph holds one as a table it is a separate initializer named
'projection/...'.

`read_dump` rejects a dump whose files are missing or truncated, whose manifest does not match its
own model config or the weights, or whose ONNX graph disagrees with the safetensors file or lacks
the activations the manifest names, with a message naming the file and the problem.
"""

import dataclasses
import hashlib
import json
import os

import numpy as np

import formats
from export import manifest as manifest_lib
from export import onnx_graph
from export.manifest import DumpError, MANIFEST_FILE, ONNX_FILE, WEIGHTS_FILE
from models.config import KIND_REGISTRY

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


# Exports, lineages and the zoo all write dumps through this one helper.
atomic_directory = formats.atomic_directory


def _files_below(directory):
  """Every file under `directory` but the manifest, as sorted '/'-separated relative paths."""
  names = []
  for parent, _, files in os.walk(directory):
    for name in files:
      rel = os.path.relpath(os.path.join(parent, name), directory).replace(os.sep, '/')
      if rel != MANIFEST_FILE:
        names.append(rel)
  return sorted(names)


def write_dump_files(directory, config, weights, onnx_bytes, lineage=None, source=None):
  """Writes a dump into an existing folder (the caller makes it atomic).

  The manifest records the size and sha256 of every file in the folder (a SavedModel written
  there first included), so that any changed, truncated or missing part is caught by name.

  Args:
    directory: the folder.
    config: ModelConfig dict.
    weights: dict name -> float32 array, or a flat theta [N] in canonical order.
    onnx_bytes: the serialised ONNX model whose initializers hold these weights, or None for a
      weights-only dump.
    lineage: see build_manifest.
    source: see build_manifest.

  Returns:
    The manifest written.
  """
  manifest = manifest_lib.build(config, lineage, source)
  arch = manifest_lib.architecture(config)
  weights = arch.split(np.asarray(weights, np.float32)) if not isinstance(weights, dict) \
      else weights
  expected = arch.weights
  if [(n, tuple(np.shape(weights[n]))) for n, _ in expected if n in weights] != expected:
    raise ValueError(f'weights {[(k, np.shape(v)) for k, v in weights.items()]} do not match '
                     f'the config\'s {expected}')
  ordered = {name: np.asarray(weights[name], np.float32) for name, _ in expected}
  _write_bytes(os.path.join(directory, WEIGHTS_FILE), formats.encode_safetensors(
      ordered, {'format': manifest_lib.FORMAT, 'order': ','.join(ordered)}))
  if onnx_bytes is not None:
    _write_bytes(os.path.join(directory, ONNX_FILE), onnx_bytes)
  manifest['files'] = {
      name: {'bytes': os.path.getsize(os.path.join(directory, name)),
             'sha256': sha256_file(os.path.join(directory, name))}
      for name in _files_below(directory)}
  with open(os.path.join(directory, MANIFEST_FILE), 'w') as f:
    f.write(formats.to_json(manifest, indent=2))
    f.write('\n')
  return manifest


def write_dump(directory, config, weights, onnx_bytes, lineage=None, source=None,
               overwrite=False):
  """`write_dump_files` into a new folder, atomically; returns the manifest."""
  with atomic_directory(directory, overwrite) as tmp:
    return write_dump_files(tmp, config, weights, onnx_bytes, lineage, source)


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
  def classifies(self):
    """Whether the quine has an image input and a class head (models.config.Kind)."""
    return KIND_REGISTRY[self.kind].classifies

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

  @property
  def has_onnx(self):
    """Whether the dump carries model.onnx (a weights-only dump does not)."""
    return ONNX_FILE in self.manifest['files']

  @property
  def architecture(self):
    """The quine's `models.architecture.Architecture` (its manifest config, checked)."""
    return manifest_lib.architecture(self.config)

  def projection(self, which, rows=None):
    """Rows (all when None) of the fixed projection `which` ('coordinate' or 'image')."""
    return self.architecture.projections[which].rows(rows)


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
  if not isinstance(manifest, dict) or manifest.get('format') != manifest_lib.FORMAT:
    _fail(path, MANIFEST_FILE,
          f'not a {manifest_lib.FORMAT} manifest (format={manifest.get("format")!r})'
          if isinstance(manifest, dict) else 'not a JSON object')
  if manifest.get('format_version') != manifest_lib.FORMAT_VERSION:
    _fail(path, MANIFEST_FILE, f'format_version {manifest.get("format_version")!r}; this reader '
          f'knows {manifest_lib.FORMAT_VERSION}')
  for key in ('model', 'weights', 'projections', 'files'):
    if key not in manifest:
      _fail(path, MANIFEST_FILE, f'has no {key!r} section')
  return manifest


def _check_sizes(path, manifest, require_onnx):
  for name in (WEIGHTS_FILE, ONNX_FILE) if require_onnx else (WEIGHTS_FILE,):
    if name not in manifest['files']:
      _fail(path, MANIFEST_FILE, f'files has no entry for {name}')
  for name, info in manifest['files'].items():
    if os.path.isabs(name) or '..' in name.split('/'):
      _fail(path, MANIFEST_FILE, f'files names {name!r}, which is not inside the dump')
    fpath = os.path.join(path, name)
    if not os.path.isfile(fpath):
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


def read_dump(path, require_onnx=True):
  """Reads and validates a dump folder.

  A model.onnx the manifest lists is always checked: its initializers must equal the safetensors
  weights and the generator's projections, and its graph must hold the activations the manifest
  names.

  Args:
    path: the dump's folder.
    require_onnx: refuse a weights-only dump (the replicas in ONNX Runtime need the graph).

  Returns:
    A Dump.

  Raises:
    DumpError: a file is missing, truncated or inconsistent; the message names it and says why.
  """
  path = os.path.abspath(path)
  manifest = _read_manifest(path)
  manifest_lib.check(os.path.join(path, MANIFEST_FILE), manifest)
  _check_sizes(path, manifest, require_onnx)
  with open(os.path.join(path, WEIGHTS_FILE), 'rb') as f:
    try:
      tensors, _ = formats.decode_safetensors(f.read(), os.path.join(path, WEIGHTS_FILE))
    except formats.FormatError as e:
      raise DumpError(str(e)) from e
  _check_weights(path, manifest, tensors)
  _check_hash(path, manifest, WEIGHTS_FILE)
  dump = Dump(path, manifest, tensors)
  if dump.has_onnx:
    onnx_graph.check_dump(dump)
  for name in manifest['files']:  # model.onnx, the SavedModel's files, ...
    if name != WEIGHTS_FILE:
      _check_hash(path, manifest, name)
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
