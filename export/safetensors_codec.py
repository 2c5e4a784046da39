"""The safetensors format, written and read with NumPy alone, tensors kept in the order given.

The `safetensors` library writes tensors sorted by dtype and name; a dump's weights file keeps
them in the quine's canonical order instead, so that the file's data block is theta itself
(float32 little-endian), and an auxiliary quine's class_head comes last. The files are ordinary
safetensors files: the library reads them, and we read its files (tests check both ways).
"""

import json
import struct

import numpy as np

from export.manifest import DumpError

_SAFETENSORS_DTYPES = {'F32': '<f4', 'F64': '<f8', 'F16': '<f2', 'I64': '<i8', 'I32': '<i4',
                       'I16': '<i2', 'I8': 'i1', 'U8': 'u1', 'BOOL': '?'}


def encode(tensors, metadata=None):
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


def decode(data, where='safetensors'):
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
