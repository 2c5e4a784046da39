"""Replication reports: a dump's self-replication measured in each framework, against TensorFlow.

For every framework the predictions of all N coordinates are computed in that framework's own
float32 arithmetic; the metrics are then accumulated in float64 (as the trainers do):

  L_SR = sum((pred - theta)^2)   rho = L_SR / sum(theta^2)   R^2 = 1 - L_SR / sum((theta - mean)^2)

next to the weight RMS and the largest differences from TensorFlow's own theta and predictions.
A framework agrees when its theta equals TensorFlow's exactly and its predictions (and logits) are
within float32 tolerance: |diff| <= RTOL * scale, the scale being the largest magnitude of the
weights or of TensorFlow's predictions (rounding errors grow with the terms of the sums, not with
their result, which can be far smaller when a quine predicts near-zero weights); for logits, of the
logits or of a weight divided by the temperature.
"""

import os
import time

import numpy as np

from export import frameworks as frameworks_lib
from models.config import KIND_REGISTRY

RTOL = 1e-5
MNIST_VERSION = '3.0.1'

METRIC_COLUMNS = ('l_sr', 'rho', 'r2', 'weight_rms')
HEADERS = {'framework': 'framework', 'generation': 'gen', 'built_with': 'built with',
           'l_sr': 'L_SR', 'rho': 'rho', 'r2': 'R^2', 'weight_rms': 'weight RMS',
           'max_abs_diff_theta': 'max|dtheta| vs TF',
           'max_abs_diff_predictions': 'max|dpred| vs TF',
           'max_abs_diff_logits': 'max|dlogit| vs TF', 'test_accuracy': 'test acc',
           'distance_to_parent': '|theta - parent|', 'relative_distance': 'relative',
           'cross_framework_max_diff': 'max|dpred| across', 'agrees': 'agrees',
           'diverged': 'child diverges',
           'seconds': 'seconds'}


class DataError(RuntimeError):
  """Test data cannot be loaded; the message says where it looked."""


def metrics(theta, predictions):
  """Replication metrics of theta [N] and its predictions [N], accumulated in float64.

  Returns:
    dict of Python floats: l_sr, rho, r2, weight_rms, prediction_rms.
  """
  theta = np.asarray(theta, np.float64)
  predictions = np.asarray(predictions, np.float64)
  n = theta.size
  l_sr = float(np.sum((predictions - theta) ** 2))
  sum_sq = float(np.sum(theta ** 2))
  centred = float(np.sum((theta - theta.mean()) ** 2))
  return {
      'l_sr': l_sr,
      'rho': l_sr / sum_sq if sum_sq else 1.0,
      # Constant weights: 1 only for an exact copy, else 0 (as trainers.metrics does).
      'r2': 1.0 - l_sr / centred if centred else float(l_sr == 0.0),
      'weight_rms': float(np.sqrt(sum_sq / n)),
      'prediction_rms': float(np.sqrt(np.sum(predictions ** 2) / n)),
  }


def accuracy(logits, labels):
  return float(np.mean(np.argmax(logits, axis=1) == np.asarray(labels)))


def max_abs(*arrays):
  """The largest magnitude in any of `arrays` (a tiny positive number if all are empty)."""
  return max([float(np.max(np.abs(a))) for a in arrays if np.size(a)] + [1e-30])


def logit_scale(logits, theta, temperature):
  """The scale of logits' rounding errors: their size, or that of a weight over the temperature.

  A logit sums terms h * w / temperature; when they cancel, the logit is far smaller than its
  terms and than its rounding error relative to itself.
  """
  return max(max_abs(logits), max_abs(theta) / temperature)


def within_tolerance(values, reference, scale=None, rtol=RTOL):
  """Whether |values - reference| <= rtol * scale everywhere (scale: max|reference| if None)."""
  values, reference = np.asarray(values), np.asarray(reference)
  if values.shape != reference.shape:
    return False
  scale = max_abs(reference) if scale is None else scale
  return bool(np.all(np.abs(values.astype(np.float64) - reference) <= rtol * scale))


def _max_abs_diff(a, b):
  if a is None or b is None or np.shape(a) != np.shape(b):
    return float('inf') if a is not None and b is not None else None
  return float(np.max(np.abs(np.asarray(a, np.float64) - b))) if np.size(a) else 0.0


def evaluate(replica, images=None, labels=None):
  """Runs a replica over all coordinates (and images): (predictions, logits or None, row dict)."""
  t0 = time.perf_counter()
  predictions = replica.predict_all()
  row = {'framework': replica.name, **metrics(replica.theta, predictions)}
  logits = None
  if images is not None and replica.dump.classifies:
    logits = replica.classify_all(images)
    if labels is not None:
      row['test_accuracy'] = accuracy(logits, labels)
  row['seconds'] = time.perf_counter() - t0
  return predictions, logits, row


def replicate(dump, frameworks=frameworks_lib.FRAMEWORKS, images=None, labels=None):
  """The replication report of `dump` in each framework.

  Args:
    dump: an export.dump.Dump.
    frameworks: names from frameworks.FRAMEWORKS; TensorFlow, when listed, is the reference,
      else the first one is.
    images: optional float32 [M, image_size] test images (auxiliary quines).
    labels: optional int [M] labels of `images`.

  Returns:
    A list of row dicts (one per framework): metrics, max |diff| of theta, predictions and
    logits from the reference, test_accuracy (with labels), agrees (bool), seconds.
  """
  order = sorted(frameworks, key=lambda f: f != 'tensorflow')
  results = {}
  for name in order:
    replica = frameworks_lib.make_replica(name, dump)
    results[name] = (replica.theta, *evaluate(replica, images, labels))
  ref_theta, ref_pred, ref_logits, _ = results[order[0]]
  rows = []
  for name in frameworks:
    theta, pred, logits, row = results[name]
    row['max_abs_diff_theta'] = _max_abs_diff(theta, ref_theta)
    row['max_abs_diff_predictions'] = _max_abs_diff(pred, ref_pred)
    agrees = bool(np.array_equal(theta, ref_theta)) and within_tolerance(
        pred, ref_pred, max_abs(ref_pred, ref_theta))
    if logits is not None:
      row['max_abs_diff_logits'] = _max_abs_diff(logits, ref_logits)
      agrees = agrees and within_tolerance(
          logits, ref_logits, logit_scale(ref_logits, ref_theta, dump.config['temperature']))
    row['agrees'] = agrees
    rows.append(row)
  return rows


def _cell(value):
  if value is None:
    return '-'
  if isinstance(value, bool):
    return 'yes' if value else 'NO'
  if isinstance(value, float):
    if value == 0.0:
      return '0'
    return f'{value:.4f}' if 1e-3 <= abs(value) < 1e4 else f'{value:.4g}'
  return str(value)


def format_table(rows, columns):
  """A plain-text table of `rows` (dicts), only the columns that some row has."""
  columns = [c for c in columns if any(c in r for r in rows)]
  cells = [[HEADERS.get(c, c) for c in columns]]
  cells += [[_cell(r.get(c)) for c in columns] for r in rows]
  widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
  lines = ['  '.join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in
                     enumerate(zip(row, widths))) for row in cells]
  lines.insert(1, '  '.join('-' * w for w in widths))
  return '\n'.join(lines)


REPLICATION_COLUMNS = ('framework', *METRIC_COLUMNS, 'test_accuracy', 'max_abs_diff_theta',
                       'max_abs_diff_predictions', 'max_abs_diff_logits', 'agrees', 'seconds')


def default_data_dir():
  return os.environ.get('TFDS_DATA_DIR') or os.path.join(os.path.expanduser('~'),
                                                           'tensorflow_datasets')


def test_data_for(config, data_dir=None, limit=None, log=print):
  """MNIST's test split for a quine that classifies 784-pixel images; (None, None) otherwise.

  Args:
    config: a dump's model config (dict).
    data_dir: see `load_mnist_test`.
    limit: see `load_mnist_test`.
    log: told why a classifying quine gets no test accuracy.
  """
  if not KIND_REGISTRY[config['kind']].classifies:
    return None, None
  if config['image_size'] != 784:
    log(f'(image_size {config["image_size"]} is not MNIST\'s 784: no test accuracy)')
    return None, None
  return load_mnist_test(data_dir, limit)


def load_mnist_test(data_dir=None, limit=None):
  """MNIST's test split as the quines see it: float32 [M, 784] pixels / 255, int labels [M].

  Args:
    data_dir: a tfds data dir holding mnist/3.0.1; None means TFDS_DATA_DIR (or tfds's default).
    limit: keep only the first `limit` images (None or 0: all 10,000).

  Returns:
    (images, labels).

  Raises:
    DataError: the prepared dataset is not there (tfds is never allowed to download).
  """
  data_dir = os.path.abspath(os.path.expanduser(data_dir or default_data_dir()))
  where = os.path.join(data_dir, 'mnist', MNIST_VERSION)
  if not os.path.exists(os.path.join(where, 'dataset_info.json')):
    raise DataError(f'MNIST is not prepared in {where}: point --data_dir (or TFDS_DATA_DIR) at a '
                    'tfds data dir holding mnist/3.0.1 (this command never downloads)')
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  split = f'test[:{limit}]' if limit else 'test'
  ds = tfds.load('mnist', split=split, data_dir=data_dir, batch_size=-1, as_supervised=True,
                 download=False)
  images, labels = tfds.as_numpy(ds)
  return images.reshape(len(images), -1).astype(np.float32) / 255.0, labels.astype(np.int64)
