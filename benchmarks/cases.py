"""The benches: what one worker process builds and times (see harness.py).

A bench is built by a factory `make_*(threads=..., **kwargs)` inside its worker, so the framework it
needs (TensorFlow or PyTorch, never both) is imported there, after the worker's thread settings and
environment are in place. It offers `run(case)` (one timed repeat: wall and process CPU seconds,
measured around the work alone) and `info(case)`: the work done (FLOPs, coordinates) and how to
read the time.

Actions (the kwargs map each case name to one):
  epoch      one training epoch through the implementation's own epoch function;
  steps      a fixed block of training steps (the first block of an epoch's shuffled minibatches),
             reported scaled to a whole epoch (`scale_to_epoch`);
  full_pass  the full self-replication pass: all N predictions, L_SR and rho as Python floats.

FLOPs count 2 per multiply-add of the actual layers (projection rows are gathered or hashed: no
FLOPs). A full pass costs N * (num_hidden * 2 d^2 + 2 d). A training step on B coordinates costs
the forward pass, the kernel gradients and the input gradients of every layer but the first.
"""

import os
import time

import numpy as np

# TrainConfig.eval_chunk_size's default (tests/test_benchmarks.py checks that they agree): the full
# passes' layer shapes [chunk, d] x [d, d] are timed as matmuls beside them. GRAPH_EVAL_CHUNK is the
# default before the library adopted the smaller chunks (the quine_zoo_graph rows).
LIBRARY_EVAL_CHUNK = 1 << 13
GRAPH_EVAL_CHUNK = 1 << 16


def _full_pass_flops(num_weights, width, num_hidden=2):
  return num_weights * (num_hidden * 2 * width * width + 2 * width)


def _step_flops(batch_size, width, num_hidden=2):
  forward = num_hidden * 2 * batch_size * width * width + 2 * batch_size * width
  kernel_grads = forward
  input_grads = (num_hidden - 1) * 2 * batch_size * width * width + 2 * batch_size * width
  return forward + kernel_grads + input_grads


def _timed(fn):
  """(wall seconds, CPU seconds of this process, all threads) of fn()."""
  cpu, t0 = time.process_time(), time.perf_counter()
  fn()
  return time.perf_counter() - t0, time.process_time() - cpu


def _configure_tensorflow(threads):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if threads:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
  return tf


def _configure_torch(threads):
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads or os.cpu_count())
  return torch


# --------------------------------------------------------------------------- matmul


class _Matmul:
  """float32 C = A @ B for each shape; case 'matmul_{m}x{k}x{n}'."""

  def __init__(self, framework, threads, shapes):
    self._shapes = {f'matmul_{m}x{k}x{n}': (m, k, n) for m, k, n in shapes}
    self._operands = {}
    if framework == 'tensorflow':
      tf = _configure_tensorflow(threads)
      self._matmul = tf.function(tf.matmul)
      make = lambda shape: tf.random.stateless_normal(shape, seed=[0, 0])
    else:
      torch = _configure_torch(threads)
      self._matmul = torch.matmul
      make = lambda shape: torch.randn(*shape)
    for case, (m, k, n) in self._shapes.items():
      self._operands[case] = (make([m, k]), make([k, n]))

  def run(self, case):
    a, b = self._operands[case]
    return _timed(lambda: self._matmul(a, b))

  def info(self, case):
    m, k, n = self._shapes[case]
    return {'flops': 2 * m * k * n, 'shape': [m, k, n]}


def make_tf_matmul(threads, shapes):
  return _Matmul('tensorflow', threads, shapes)


def make_torch_matmul(threads, shapes):
  return _Matmul('torch', threads, shapes)


# --------------------------------------------------------------------------- TensorFlow quines


def _train_config(kind, width, batch_size, steps_per_loop=0, eval_chunk_size=None,
                  jit_compile=None, model=None):
  """The paper preset at another width; None keeps the library's default of that field."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from trainers import configs  # pylint: disable=g-import-not-at-top
  base = configs.PRESETS_BY_KIND[kind]['paper']
  model_config = dataclasses.replace(base.model, width=width, **(model or {}))
  overrides = dict(model=model_config, batch_size=batch_size, steps_per_loop=steps_per_loop)
  if eval_chunk_size:
    overrides['eval_chunk_size'] = eval_chunk_size
  if jit_compile is not None:
    overrides['jit_compile'] = jit_compile
  return dataclasses.replace(base, **overrides).validate()


class _TfQuine:
  """A trainer of the library and its epoch / steps / full pass.

  With `peak_shape`, every full pass is paired with a float32 tf.matmul of that shape timed just
  before and just after it in the same process: the pass's fraction of the matmul peak is then
  taken repeat by repeat, against the peak of that moment (other work on a shared machine moves
  both alike). The operands add 3 x 4 x m x n bytes (48 MiB for 2048^2) to the worker's memory.
  """

  def __init__(self, trainer, actions, steps, peak_shape=None):
    self.trainer = trainer
    self._actions = actions
    self._peak = None
    self._paired_peaks = []
    if peak_shape:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      m, k, n = peak_shape
      self._peak = (tf.function(tf.matmul), tf.random.stateless_normal([m, k], seed=[0, 0]),
                    tf.random.stateless_normal([k, n], seed=[0, 1]), 2 * m * k * n)
      self._peak[0](*self._peak[1:3])  # traced here, not in the first timed pair
    self._phase = 0
    self._block = None
    config = trainer.config
    self._epoch_steps = -(-config.model.num_weights // config.batch_size)
    if 'steps' in actions.values():
      trainer.targets.assign(trainer.model.flatten())
      self._block = trainer.epoch_batches(1)[0]
      self._steps = int(self._block.shape[0])

  def run(self, case):
    action = self._actions[case]
    if action == 'epoch':
      self._phase += 1
      return _timed(lambda: self.trainer.run_epoch('optimize', self._phase))
    if action == 'steps':
      return _timed(lambda: float(self.trainer.train_block(self._block)))
    if self._peak is None:
      return _timed(self.trainer.replication)
    matmul, a, b, flops = self._peak
    before, _ = _timed(lambda: matmul(a, b))
    seconds = _timed(self.trainer.replication)
    after, _ = _timed(lambda: matmul(a, b))
    self._paired_peaks.append(2 * flops / (before + after) / 1e9)
    return seconds

  def info(self, case):
    config = self.trainer.config
    n, d, b = config.model.num_weights, config.model.width, config.batch_size
    out = {'num_weights': n, 'width': d, 'batch_size': b,
           'projection_table': self.trainer.model.coordinate_projection.materialised,
           # What the trainer resolved (config.jit_compile, and a single replica).
           'jit_compile': bool(getattr(self.trainer, 'jit_compile', False))}
    action = self._actions[case]
    if action == 'full_pass':
      out.update(flops=_full_pass_flops(n, d), units=n, unit='predictions/s',
                 eval_chunk_size=min(config.eval_chunk_size, n))
      if self._peak is not None:
        out['paired_peak_gflops'] = list(self._paired_peaks)  # warm-ups first
    else:
      # An auxiliary step also projects images and runs the class head: no FLOP count given.
      flops = None if config.model.classifies else _step_flops(b, d) * (n // b)
      out.update(flops=flops, units=n, unit='coordinates/s', epoch_steps=self._epoch_steps)
      if action == 'steps':
        out.update(measured_steps=self._steps, scale_to_epoch=self._epoch_steps / self._steps)
    return out


def make_tf_vanilla(threads, width, batch_size, actions, steps=0, eval_chunk_size=None,
                    jit_compile=None, peak_shape=None):
  """A vanilla quine trainer (trainers.train_lib.QuineTrainer).

  `eval_chunk_size` and `jit_compile` override the library's defaults (None keeps them).
  """
  _configure_tensorflow(threads)
  from trainers import train_lib  # pylint: disable=g-import-not-at-top
  config = _train_config('vanilla', width, batch_size, steps, eval_chunk_size, jit_compile)
  return _TfQuine(train_lib.QuineTrainer(config), actions, steps, peak_shape)


def _load_data(data_path):
  from trainers import data as data_lib  # pylint: disable=g-import-not-at-top
  with np.load(data_path) as f:
    return data_lib.Mnist(*(f[k] for k in ('train_images', 'train_labels', 'test_images',
                                           'test_labels')))


def make_tf_aux(threads, width, data_path, actions, eval_chunk_size=None, jit_compile=None,
                model=None):
  """An auxiliary quine trainer (trainers.aux_lib.AuxTrainer), defaults overridden as above."""
  _configure_tensorflow(threads)
  from trainers import aux_lib  # pylint: disable=g-import-not-at-top
  config = _train_config('auxiliary', width, 10, eval_chunk_size=eval_chunk_size,
                         jit_compile=jit_compile, model=model)
  return _TfQuine(aux_lib.AuxTrainer(config, _load_data(data_path)), actions, 0)


# --------------------------------------------------------------------------- PyTorch baseline


class _TorchQuine:
  """The PyTorch-eager baseline's epoch and full pass."""

  def __init__(self, torch, model, batch_size, actions, data=None):
    self._torch = torch
    self.model = model
    self.optimizer = torch.optim.Adamax(model.parameters(), lr=0.002)
    self._batch_size = batch_size
    self._actions = actions
    self._data = data

  def run(self, case):
    from benchmarks import torch_baseline  # pylint: disable=g-import-not-at-top
    if self._actions[case] == 'full_pass':
      return _timed(lambda: torch_baseline.replication(self.model))
    if self._data is None:
      return _timed(lambda: torch_baseline.train_epoch(self.model, self.optimizer,
                                                       self._batch_size))
    return _timed(lambda: torch_baseline.train_aux_epoch(self.model, self.optimizer, *self._data,
                                                         batch_size=self._batch_size))

  def info(self, case):
    n, d, b = self.model.num_weights, self.model.width, self._batch_size
    out = {'num_weights': n, 'width': d, 'batch_size': b,
           'projection_table': self.model.coordinate_projection.table is not None}
    if self._actions[case] == 'full_pass':
      out.update(flops=_full_pass_flops(n, d), units=n, unit='predictions/s')
    else:
      flops = None if self._data is not None else _step_flops(b, d) * (n // b)
      out.update(flops=flops, units=n, unit='coordinates/s', epoch_steps=-(-n // b))
    return out


def make_torch_vanilla(threads, width, batch_size, actions):
  torch = _configure_torch(threads)
  from benchmarks import torch_baseline  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  return _TorchQuine(torch, torch_baseline.VanillaQuine(width), batch_size, actions)


def make_torch_aux(threads, width, data_path, actions, model=None):
  torch = _configure_torch(threads)
  from benchmarks import torch_baseline  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  with np.load(data_path) as f:
    images, labels = torch.from_numpy(f['train_images']), torch.from_numpy(f['train_labels'])
  model_kwargs = dict(model or {})
  model_kwargs.pop('image_size', None)
  quine = torch_baseline.AuxiliaryQuine(width, image_size=images.shape[1], **model_kwargs)
  return _TorchQuine(torch, quine, 10, actions, data=(images, labels.long()))


# --------------------------------------------------------------------------- data


def save_mnist(path, data_dir):
  """Loads MNIST with the project's loader and saves it as an .npz for the workers."""
  from trainers import data as data_lib  # pylint: disable=g-import-not-at-top
  mnist = data_lib.load_mnist(data_dir)
  np.savez(path, train_images=mnist.train_images, train_labels=mnist.train_labels,
           test_images=mnist.test_images, test_labels=mnist.test_labels)


def save_random_mnist(path, num_train=512, num_test=64, image_size=784, seed=0):
  """Random arrays shaped like MNIST (for --quick): images in [0, 1], labels 0..9."""
  rng = np.random.default_rng(seed)
  np.savez(path,
           train_images=rng.random((num_train, image_size), dtype=np.float32),
           train_labels=rng.integers(0, 10, num_train).astype(np.int32),
           test_images=rng.random((num_test, image_size), dtype=np.float32),
           test_labels=rng.integers(0, 10, num_test).astype(np.int32))
