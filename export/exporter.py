"""Exports a trained quine into `<base>/<name>/<version>/`: SavedModel, ONNX graph and dump.

The version folder is the layout TensorFlow Serving loads, and also a dump (see `export.dump`):

  saved_model.pb, variables/   the signatures of `export.saved_model`
  model.onnx, weights.safetensors, manifest.json

Everything is written into a hidden temporary folder, checked (the dump is re-read and the ONNX
graph run against the live model), and only then renamed into place; an existing version is
replaced only when asked. Exports into one model folder take turns (a lock on it), and each removes
the temporary folders that killed exports left behind. Exporting the weights of the newest
version's checkpoint again is a no-op that returns that version, unless a new one is forced.
A quine comes from a training workdir (`export_workdir`) or the pretrained zoo
(`export_pretrained`).
"""

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile

from absl import logging
import numpy as np
import tensorflow as tf

import formats
from export import dump as dump_lib
from export import manifest as manifest_lib
from export import saved_model
from export.saved_model import ExportError
from models import build_quine
from models.config import ModelConfig

CONFIG_FILE = formats.CONFIG_FILE
CHECKPOINT_DIR = formats.CHECKPOINT_DIR
METRICS_FILE = formats.METRICS_FILE
_MODEL_NAME = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.-]*$')
# What dump.atomic_directory leaves beside version N when an export is killed: the folder being
# written (.N.tmp-*), or, during an overwrite, the previous version moved aside (.N.old-*).
_LEFTOVER = re.compile(r'^\.(?P<version>\d+)\.(?P<kind>tmp|old)-')
# How closely the exported ONNX graph must reproduce the live model (relative to the output scale).
_RTOL = 1e-5


# --------------------------------------------------------------------------- from a workdir


def read_workdir_config(workdir):
  """The ModelConfig recorded in a training workdir's config.json.

  Raises:
    ExportError: no config.json, or one without a usable 'model' entry.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    raise ExportError(f'{path} is missing: {workdir} is not a training workdir')
  try:
    with tf.io.gfile.GFile(path) as f:
      return ModelConfig.from_dict(json.load(f)['model']).validate()
  except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
    raise ExportError(f'{path}: no usable model config ({type(e).__name__}: {e})') from e


def _last_metrics(workdir):
  path = os.path.join(workdir, METRICS_FILE)
  if not tf.io.gfile.exists(path):
    return {}
  with tf.io.gfile.GFile(path) as f:
    lines = [line for line in f if line.strip()]
  try:
    last = json.loads(lines[-1]) if lines else {}
  except json.JSONDecodeError:
    return {}
  keys = ('phase', 'epoch', 'generation', 'step', 'l_sr', 'rho', 'r2', 'weight_rms',
          'test_accuracy')
  return {k: last[k] for k in keys if k in last}


def _restore(model, path):
  """Restores every quine variable of `model` from `path` (a trainer's or a model's checkpoint).

  Raises:
    AssertionError: some variable of the model has no value in the checkpoint.
  """
  status = tf.train.Checkpoint(model=model).restore(path)
  try:
    status.assert_existing_objects_matched()
  finally:
    status.expect_partial()  # the optimizer's slots, targets and counters are not exported


def load_model(workdir):
  """Rebuilds the quine of a training workdir from its latest checkpoint.

  Args:
    workdir: a folder written by the trainers (config.json, checkpoints/).

  Returns:
    (model, source): the restored quine and a dict of provenance for the manifest.

  Raises:
    ExportError: no config, no checkpoint, or a checkpoint that does not fit the config.
  """
  config = read_workdir_config(workdir)
  checkpoint_dir = os.path.join(workdir, CHECKPOINT_DIR)
  latest = tf.train.latest_checkpoint(checkpoint_dir)
  if not latest:
    raise ExportError(f'{checkpoint_dir} holds no checkpoint: nothing to export from {workdir} '
                      '(train first, or point --workdir at a finished run)')
  model = build_quine(config)
  try:
    _restore(model, latest)
  except (AssertionError, ValueError, tf.errors.OpError) as error:
    missing = re.findall(r'path=([^,\s]+)', str(error))  # unmatched variables, not their values
    why = f'no value for {missing}' if missing else ' '.join(str(error).split())[:300]
    raise ExportError(f'{latest} does not hold every weight of the quine in {CONFIG_FILE}: '
                      f'{why}') from error
  # Names, not the exporting machine's absolute paths: the run's folder name and the checkpoint
  # inside it.
  source = {'workdir': os.path.basename(os.path.abspath(workdir)),
            'checkpoint': os.path.relpath(latest, workdir), 'last_metrics': _last_metrics(workdir)}
  return model, source


# --------------------------------------------------------------------------- versions


def versions(model_dir):
  """The numeric version folders under `model_dir`, ascending."""
  if not os.path.isdir(model_dir):
    return []
  return sorted(int(v) for v in os.listdir(model_dir)
                if v.isdigit() and os.path.isdir(os.path.join(model_dir, v)))


def _check_against_onnx(model, version_dir):
  """Runs the exported ONNX graph on a sample of coordinates and compares it with `model`."""
  import onnxruntime as ort  # pylint: disable=g-import-not-at-top
  n = model.num_weights
  coordinates = np.unique(np.linspace(0, n - 1, min(n, 4096)).astype(np.int64))
  feeds = {manifest_lib.ONNX_COORDINATES: coordinates}
  if model.config.classifies:
    feeds[manifest_lib.ONNX_IMAGES] = np.zeros([0, model.config.image_size], np.float32)
  session = ort.InferenceSession(os.path.join(version_dir, manifest_lib.ONNX_FILE),
                                 providers=['CPUExecutionProvider'])
  got = session.run([manifest_lib.ONNX_PREDICTED_WEIGHTS], feeds)[0]
  want = model.predict_weights(tf.constant(coordinates)).numpy()
  scale = max(float(np.max(np.abs(want))), 1e-12)
  if not np.max(np.abs(got - want)) <= _RTOL * scale:
    raise ExportError(f'the ONNX graph disagrees with the model: max |diff| '
                      f'{np.max(np.abs(got - want)):.3g} (scale {scale:.3g})')


def check_model_name(model_name):
  """Raises ExportError unless `model_name` can name a model folder (and a served model)."""
  if not _MODEL_NAME.match(model_name or ''):
    raise ExportError(f'model name {model_name!r} must be letters, digits, _ . - '
                      '(and not start with . or -)')


@contextlib.contextmanager
def _exclusive(model_dir):
  """Locks the model folder itself (flock): exports into one model folder take turns.

  No lock file is left beside the versions, and the kernel releases the lock when its process
  dies (SIGKILL included), so a lock is never stale.
  """
  os.makedirs(model_dir, exist_ok=True)
  fd = os.open(model_dir, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield
  finally:
    os.close(fd)  # releases the lock


def _remove_leftovers(model_dir):
  """Cleans up after exports that were killed (call with the lock held: none is running).

  A half-written `.N.tmp-*` folder is removed. A `.N.old-*` folder is the previous version N of
  an overwrite: removed if the new N is in place, else renamed back to N (the overwrite never
  happened).
  """
  for name in sorted(os.listdir(model_dir)):
    match = _LEFTOVER.match(name)
    path = os.path.join(model_dir, name)
    if not match or not os.path.isdir(path):
      continue
    version_dir = os.path.join(model_dir, match['version'])
    if match['kind'] == 'old' and not os.path.exists(version_dir):
      os.rename(path, version_dir)
      logging.warning('Restored %s from %s, left by an overwrite that was killed', version_dir,
                      path)
    else:
      shutil.rmtree(path, ignore_errors=True)
      logging.warning('Removed %s, left by an export that was killed', path)


def _theta_sha256(theta):
  return hashlib.sha256(np.asarray(theta, '<f4').tobytes()).hexdigest()


def _same_export(model_dir, config, source):
  """The newest version folder if it holds exactly this export (same checkpoint and weights)."""
  found = versions(model_dir)
  if not found:
    return None
  newest = os.path.join(model_dir, str(found[-1]))
  try:
    manifest = dump_lib.read_dump(newest).manifest
  except (dump_lib.DumpError, OSError, ValueError):
    return None  # damaged or not a dump: export a new version rather than point at it
  old = manifest.get('source') or {}
  same = (old.get('theta_sha256') == source['theta_sha256']
          and old.get('checkpoint') == source.get('checkpoint')
          and manifest.get('model', {}).get('config') == json.loads(json.dumps(config.to_dict())))
  return newest if same else None


def export_model(model, export_base, model_name, version=None, overwrite=False, source=None,
                 force_new_version=False):
  """Exports a live quine into `<export_base>/<model_name>/<version>/`, atomically.

  Args:
    model: a built quine (VanillaQuine or AuxiliaryQuine).
    export_base: the folder TF Serving's model_base_path points above.
    model_name: the model's folder name (and serving name).
    version: positive integer; None means one more than the newest existing version (or 1).
    overwrite: replace an existing version instead of refusing.
    source: provenance recorded in the manifest (e.g. from `load_model`).
    force_new_version: with version None, export even when the newest version already holds
      these weights from the same checkpoint (otherwise that version is returned, unchanged).

  Returns:
    The version folder's path.

  Raises:
    ExportError: a bad name or version, or an existing version without overwrite.
  """
  check_model_name(model_name)
  if version is not None and int(version) <= 0:
    raise ExportError(f'version {version} must be a positive integer')
  model_dir = os.path.join(os.path.abspath(export_base), model_name)
  theta = model.flatten().numpy()
  source = dict(source or {}, theta_sha256=_theta_sha256(theta))
  try:
    with _exclusive(model_dir):
      _remove_leftovers(model_dir)
      if version is None and not force_new_version:
        existing = _same_export(model_dir, model.config, source)
        if existing:
          logging.warning('%s already holds this export (checkpoint %s, theta sha256 %s...): '
                          'not exported again (--force_new_version exports another version)',
                          existing, source.get('checkpoint'), source['theta_sha256'][:12])
          return existing
      return _write_version(model, model_dir, version, overwrite, source, theta)
  except OSError as e:
    if isinstance(e, FileExistsError):
      raise ExportError(str(e)) from e
    raise ExportError(f'cannot export into {model_dir}: {e.strerror or e}') from e


def _write_version(model, model_dir, version, overwrite, source, theta):
  """Writes version `version` (None: the next) of `model_dir` atomically; returns its path."""
  if version is None:
    version = (versions(model_dir) or [0])[-1] + 1
  version_dir = os.path.join(model_dir, str(int(version)))
  if os.path.exists(version_dir) and not overwrite:
    raise ExportError(f'{version_dir} already exists; pick another version or pass --overwrite')
  source = dict(source, model_name=os.path.basename(model_dir), version=int(version),
                exported_at=datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec='seconds'),
                tensorflow=tf.__version__)
  try:
    with dump_lib.atomic_directory(version_dir, overwrite) as tmp:
      saved_model.write_saved_model(model, tmp)
      dump_lib.write_dump_files(
          tmp, model.config.to_dict(), theta, saved_model.onnx_model(model).SerializeToString(),
          lineage={'generation': 0, 'parent': None, 'built_with': 'tensorflow'}, source=source)
      dump_lib.read_dump(tmp)
      _check_against_onnx(model, tmp)
  except FileExistsError as e:
    raise ExportError(str(e)) from e
  return version_dir


def load_pretrained(name):
  """The pretrained quine `name` (models/pretrained/) and its provenance for the manifest.

  Raises:
    ExportError: no pretrained quine of that name, or its files are damaged.
  """
  from models import zoo  # pylint: disable=g-import-not-at-top
  try:
    model = zoo.load_pretrained(name)
  except zoo.PretrainedError as e:
    raise ExportError(str(e)) from e
  return model, {'pretrained': name, 'command': zoo.entry(name)['command']}


def export_pretrained(name, export_base, model_name=None, version=None, overwrite=False,
                      force_new_version=False):
  """Exports pretrained quine `name` (SavedModel, ONNX and dump rebuilt from its weights).

  Returns:
    The version folder `<export_base>/<model_name or name>/<version>` (see `export_model`).

  Raises:
    ExportError: an unknown name, or see `export_model`.
  """
  check_model_name(model_name or name)  # before the quine is built
  model, source = load_pretrained(name)
  return export_model(model, export_base, model_name or name, version, overwrite, source,
                      force_new_version)


@contextlib.contextmanager
def temporary_pretrained_export(names):
  """Exports pretrained quines into a temporary export base, removed on exit.

  Yields:
    {name: the model folder `<base>/<name>` holding version 1}.
  """
  _remove_orphaned_pretrained_exports()
  with tempfile.TemporaryDirectory(prefix=f'{_PRETRAINED_PREFIX}{os.getpid()}-') as base:
    yield {name: os.path.dirname(export_pretrained(name, base)) for name in names}


_PRETRAINED_PREFIX = 'quine-zoo-pretrained-'


def _remove_orphaned_pretrained_exports():
  """Removes the temporary exports of processes that are gone (a server killed with SIGKILL
  cannot remove its own); each folder's name carries its process id."""
  pattern = re.compile(rf'^{_PRETRAINED_PREFIX}(\d+)-')
  root = tempfile.gettempdir()
  for name in os.listdir(root):
    match = pattern.match(name)
    if not match:
      continue
    try:
      os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
      shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    except (PermissionError, OverflowError):  # alive under another user, or not a pid
      pass


def export_workdir(workdir, export_base, model_name, version=None, overwrite=False,
                   force_new_version=False):
  """Exports the latest checkpoint of a training workdir (see `export_model`).

  Args:
    workdir: the training run's folder.
    export_base: base folder of exports.
    model_name: name of the model folder under export_base.
    version: positive integer, or None for the next free one.
    overwrite: replace an existing version.
    force_new_version: export a new version even if the newest one holds this checkpoint.

  Returns:
    The path `<export_base>/<model_name>/<version>`: with version None and the newest version
    already exported from this checkpoint, that version's.

  Raises:
    ExportError: no checkpoint or config in workdir, or see `export_model`.
  """
  model, source = load_model(workdir)
  return export_model(model, export_base, model_name, version, overwrite, source,
                      force_new_version)
