r"""Export size and serving speed of a paper-size quine: projection table against in-graph hash.

An export's coordinate projection is either stored as an N x d table (gathered) or computed in the
graph from its seed by the generator (`export/manifest.py`, EXPORT_TABLE_ENTRIES). This exports the
same quine both ways and measures, side by side in one process:
  - the bytes of saved_model.pb, variables/, model.onnx and weights.safetensors;
  - the median latency of the SavedModel's predict_weights signature (tf.saved_model.load, the
    function TF Serving runs) and of the ONNX graph in ONNX Runtime, for 1, 100 and all N
    coordinates.

  python benchmarks/slim_export.py --output=benchmarks/slim_export.json
"""

import json
import os
import tempfile
import time
from unittest import mock

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
import onnxruntime as ort
import tensorflow as tf

from export import manifest as manifest_lib
from export import exporter
from models import build_quine
from models.config import ModelConfig

_WIDTH = flags.DEFINE_integer('width', 100, 'Hidden width (100: the paper, N = 20,100).')
_REPEATS = flags.DEFINE_integer('repeats', 30, 'Timed calls per case (the median is reported).')
_OUTPUT = flags.DEFINE_string('output', None, 'Write the rows as JSON here too.')
_THREADS = flags.DEFINE_integer('threads', 1, 'Intra-op threads of TensorFlow and ONNX Runtime.')

LAYOUTS = {'table': 1 << 30, 'hash': manifest_lib.EXPORT_TABLE_ENTRIES}


def _median_seconds(fn, repeats):
  fn()  # warm-up (tracing, allocation)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def _sizes(path):
  def size(rel):
    full = os.path.join(path, rel)
    if os.path.isfile(full):
      return os.path.getsize(full)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(full) for f in fs)
  return {name: size(name) for name in ('saved_model.pb', 'variables', 'model.onnx',
                                        'weights.safetensors')}


def measure(layout, model, base, repeats, threads):
  """Exports `model` with the coordinate projection as `layout`; returns its rows."""
  with mock.patch.object(manifest_lib, 'EXPORT_TABLE_ENTRIES', LAYOUTS[layout]):
    path = exporter.export_model(model, base, layout)
  n = model.num_weights
  serve = tf.saved_model.load(path).signatures['predict_weights']
  options = ort.SessionOptions()
  options.intra_op_num_threads = threads
  session = ort.InferenceSession(os.path.join(path, 'model.onnx'), options,
                                 providers=['CPUExecutionProvider'])
  rows = []
  for batch in (1, 100, n):
    coordinates = np.linspace(0, n - 1, batch).astype(np.int64)
    tensor = tf.constant(coordinates)
    row = {'layout': layout, 'batch': batch, **_sizes(path),
           'saved_model_seconds': _median_seconds(lambda: serve(coordinates=tensor), repeats),
           'onnxruntime_seconds': _median_seconds(
               lambda: session.run(None, {'coordinates': coordinates}), repeats)}
    rows.append(row)
    print(json.dumps(row), flush=True)
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'stray arguments: {argv[1:]}')
  tf.config.threading.set_intra_op_parallelism_threads(_THREADS.value)
  model = build_quine(ModelConfig(width=_WIDTH.value))
  rows = []
  with tempfile.TemporaryDirectory() as base:
    for layout in LAYOUTS:
      rows += measure(layout, model, base, _REPEATS.value, _THREADS.value)
  print(f'\nN = {model.num_weights}, {_THREADS.value} thread(s); median of {_REPEATS.value}')
  print(f'{"layout":6} {"batch":>6} {"saved_model.pb":>15} {"model.onnx":>11} '
        f'{"SavedModel ms":>14} {"ORT ms":>8}')
  for r in rows:
    print(f'{r["layout"]:6} {r["batch"]:6d} {r["saved_model.pb"]:15,d} {r["model.onnx"]:11,d} '
          f'{1e3 * r["saved_model_seconds"]:14.3f} {1e3 * r["onnxruntime_seconds"]:8.3f}')
  if _OUTPUT.value:
    with open(_OUTPUT.value, 'w') as f:
      json.dump({'num_weights': model.num_weights, 'threads': _THREADS.value,
                 'repeats': _REPEATS.value, 'rows': rows}, f, indent=2)
      f.write('\n')


if __name__ == '__main__':
  app.run(main)
