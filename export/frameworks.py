"""A quine's forward pass in four frameworks, each rebuilt from a dump and nothing else.

  numpy        the architecture's forward pass (`models.architecture`, rebuilt from the manifest's
               config) in NumPy, the projection from the generator;
  torch        the same in PyTorch, its own uint32 hash in int64 arithmetic for the projection;
  onnxruntime  runs model.onnx, with theta read from that file's own initializers;
  tensorflow   the SavedModel next to the dump when there is one (what TF Serving serves), else
               the Keras quine rebuilt from the manifest's config and the safetensors weights.

Each `Replica` holds theta as its framework loaded it and computes predicted weights (and, for an
auxiliary quine, class logits) in that framework's own float32 arithmetic. Frameworks are imported
only when their replica is made, so the NumPy replica needs NumPy alone.
"""

import os

import numpy as np

from export import manifest as manifest_lib
from models import backends
from models import generator

FRAMEWORKS = ('tensorflow', 'onnxruntime', 'torch', 'numpy')
CHUNK = 1 << 16  # coordinates or images per call: memory stays bounded for any N


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


# --------------------------------------------------------------------------- NumPy


class NumpyReplica(Replica):
  """The architecture's forward pass in NumPy float32, the projection from the generator."""

  name = 'numpy'

  def __init__(self, dump):
    super().__init__(dump)
    self.arch = dump.architecture
    self.weights = {k: np.asarray(v, np.float32) for k, v in dump.weights.items()}
    self.theta = dump.theta
    self._image_matrix = dump.projection('image') if dump.classifies else None

  def predict_weights(self, coordinates):
    rows = self.dump.projection('coordinate', np.asarray(coordinates))
    return self.arch.predict_weights(backends.NUMPY, self.weights, rows)

  def classify(self, images):
    image_part = np.asarray(images, np.float32).reshape(len(images), -1) @ self._image_matrix
    return self.arch.classify(backends.NUMPY, self.weights, image_part)


# --------------------------------------------------------------------------- PyTorch


def _torch_mul32(h, constant):
  """(h * constant) mod 2**32 for int64 h in [0, 2**32), without int64 overflow."""
  lo, hi = constant & 0xFFFF, constant >> 16
  return (h * lo + (((h * hi) & 0xFFFF) << 16)) & 0xFFFFFFFF


def _torch_fmix32(h):
  h = h ^ (h >> 16)
  h = _torch_mul32(h, generator.FMIX_MUL_1)
  h = h ^ (h >> 13)
  h = _torch_mul32(h, generator.FMIX_MUL_2)
  return h ^ (h >> 16)


def torch_projection(seed, rows, num_columns, std):
  """The generator of `models.generator.projection_rows` in PyTorch (int64 holding uint32 values).

  Args:
    seed: integer seed.
    rows: int64 tensor [B] of row indices.
    num_columns: number of columns.
    std: standard deviation.

  Returns:
    A float32 tensor [B, num_columns], bit-for-bit the NumPy reference.
  """
  import torch  # pylint: disable=g-import-not-at-top
  r = _torch_fmix32((rows.to(torch.int64) & 0xFFFFFFFF) ^ generator.seed_key(seed))
  cols = torch.from_numpy(generator.column_codes(num_columns).astype(np.int64))
  h = _torch_fmix32(r[:, None] ^ cols[None, :])
  unit = (h >> 8).to(torch.float32) * (2.0**-23) - 1.0  # both exact in float32
  return unit * torch.tensor(generator.scale(std))  # rounded once, as NumPy does


class TorchReplica(Replica):
  """The architecture's forward pass in PyTorch, its own uint32 hash for the projection."""

  name = 'torch'

  def __init__(self, dump):
    super().__init__(dump)
    import torch  # pylint: disable=g-import-not-at-top
    self._torch = torch
    self._backend = backends.torch()
    self.arch = dump.architecture
    self.weights = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in dump.weights.items()}
    self.theta = torch.cat([w.reshape(-1) for w in self.weights.values()]).numpy()
    if dump.classifies:
      image = self.arch.projections['image']
      self._image_matrix = torch_projection(
          image.seed, torch.arange(image.num_rows), image.num_columns, image.std)

  def coordinate_rows(self, coordinates):
    spec = self.arch.projections['coordinate']
    return torch_projection(spec.seed, self._torch.as_tensor(np.asarray(coordinates)),
                            spec.num_columns, spec.std)

  def predict_weights(self, coordinates):
    with self._torch.no_grad():
      return self.arch.predict_weights(self._backend, self.weights,
                                       self.coordinate_rows(coordinates)).numpy()

  def classify(self, images):
    torch = self._torch
    with torch.no_grad():
      images = torch.as_tensor(np.asarray(images, np.float32).reshape(len(images), -1))
      return self.arch.classify(self._backend, self.weights, images @ self._image_matrix).numpy()


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
    self._aux = dump.classifies

  def _run(self, output, coordinates, images):
    feeds = {manifest_lib.ONNX_COORDINATES: np.asarray(coordinates, np.int64).reshape(-1)}
    if self._aux:
      feeds[manifest_lib.ONNX_IMAGES] = np.asarray(images, np.float32).reshape(
          -1, self.config['image_size'])
    return self._session.run([output], feeds)[0]

  def predict_weights(self, coordinates):
    empty = np.zeros([0, self.config.get('image_size', 0)], np.float32)
    return self._run(manifest_lib.ONNX_PREDICTED_WEIGHTS, coordinates, empty)

  def classify(self, images):
    return self._run(manifest_lib.ONNX_LOGITS, np.zeros([0], np.int64), images)


# --------------------------------------------------------------------------- TensorFlow


class TensorFlowReplica(Replica):
  """TensorFlow's own numbers: the SavedModel's signatures, or the Keras quine rebuilt."""

  def __init__(self, dump, use_saved_model=True):
    super().__init__(dump)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._tf = tf
    if use_saved_model and os.path.exists(os.path.join(dump.path, 'saved_model.pb')):
      self.name = 'tensorflow[saved_model]'
      try:
        loaded = tf.saved_model.load(dump.path)
        self.theta = loaded.signatures['weights']()['theta'].numpy()
      except (tf.errors.OpError, KeyError, OSError, ValueError) as e:
        raise manifest_lib.DumpError(
            f'{os.path.join(dump.path, "saved_model.pb")}: the SavedModel does not load '
            f'({type(e).__name__}: {" ".join(str(e).split())[:200]})') from e
      if self.theta.shape != dump.theta.shape or not np.array_equal(self.theta, dump.theta):
        raise manifest_lib.DumpError(
            f'{os.path.join(dump.path, "saved_model.pb")}: its weights are not those of '
            f'{manifest_lib.WEIGHTS_FILE} (a SavedModel of another quine?)')
      self._loaded = loaded  # keeps the variables alive
      predict = loaded.signatures['predict_weights']
      self._predict = lambda c: predict(coordinates=c)['predicted_weights']
      if dump.classifies:
        classify = loaded.signatures['classify']
        self._classify = lambda x: classify(images=x)['logits']
    else:
      self.name = 'tensorflow[keras]'
      model = keras_model(dump)
      self._model = model
      self.theta = model.flatten().numpy()
      # Eager: a handful of ops per chunk, and no retracing per rebuilt generation.
      self._predict = model.predict_weights
      if dump.classifies:
        self._classify = model.classify

  def predict_weights(self, coordinates):
    return self._predict(self._tf.constant(np.asarray(coordinates, np.int64))).numpy()

  def classify(self, images):
    images = np.asarray(images, np.float32).reshape(len(images), -1)
    return self._classify(self._tf.constant(images)).numpy()


def keras_model(dump):
  """The Keras quine of `dump`, rebuilt from its manifest config and safetensors weights."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from models import build_quine  # pylint: disable=g-import-not-at-top
  from models.config import ModelConfig  # pylint: disable=g-import-not-at-top
  model = build_quine(ModelConfig.from_dict(dump.config))
  model.assign_flat(tf.constant(dump.theta))
  return model


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
