"""A quine's forward pass in four frameworks, each rebuilt from a dump and nothing else.

  numpy        a plain reimplementation from the manifest, the projection from the generator;
  torch        the same in PyTorch, its own uint32 hash in int64 arithmetic for the projection;
  onnxruntime  runs model.onnx, with theta read from that file's own initializers;
  tensorflow   the SavedModel next to the dump when there is one (what TF Serving serves), else
               the Keras quine rebuilt from the manifest's config and the safetensors weights.

Each `Replica` holds theta as its framework loaded it and computes predicted weights (and, for an
auxiliary quine, class logits) in that framework's own float32 arithmetic. Frameworks are imported
only when their replica is made, so the NumPy replica needs NumPy alone.
"""

import math
import os

import numpy as np

from export import dump as dump_lib

FRAMEWORKS = ('tensorflow', 'onnxruntime', 'torch', 'numpy')
CHUNK = 1 << 16  # coordinates or images per call: memory stays bounded for any N

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


class Replica:
  """A quine rebuilt in one framework.

  Attributes:
    name: the framework (with the TensorFlow source in brackets).
    dump: the Dump it was built from.
    theta: float32 [N], the weights as this framework holds them, in canonical order.
  """

  name = 'replica'

  def __init__(self, dump):
    self.dump = dump
    self.config = dump.config
    self.theta = None

  def predict_weights(self, coordinates):
    """Predicted weights float32 [B] for integer coordinates [B]."""
    raise NotImplementedError

  def classify(self, images):
    """Logits float32 [M, classes] for images float32 [M, image_size] (auxiliary quines)."""
    raise NotImplementedError

  def predict_all(self, chunk=CHUNK):
    """The predictions of all N weights, in chunks, float32 [N]."""
    n = self.dump.num_weights
    return np.concatenate([
        np.asarray(self.predict_weights(np.arange(s, min(s + chunk, n), dtype=np.int64)),
                   np.float32) for s in range(0, n, chunk)])

  def classify_all(self, images, chunk=CHUNK):
    return np.concatenate([np.asarray(self.classify(images[s:s + chunk]), np.float32)
                           for s in range(0, len(images), chunk)]) if len(images) else \
        np.zeros([0, self.config['num_classes']], np.float32)


def _hidden_names(config):
  return [name for name, _ in dump_lib.canonical_weights(config) if name.startswith('hidden_')]


# --------------------------------------------------------------------------- NumPy


def _numpy_activation(name):
  alpha, scale = np.float32(_SELU_ALPHA), np.float32(_SELU_SCALE)
  return {
      'selu': lambda x: scale * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))),
      'relu': lambda x: np.maximum(x, np.float32(0)),
      'tanh': np.tanh,
      'linear': lambda x: x,
  }[name]


class NumpyReplica(Replica):
  """The forward pass in NumPy float32, from the manifest alone."""

  name = 'numpy'

  def __init__(self, dump):
    super().__init__(dump)
    self.weights = {k: np.asarray(v, np.float32) for k, v in dump.weights.items()}
    self.theta = dump.theta
    self._act = _numpy_activation(self.config['activation'])
    self._out = _numpy_activation(self.config['output_activation'])
    self._image_matrix = dump.projection('image') if dump.kind == 'auxiliary' else None

  def _trunk(self, h):
    for name in _hidden_names(self.config):
      h = self._act(h @ self.weights[name])
    return h

  def predict_weights(self, coordinates):
    rows = self.dump.projection('coordinate', np.asarray(coordinates))
    if self.dump.kind == 'auxiliary':
      rows = np.concatenate(
          [rows, np.zeros([len(rows), self._image_matrix.shape[1]], np.float32)], axis=1)
    return self._out(self._trunk(rows) @ self.weights['weight_head'])[:, 0]

  def classify(self, images):
    image_part = np.asarray(images, np.float32).reshape(len(images), -1) @ self._image_matrix
    units = dump_lib.coordinate_units(self.config)
    h = np.concatenate([np.zeros([len(image_part), units], np.float32), image_part], axis=1)
    return (self._trunk(h) @ self.weights['class_head']) / np.float32(self.config['temperature'])


# --------------------------------------------------------------------------- PyTorch


def _torch_mul32(h, constant):
  """(h * constant) mod 2**32 for int64 h in [0, 2**32), without int64 overflow."""
  lo, hi = constant & 0xFFFF, constant >> 16
  return (h * lo + (((h * hi) & 0xFFFF) << 16)) & 0xFFFFFFFF


def _torch_fmix32(h):
  h = h ^ (h >> 16)
  h = _torch_mul32(h, 0x85EBCA6B)
  h = h ^ (h >> 13)
  h = _torch_mul32(h, 0xC2B2AE35)
  return h ^ (h >> 16)


def torch_projection(seed, rows, num_columns, std):
  """The generator of `export.dump.projection_rows` in PyTorch (int64 holding uint32 values).

  Args:
    seed: integer seed.
    rows: int64 tensor [B] of row indices.
    num_columns: number of columns.
    std: standard deviation.

  Returns:
    A float32 tensor [B, num_columns], bit-for-bit the NumPy reference.
  """
  import torch  # pylint: disable=g-import-not-at-top
  key = int(dump_lib.fmix32(np.uint32(seed) ^ np.uint32(dump_lib.GOLDEN)))
  r = _torch_fmix32((rows.to(torch.int64) & 0xFFFFFFFF) ^ key)
  cols = torch.arange(num_columns, dtype=torch.int64)
  cols = (_torch_mul32(cols, dump_lib.COLUMN_MUL) + dump_lib.COLUMN_ADD) & 0xFFFFFFFF
  h = _torch_fmix32(r[:, None] ^ cols[None, :])
  unit = (h >> 8).to(torch.float32) * (2.0**-23) - 1.0  # both exact in float32
  scale = torch.tensor(np.float32(std * math.sqrt(3.0)))  # rounded once, as NumPy does
  return unit * scale


class TorchReplica(Replica):
  """A plain PyTorch reimplementation of the forward pass, built from the manifest."""

  name = 'torch'

  def __init__(self, dump):
    super().__init__(dump)
    import torch  # pylint: disable=g-import-not-at-top
    self._torch = torch
    self.weights = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in dump.weights.items()}
    self.theta = torch.cat([w.reshape(-1) for w in self.weights.values()]).numpy()
    acts = {'selu': torch.nn.functional.selu, 'relu': torch.relu, 'tanh': torch.tanh,
            'linear': lambda x: x}
    self._act = acts[self.config['activation']]
    self._out = acts[self.config['output_activation']]
    self._specs = dump.manifest['projections']
    if dump.kind == 'auxiliary':
      image = self._specs['image']
      self._image_matrix = torch_projection(
          image['seed'], torch.arange(image['num_rows']), image['num_columns'], image['std'])

  def _trunk(self, h):
    for name in _hidden_names(self.config):
      h = self._act(h @ self.weights[name])
    return h

  def coordinate_rows(self, coordinates):
    spec = self._specs['coordinate']
    return torch_projection(spec['seed'], self._torch.as_tensor(np.asarray(coordinates)),
                            spec['num_columns'], spec['std'])

  def predict_weights(self, coordinates):
    torch = self._torch
    with torch.no_grad():
      rows = self.coordinate_rows(coordinates)
      if self.dump.kind == 'auxiliary':
        rows = torch.cat([rows, torch.zeros(len(rows), self._image_matrix.shape[1])], dim=1)
      return self._out(self._trunk(rows) @ self.weights['weight_head'])[:, 0].numpy()

  def classify(self, images):
    torch = self._torch
    with torch.no_grad():
      images = torch.as_tensor(np.asarray(images, np.float32).reshape(len(images), -1))
      image_part = images @ self._image_matrix
      units = dump_lib.coordinate_units(self.config)
      h = torch.cat([torch.zeros(len(image_part), units), image_part], dim=1)
      logits = (self._trunk(h) @ self.weights['class_head']) / torch.tensor(
          np.float32(self.config['temperature']))
      return logits.numpy()


# --------------------------------------------------------------------------- ONNX Runtime


class OnnxRuntimeReplica(Replica):
  """Runs the dump's model.onnx; theta is read from that file's initializers, not safetensors."""

  name = 'onnxruntime'

  def __init__(self, dump):
    super().__init__(dump)
    import onnxruntime as ort  # pylint: disable=g-import-not-at-top
    from export import onnx_graph  # pylint: disable=g-import-not-at-top
    with open(dump.onnx_path, 'rb') as f:
      data = f.read()
    values = onnx_graph.initializers(onnx_graph.parse(data, dump.onnx_path))
    names = dump.manifest['onnx']['weight_initializers']
    self.theta = np.concatenate([values[names[name]].reshape(-1) for name in dump.weights])
    self._session = ort.InferenceSession(data, providers=['CPUExecutionProvider'])
    self._aux = dump.kind == 'auxiliary'

  def _run(self, output, coordinates, images):
    feeds = {dump_lib.ONNX_COORDINATES: np.asarray(coordinates, np.int64).reshape(-1)}
    if self._aux:
      feeds[dump_lib.ONNX_IMAGES] = np.asarray(images, np.float32).reshape(
          -1, self.config['image_size'])
    return self._session.run([output], feeds)[0]

  def predict_weights(self, coordinates):
    empty = np.zeros([0, self.config.get('image_size', 0)], np.float32)
    return self._run(dump_lib.ONNX_PREDICTED_WEIGHTS, coordinates, empty)

  def classify(self, images):
    return self._run(dump_lib.ONNX_LOGITS, np.zeros([0], np.int64), images)


# --------------------------------------------------------------------------- TensorFlow


class TensorFlowReplica(Replica):
  """TensorFlow's own numbers: the SavedModel's signatures, or the Keras quine rebuilt."""

  def __init__(self, dump, use_saved_model=True):
    super().__init__(dump)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._tf = tf
    if use_saved_model and os.path.exists(os.path.join(dump.path, 'saved_model.pb')):
      self.name = 'tensorflow[saved_model]'
      loaded = tf.saved_model.load(dump.path)
      self._loaded = loaded  # keeps the variables alive
      self.theta = loaded.signatures['weights']()['theta'].numpy()
      predict = loaded.signatures['predict_weights']
      self._predict = lambda c: predict(coordinates=c)['predicted_weights']
      if dump.kind == 'auxiliary':
        classify = loaded.signatures['classify']
        self._classify = lambda x: classify(images=x)['logits']
    else:
      from models import build_quine  # pylint: disable=g-import-not-at-top
      from models.config import ModelConfig  # pylint: disable=g-import-not-at-top
      self.name = 'tensorflow[keras]'
      model = build_quine(ModelConfig.from_dict(dump.config))
      model.assign_flat(tf.constant(dump.theta))
      self._model = model
      self.theta = model.flatten().numpy()
      # Eager: a handful of ops per chunk, and no retracing per rebuilt generation.
      self._predict = model.predict_weights
      if dump.kind == 'auxiliary':
        self._classify = model.classify

  def predict_weights(self, coordinates):
    return self._predict(self._tf.constant(np.asarray(coordinates, np.int64))).numpy()

  def classify(self, images):
    images = np.asarray(images, np.float32).reshape(len(images), -1)
    return self._classify(self._tf.constant(images)).numpy()


def make_replica(framework, dump, use_saved_model=True):
  """The Replica of `dump` in `framework` (one of FRAMEWORKS)."""
  if framework == 'numpy':
    return NumpyReplica(dump)
  if framework == 'torch':
    return TorchReplica(dump)
  if framework == 'onnxruntime':
    return OnnxRuntimeReplica(dump)
  if framework == 'tensorflow':
    return TensorFlowReplica(dump, use_saved_model)
  raise ValueError(f'framework {framework!r} is not one of {FRAMEWORKS}')
