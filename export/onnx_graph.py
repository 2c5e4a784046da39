"""A dump's ONNX graph, handled with the `onnx` package alone (no TensorFlow).

The graph itself is made once, from TensorFlow, by `export.saved_model.onnx_model`. Everything
here works on the finished file: naming initializers, checking them against the safetensors
weights and the projection generator, and swapping in new weights for a child of the quine (same
graph, new theta), which is how a lineage built in PyTorch or NumPy gets its model.onnx.
"""

import numpy as np
import onnx
from onnx import numpy_helper

from export import manifest as manifest_lib
from export.manifest import DumpError

MIN_OPSET = 17


def parse(data, where='model.onnx'):
  """An onnx.ModelProto from bytes; DumpError naming `where` if they are not a valid model."""
  try:
    model = onnx.load_from_string(data)
  except Exception as e:  # protobuf raises DecodeError, RuntimeWarning subclasses, ...
    raise DumpError(f'{where}: not a valid ONNX model ({type(e).__name__}: {e}); '
                             'truncated or damaged') from e
  if not model.graph.node:
    raise DumpError(f'{where}: holds no graph; truncated or damaged')
  return model


def opset(model):
  return max((o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')), default=0)


def initializers(model):
  """dict name -> NumPy array of the graph's initializers."""
  return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def rename_initializers(model, mapping):
  """Renames initializers (and every use of them) in place: mapping old name -> new name."""
  for init in model.graph.initializer:
    if init.name in mapping:
      init.name = mapping[init.name]
  for node in model.graph.node:
    for i, name in enumerate(node.input):
      if name in mapping:
        node.input[i] = mapping[name]
  for value in list(model.graph.input) + list(model.graph.value_info):
    if value.name in mapping:
      value.name = mapping[value.name]
  return model


def unfold_standardised(model, kernels, gain):
  """Puts S(W) = gain * W / (rms(W) sqrt(fan_in)) back into the graph as nodes, in place.

  tf2onnx folds the standardisation of a constant kernel into one constant initializer; a dump
  needs the kernel itself as the initializer (so that a child's weights can be swapped in) and
  the standardisation computed from it. Each folded initializer is found by value, replaced by
  nodes of the same output name, and the kernel is added under its canonical name.

  Args:
    model: the converted onnx.ModelProto.
    kernels: dict canonical name -> float32 kernel [in, out] of each standardised layer.
    gain: the standardisation's gain.

  Raises:
    ValueError: no initializer holds some kernel's standardisation.
  """
  graph = model.graph
  nodes = []
  for name, kernel in kernels.items():
    kernel = np.asarray(kernel, np.float32)
    scale = np.float32(gain / np.sqrt(kernel.shape[0]))
    want = kernel * scale / np.sqrt(np.mean(np.square(kernel)))
    folded = [init for init in graph.initializer if tuple(init.dims) == kernel.shape
              and np.allclose(numpy_helper.to_array(init), want, rtol=1e-5, atol=1e-7)]
    if not folded:
      raise ValueError(f'the ONNX graph holds no folded standardisation of {name!r}')
    out = folded[0].name
    for init in folded:
      graph.initializer.remove(init)
    graph.initializer.append(numpy_helper.from_array(kernel, name))
    graph.initializer.append(numpy_helper.from_array(scale, f'{name}/scale'))
    nodes += [
        onnx.helper.make_node('Mul', [name, name], [f'{name}/square']),
        onnx.helper.make_node('ReduceMean', [f'{name}/square'], [f'{name}/mean'], keepdims=0),
        onnx.helper.make_node('Sqrt', [f'{name}/mean'], [f'{name}/rms']),
        onnx.helper.make_node('Mul', [name, f'{name}/scale'], [f'{name}/scaled']),
        onnx.helper.make_node('Div', [f'{name}/scaled', f'{name}/rms'], [out])]
    # An auxiliary quine standardises a kernel on both of its paths (weights and classes), and
    # tf2onnx folds each into a copy of its own: every copy becomes the one computed from the
    # kernel, or a child's graph would keep its parent's.
    nodes += [onnx.helper.make_node('Identity', [out], [init.name]) for init in folded[1:]]
  for node in reversed(nodes):  # before every node that reads them
    graph.node.insert(0, node)
  return model


def with_weights(onnx_bytes, weights):
  """The same graph with new weight initializers.

  Args:
    onnx_bytes: a dump's serialised model.onnx.
    weights: dict canonical name -> array; each must replace an initializer of the same shape.

  Returns:
    The serialised new model.
  """
  model = parse(onnx_bytes)
  found = set()
  for init in model.graph.initializer:
    if init.name in weights:
      value = np.asarray(weights[init.name], np.float32)
      if tuple(init.dims) != value.shape:
        raise ValueError(f'initializer {init.name!r} has shape {list(init.dims)}, the new weight '
                         f'{list(value.shape)}')
      init.CopyFrom(numpy_helper.from_array(value, init.name))
      found.add(init.name)
  missing = set(weights) - found
  if missing:
    raise ValueError(f'the ONNX graph has no initializers {sorted(missing)}')
  return model.SerializeToString()


def check_dump(dump):
  """Checks a dump's model.onnx against its safetensors weights and manifest.

  Args:
    dump: an export.dump.Dump (manifest and weights already validated).

  Raises:
    DumpError: naming model.onnx and the disagreement.
  """
  where = dump.onnx_path
  with open(where, 'rb') as f:
    model = parse(f.read(), where)
  if opset(model) < MIN_OPSET:
    raise DumpError(f'{where}: opset {opset(model)} < {MIN_OPSET}')
  interface = dump.manifest['onnx']
  inputs = {v.name for v in model.graph.input}
  outputs = {v.name for v in model.graph.output}
  if set(interface['inputs']) - inputs or set(interface['outputs']) - outputs:
    raise DumpError(
        f'{where}: inputs {sorted(inputs)} / outputs {sorted(outputs)} do not include the '
        f'manifest\'s {sorted(interface["inputs"])} / {sorted(interface["outputs"])}')
  ops = {node.op_type for node in model.graph.node}
  missing = [op for op in manifest_lib.onnx_interface(dump.architecture)['activation_ops']
             if op not in ops]
  if missing:
    raise DumpError(f'{where}: the graph has no {missing} node, which the activations of '
                    f'{manifest_lib.MANIFEST_FILE} need (edited after export?)')
  values = initializers(model)
  for name, init_name in interface['weight_initializers'].items():
    if init_name not in values:
      raise DumpError(f'{where}: no initializer {init_name!r} for weight {name!r}')
    got, want = values[init_name], dump.weights[name]
    if got.shape != want.shape or got.dtype != want.dtype:
      raise DumpError(
          f'{where}: initializer {init_name!r} is {got.dtype} {list(got.shape)}, '
          f'{manifest_lib.WEIGHTS_FILE} has {want.dtype} {list(want.shape)}')
    if not np.array_equal(got, want):
      diff = np.abs(got.astype(np.float64) - want)
      raise DumpError(
          f'{where}: initializer {init_name!r} disagrees with {manifest_lib.WEIGHTS_FILE} '
          f'({int(np.sum(got != want))} of {want.size} values differ, max |diff| '
          f'{np.nanmax(diff):.3g})')
  for which, init_name in interface.get('projection_initializers', {}).items():
    if init_name not in values:
      raise DumpError(f'{where}: no initializer {init_name!r} for the {which} projection')
    want = dump.projection(which)
    got = values[init_name]
    if got.shape != want.shape or got.tobytes() != want.tobytes():
      raise DumpError(
          f'{where}: initializer {init_name!r} is not the {which} projection that the manifest\'s '
          f'generator gives bit-for-bit')
