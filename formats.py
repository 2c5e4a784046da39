"""The on-disk layouts every wing reads and writes, stated once.

A training **workdir** (written by `trainers/`, read by `export/` and `experiments/`):

  config.json          the resolved TrainConfig (`trainers.train_lib.config_dict`)
  metrics.jsonl        one JSON record per phase
  checkpoints/         tf.train.CheckpointManager's files
  tensorboard/         summaries
  plots/               PNG figures
  stability.json       the quine's stability as a fixed point of regeneration

A **dump** (an export's version folder, a lineage's generation, a pretrained quine):

  manifest.json        what another framework needs to rebuild the forward pass
  weights.safetensors  theta, one tensor per layer, in canonical order
  model.onnx           the forward pass as an ONNX graph (weights-only dumps leave it out)

Every file here is written atomically (`write_atomic`, `atomic_directory`): a crash leaves the
old file or folder, or the new one, never half of one. This module needs NumPy and safetensors
alone, so that every wing may import it.
"""

import contextlib
import json
import math
import os
import shutil
import struct
import tempfile

import numpy as np
import safetensors
import safetensors.numpy

# The workdir.
CONFIG_FILE = 'config.json'
METRICS_FILE = 'metrics.jsonl'
CHECKPOINT_DIR = 'checkpoints'
TENSORBOARD_DIR = 'tensorboard'
PLOTS_DIR = 'plots'
STABILITY_FILE = 'stability.json'

# The dump.
DUMP_FORMAT = 'quine-zoo-dump'
DUMP_FORMAT_VERSION = 1
MANIFEST_FILE = 'manifest.json'
WEIGHTS_FILE = 'weights.safetensors'
ONNX_FILE = 'model.onnx'


class FormatError(ValueError):
  """A file is not in the layout its name promises; the message names the file and the problem."""


# ------------------------------------------------------------------------------ atomic writes


def write_atomic(path, data):
  """Writes `data` (bytes or str) to `path` through a temporary sibling renamed into place.

  A path with a scheme (gs://...) goes through TensorFlow's file systems, as the workdirs of a
  TPU run do; TensorFlow is imported only then.
  """
  data = data.encode('utf-8') if isinstance(data, str) else data
  tmp = f'{path}.tmp-{os.getpid()}'
  if '://' in path:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.io.gfile.GFile(tmp, 'wb') as f:
      f.write(data)
    tf.io.gfile.rename(tmp, path, overwrite=True)
    return
  try:
    with open(tmp, 'wb') as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def finite_or_none(value):
  """`value` with every NaN or infinite float (in nested dicts, lists and tuples) made None."""
  if isinstance(value, dict):
    return {k: finite_or_none(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [finite_or_none(v) for v in value]
  if isinstance(value, (float, np.floating)):
    return float(value) if math.isfinite(value) else None
  return value


def to_json(value, **kwargs):
  """Strict JSON text of `value` (json.dumps' keyword arguments apply).

  JSON has no NaN or Infinity: Python writes them as bare tokens that a strict parser (JSON.parse,
  jq) refuses or misreads, so they are written as null, the convention of every file here.
  """
  return json.dumps(finite_or_none(value), allow_nan=False, **kwargs)


def write_json_atomic(path, value, sort_keys=False):
  """Writes `value` as indented, strict JSON (`to_json`) to `path`, atomically."""
  write_atomic(path, to_json(value, indent=2, sort_keys=sort_keys))


def check_writable(path):
  """Raises FormatError unless a folder can be written at `path` (existing or not); writes nothing.

  Tried, not guessed from permission bits: a temporary folder is made and removed in the nearest
  existing ancestor (root passes os.access everywhere, and /sys or /proc refuse it all the same).
  Called before the work whose results would go there, so that none is lost at the last step.
  """
  existing = os.path.abspath(path)
  while not os.path.lexists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise FormatError(f'{path}: {existing} is not a directory')
  try:
    os.rmdir(tempfile.mkdtemp(prefix='.write-test-', dir=existing))
  except OSError as e:
    raise FormatError(f'{path}: {existing} is not writable ({e.strerror or e})') from e


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


# ------------------------------------------------------------------------------ safetensors

_SAFETENSORS_CODES = {np.dtype('<f4'): 'F32', np.dtype('<f8'): 'F64', np.dtype('<f2'): 'F16',
                      np.dtype('<i8'): 'I64', np.dtype('<i4'): 'I32', np.dtype('<i2'): 'I16',
                      np.dtype('i1'): 'I8', np.dtype('u1'): 'U8', np.dtype('?'): 'BOOL'}


def encode_safetensors(tensors, metadata=None):
  """The safetensors bytes of `tensors` (a dict name -> array), in the dict's order.

  The `safetensors` library sorts tensors by dtype and name when it writes; a dump keeps them in
  the quine's canonical order instead, so that the file's data block is theta itself (float32
  little-endian) and an auxiliary quine's class head comes last. The bytes are an ordinary
  safetensors file, which `decode_safetensors` (the library) reads.

  Args:
    tensors: dict name -> NumPy array.
    metadata: optional dict of strings stored as `__metadata__`.

  Returns:
    bytes.
  """
  header = {'__metadata__': dict(metadata)} if metadata else {}
  blobs, offset = [], 0
  for name, array in tensors.items():
    array = np.ascontiguousarray(array)
    dtype = array.dtype.newbyteorder('<') if array.dtype.itemsize > 1 else array.dtype
    if dtype not in _SAFETENSORS_CODES:
      raise ValueError(f'{name}: dtype {array.dtype} has no safetensors code')
    blob = array.astype(dtype, copy=False).tobytes()
    header[name] = {'dtype': _SAFETENSORS_CODES[dtype], 'shape': list(array.shape),
                    'data_offsets': [offset, offset + len(blob)]}
    blobs.append(blob)
    offset += len(blob)
  text = json.dumps(header, separators=(',', ':')).encode('utf-8')
  text += b' ' * (-len(text) % 8)
  return struct.pack('<Q', len(text)) + text + b''.join(blobs)


def decode_safetensors(data, where='safetensors'):
  """Parses safetensors bytes with the `safetensors` library.

  Args:
    data: the file's bytes.
    where: the file's name, for messages.

  Returns:
    (dict name -> array in the file's header order, metadata dict).

  Raises:
    FormatError: the bytes are truncated or not a safetensors file.
  """
  try:
    tensors = safetensors.numpy.load(data)
  except (safetensors.SafetensorError, ValueError, TypeError) as e:
    raise FormatError(f'{where}: {_what_is_wrong(data)} ({e})') from e
  size = struct.unpack('<Q', data[:8])[0]
  header = json.loads(data[8:8 + size])
  metadata = header.pop('__metadata__', None) or {}
  order = sorted(header, key=lambda name: header[name]['data_offsets'][0])
  return {name: tensors[name] for name in order}, metadata


def _what_is_wrong(data):
  """Why the library refused `data`, in words: truncated, or not a safetensors file."""
  if len(data) < 8:
    return f'{len(data)} bytes: truncated (no header)'
  size = struct.unpack('<Q', data[:8])[0]
  if size > len(data) - 8:
    return f'a header of {size} bytes but the file has {len(data)}: truncated'
  try:
    header = json.loads(data[8:8 + size])
    end = max([0] + [int(v['data_offsets'][1]) for k, v in header.items()
                     if k != '__metadata__'])
  except (ValueError, TypeError, KeyError, IndexError, AttributeError):
    return 'the header is not a safetensors header: not a safetensors file'
  if end > len(data) - 8 - size:
    return f'the tensors end at byte {end} of a data block of {len(data) - 8 - size}: truncated'
  return 'not a valid safetensors file'
