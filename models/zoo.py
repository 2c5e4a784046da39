"""Pretrained quines, loaded by name: `list_pretrained()`, `load_pretrained(name)`.

The zoo's animals live in `models/pretrained/`: `catalogue.json` lists them (kind, architecture,
the command that produced each, its measured numbers and the hashes of its files), and each
`<name>/` folder is a weights-only dump in the format of `export.dump` (`manifest.json` with the
model config, `weights.safetensors` with theta in canonical order). The SavedModel and ONNX graph
of a pretrained quine are rebuilt from those two files on demand (`export/export_model.py
--pretrained=NAME`). `scripts/pretrained.py` regenerates the folder and the catalogue.

  import models
  models.list_pretrained()                        # ['paper_adamax', ..., 'aux_replicate']
  quine = models.load_pretrained('fixed_point_w100_s0')
  quine.predict_weights(tf.range(quine.num_weights))

Reading the catalogue, the configs and the weights needs NumPy and safetensors only;
`load_pretrained` builds the Keras model (TensorFlow).
"""

import functools
import hashlib
import json
import os

import numpy as np

import formats
from models.architecture import Architecture
from models.config import ModelConfig

PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'pretrained')
CATALOGUE_FILE = 'catalogue.json'
CATALOGUE_FORMAT = 'quine-zoo-catalogue'
MANIFEST_FILE = formats.MANIFEST_FILE
WEIGHTS_FILE = formats.WEIGHTS_FILE


class PretrainedError(ValueError):
  """A pretrained quine cannot be found or read; the message says which and why."""


@functools.lru_cache(maxsize=None)
def _read_catalogue(path):
  try:
    with open(path) as f:
      catalogue = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise PretrainedError(f'{path}: cannot read the catalogue of pretrained quines ({e})') from e
  if catalogue.get('format') != CATALOGUE_FORMAT:
    raise PretrainedError(f'{path}: not a {CATALOGUE_FORMAT} file')
  return {entry['name']: entry for entry in catalogue['entries']}


def catalogue(directory=PRETRAINED_DIR):
  """{name: catalogue entry} in catalogue order (a copy: editing it changes nothing)."""
  return json.loads(json.dumps(_read_catalogue(os.path.join(directory, CATALOGUE_FILE))))


def list_pretrained(directory=PRETRAINED_DIR):
  """The names of the pretrained quines, in catalogue order."""
  return list(_read_catalogue(os.path.join(directory, CATALOGUE_FILE)))


def entry(name, directory=PRETRAINED_DIR):
  """The catalogue entry of `name`.

  Raises:
    PretrainedError: no pretrained quine has that name (the message lists the names).
  """
  entries = _read_catalogue(os.path.join(directory, CATALOGUE_FILE))
  if name not in entries:
    raise PretrainedError(f'no pretrained quine named {name!r}; the zoo has '
                          f'{", ".join(entries)}')
  return json.loads(json.dumps(entries[name]))


def pretrained_dir(name, directory=PRETRAINED_DIR):
  """The folder of pretrained quine `name` (a weights-only dump); checks the name."""
  entry(name, directory)
  return os.path.join(directory, name)


def _checked_bytes(name, filename, directory):
  """The bytes of one file of `name`, checked against the catalogue's size and sha256."""
  path = os.path.join(directory, name, filename)
  expected = entry(name, directory)['files'][filename]
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise PretrainedError(f'{path}: cannot read ({e.strerror or e})') from e
  digest = hashlib.sha256(data).hexdigest()
  if len(data) != expected['bytes'] or digest != expected['sha256']:
    raise PretrainedError(f'{path}: {len(data)} bytes, sha256 {digest[:12]}...; the catalogue '
                          f'says {expected["bytes"]} bytes, {expected["sha256"][:12]}...: the '
                          'file was changed or damaged')
  return data


def load_config(name, directory=PRETRAINED_DIR):
  """The ModelConfig of pretrained quine `name` (from its manifest)."""
  data = _checked_bytes(name, MANIFEST_FILE, directory)
  return ModelConfig.from_dict(json.loads(data)['model']['config']).validate()


def load_theta(name, directory=PRETRAINED_DIR):
  """theta of pretrained quine `name`: float32 [N] in canonical order, checked against its hash.

  Raises:
    PretrainedError: unknown name, or files that do not match the catalogue or the config.
  """
  return _theta(name, load_config(name, directory), directory)


def _theta(name, config, directory):
  arch = Architecture(config)
  where = os.path.join(directory, name, WEIGHTS_FILE)
  try:
    tensors, _ = formats.decode_safetensors(_checked_bytes(name, WEIGHTS_FILE, directory), where)
  except formats.FormatError as e:
    raise PretrainedError(str(e)) from e
  parts = []
  for weight, shape in arch.weights:
    value = tensors.get(weight)
    if value is None or value.shape != shape or value.dtype != np.float32:
      raise PretrainedError(f'{os.path.join(directory, name, WEIGHTS_FILE)}: tensor {weight!r} '
                            f'is {None if value is None else (value.dtype, value.shape)}, the '
                            f'config implies float32 {shape}')
    parts.append(value.reshape(-1))
  return np.concatenate(parts)


def load_pretrained(name, directory=PRETRAINED_DIR):
  """The pretrained quine `name` as a built Keras model holding its weights.

  Its `config` attribute is the quine's ModelConfig; `catalogue()[name]` says how it was made
  and what it measures.

  Raises:
    PretrainedError: unknown name, or damaged files.
  """
  from models.quine import build_quine  # pylint: disable=g-import-not-at-top  (TensorFlow)
  config = load_config(name, directory)
  model = build_quine(config, name=name)
  model.assign_flat(_theta(name, config, directory))
  return model
