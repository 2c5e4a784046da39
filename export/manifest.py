"""The manifest of a dump: what another framework needs to rebuild a quine, derived from models/.

A dump's manifest.json records the architecture (layers, activations with their formulas, kernel
layout, the forward pass in words), the canonical weight order, the fixed random projections and
their generator, the ONNX interface, the lineage and provenance, and the hashes of the files.
Everything but the provenance is derived here from `models.architecture.Architecture`, and
`check` verifies that a manifest read back says what its own model config implies.

NumPy only (no TensorFlow, no onnx).
"""

import formats
from models import generator
from models.architecture import Architecture

# The dump's file names and format tag are formats' (the one statement of every on-disk layout).
FORMAT = formats.DUMP_FORMAT
FORMAT_VERSION = formats.DUMP_FORMAT_VERSION
MANIFEST_FILE = formats.MANIFEST_FILE
WEIGHTS_FILE = formats.WEIGHTS_FILE
ONNX_FILE = formats.ONNX_FILE
ONNX_OPSET = 18  # BitwiseXor, needed when the graph hashes the projection itself, is opset 18

# The ONNX interface every dump's model.onnx has (names are API, like Keras layer names).
ONNX_COORDINATES = 'coordinates'
ONNX_IMAGES = 'images'
ONNX_PREDICTED_WEIGHTS = 'predicted_weights'
ONNX_LOGITS = 'logits'
ONNX_PROBABILITIES = 'probabilities'
ONNX_PROJECTION_PREFIX = 'projection/'
# The largest coordinate projection an export stores as a table (64K entries, 256 KB); larger
# ones are computed in the exported graphs by the generator.
EXPORT_TABLE_ENTRIES = 1 << 16


class DumpError(formats.FormatError):
  """A dump cannot be used; the message names the file and the problem."""


def architecture(config, where=MANIFEST_FILE):
  """The Architecture of a ModelConfig dict; DumpError naming `where` if the config is unusable."""
  if not isinstance(config, dict):
    raise DumpError(f'{where}: model.config is missing')
  try:
    return Architecture(config)
  except (TypeError, ValueError) as e:
    raise DumpError(f'{where}: model.config is unusable: {e}') from e


def onnx_initializer(arch, which):
  """The ONNX initializer name holding projection `which` as a table, or None when hashed."""
  spec = arch.projections[which]
  # The image projection (pixels x image units, 39,200 entries for MNIST) is a table for a
  # matmul. The coordinate projection is a table only up to EXPORT_TABLE_ENTRIES; beyond, the
  # exported graphs (ONNX and SavedModel) hash it from its seed, so that an export carries its
  # weights and not an N x d table (8 MB at the paper's size; benchmarks/slim_export.py).
  if which == 'image' or spec.num_rows * spec.num_columns <= EXPORT_TABLE_ENTRIES:
    return ONNX_PROJECTION_PREFIX + which
  return None


def projection_specs(arch):
  """The fixed projections of the quine, as manifest entries."""
  return {which: {'generator': generator.NAME, 'seed': spec.seed, 'num_rows': spec.num_rows,
                  'num_columns': spec.num_columns, 'std': spec.std, 'feeds': spec.feeds,
                  'onnx_initializer': onnx_initializer(arch, which)}
          for which, spec in arch.projections.items()}


def architecture_section(arch):
  """The manifest's 'architecture': layers, activations and the forward pass in words."""
  config = arch.config
  act, out_act = arch.activation.name, arch.output_activation.name
  kernel = 'standardise({})' if arch.standardised else '{}'
  trunk = [f'h = {act}(h @ {kernel.format(name)})' for name in arch.hidden]
  section = {
      'kind': arch.kind,
      'kernel_layout': '[in, out], row-major (C order); a layer computes y = x @ kernel; no biases',
      'layers': [{'name': name, 'shape': list(shape), 'activation': a.name}
                 for (name, shape), (_, a) in zip(arch.weights, arch.weight_path)],
      'activations': {a.name: a.describe(arch.params)
                      for a in sorted({arch.activation, arch.output_activation},
                                      key=lambda a: a.name)},
  }
  if arch.params:
    section['activation_params'] = dict(arch.params)
  if arch.standardised:
    section['kernel_norm'] = {
        'applies_to': list(arch.hidden),
        'formula': (f'standardise(W) = gain * W / (sqrt(mean(W ** 2)) * sqrt(W.shape[0])), '
                    f'gain = {float(config.gain)!r} (no parameters; W is the stored kernel)')}
  width, units = config.width, arch.coordinate_units
  if arch.classifies:
    section['layers'].append({'name': 'class_head', 'shape': [width, config.num_classes],
                              'activation': 'none; logits = (h @ class_head) / temperature',
                              'temperature': float(config.temperature)})
    section['predict_weights'] = [
        f'h = concat([P_coordinate[c], zeros([B, {width - units}])], axis=1)  # zero image',
        *trunk, f'predicted_weights = {out_act}(h @ weight_head)[:, 0]']
    section['classify'] = [
        f'images: float32 [M, {config.image_size}] (pixels / 255, flattened row-major)',
        f'h = concat([zeros([M, {units}]), images @ P_image], axis=1)  # zero coordinate',
        *trunk, f'logits = (h @ class_head) / {float(config.temperature)!r}',
        'probabilities = softmax(logits, axis=1)']
  else:
    section['predict_weights'] = ['h = P_coordinate[c]  # [B, width]', *trunk,
                                  f'predicted_weights = {out_act}(h @ weight_head)[:, 0]']
  return section


def onnx_interface(arch):
  """The inputs, outputs, initializer names and activation ops of a dump's model.onnx."""
  config = arch.config
  inputs = {ONNX_COORDINATES: 'int64 [B], each in [0, num_weights)'}
  outputs = {ONNX_PREDICTED_WEIGHTS: 'float32 [B]'}
  if arch.classifies:
    inputs[ONNX_IMAGES] = (f'float32 [M, {config.image_size}]; feed M = 0 (or B = 0 '
                           'coordinates) to run one head only')
    outputs[ONNX_LOGITS] = f'float32 [M, {config.num_classes}]'
    outputs[ONNX_PROBABILITIES] = f'float32 [M, {config.num_classes}]'
  specs = projection_specs(arch)
  coordinate = specs['coordinate']['onnx_initializer']
  return {
      'file': ONNX_FILE, 'opset': ONNX_OPSET, 'inputs': inputs, 'outputs': outputs,
      'weight_initializers': {name: name for name in arch.weight_names},
      'projection_initializers': {k: v['onnx_initializer'] for k, v in specs.items()
                                  if v['onnx_initializer']},
      'coordinate_projection': ('table initializer + Gather' if coordinate else
                                'computed in the graph by the generator (uint32 ops)'),
      'activation_ops': sorted({op for _, a in arch.weight_path for op in a.onnx_ops}),
  }


def build(config, lineage=None, source=None):
  """The manifest of a dump of a quine with ModelConfig dict `config` (without `files`).

  Args:
    config: ModelConfig.to_dict() of the quine.
    lineage: dict with generation (0 = exported from training), parent, built_with.
    source: free-form provenance (workdir, checkpoint, export time, ...).

  Returns:
    A JSON-serialisable dict.
  """
  arch = architecture(dict(config))
  tensors, offset = [], 0
  for name, shape in arch.weights:
    size = shape[0] * shape[1]
    tensors.append({'name': name, 'shape': list(shape), 'offset': offset, 'size': size})
    offset += size
  return {
      'format': FORMAT,
      'format_version': FORMAT_VERSION,
      'model': {'kind': arch.kind, 'num_weights': arch.num_weights,
                'config': arch.config.to_dict()},
      'architecture': architecture_section(arch),
      'weights': {
          'file': WEIGHTS_FILE, 'dtype': 'float32', 'byte_order': 'little',
          'order': arch.weight_names, 'tensors': tensors,
          'theta': 'concat([ravel(t) for t in order]) (C order); offset/size index theta',
      },
      'projections': {
          'note': 'fixed, not part of theta; reproduce with the generator or read the ONNX '
                  'initializer named in onnx_initializer',
          'generator': {'name': generator.NAME, 'definition': generator.DEFINITION},
          **projection_specs(arch)},
      'onnx': onnx_interface(arch),
      'lineage': dict(lineage or {'generation': 0, 'parent': None}),
      'source': dict(source or {}),
  }


def check(where, manifest):
  """Checks that a manifest read back says what its own model config implies.

  Args:
    where: the manifest's path, for messages.
    manifest: the parsed manifest.json (a dict with the 'model', 'weights', 'projections'
      sections).

  Returns:
    The Architecture of its model config.

  Raises:
    DumpError: naming the manifest and the first field that disagrees.
  """
  try:
    return _check(where, manifest)
  except (KeyError, TypeError, AttributeError) as e:
    raise DumpError(f'{where}: malformed ({type(e).__name__}: {e})') from e


def _check(where, manifest):
  arch = architecture(manifest['model'].get('config'), where)
  listed = [(t['name'], tuple(t['shape'])) for t in manifest['weights'].get('tensors', [])]
  if listed != arch.weights:
    raise DumpError(f'{where}: weights.tensors {listed} do not match the architecture of '
                    f'model.config, which implies {arch.weights}')
  if manifest['model'].get('num_weights') != arch.num_weights:
    raise DumpError(f'{where}: model.num_weights={manifest["model"].get("num_weights")} but the '
                    f'config implies {arch.num_weights}')
  if manifest['weights'].get('order') != arch.weight_names:
    raise DumpError(f'{where}: weights.order {manifest["weights"].get("order")} is not the '
                    f'canonical order {arch.weight_names}')
  for which, spec in projection_specs(arch).items():
    got = manifest['projections'].get(which, {})
    for key in ('generator', 'seed', 'num_rows', 'num_columns', 'std'):
      if got.get(key) != spec[key]:
        raise DumpError(f'{where}: projections.{which}.{key}={got.get(key)!r} but the model '
                        f'config implies {spec[key]!r}')
  if 'architecture' in manifest and manifest['architecture'] != architecture_section(arch):
    expected = architecture_section(arch)
    keys = sorted(k for k in set(expected) | set(manifest['architecture'])
                  if expected.get(k) != manifest['architecture'].get(k))
    raise DumpError(f'{where}: architecture.{keys[0]} does not say what model.config implies '
                    f'(edited after export?)')
  return arch
