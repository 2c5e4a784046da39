"""Prototype variants of the training library, measured side by side with the real code path.

Nothing here is used by the trainers: each class is a candidate change to `trainers/train_lib.py` or
`trainers/aux_lib.py`, kept as a subclass so that the benchmark can time it next to the unchanged
library in the same run. The benchmark notes (benchmarks/README.md) say which ones win and why.

  JitBlockTrainer   the library's own `_train_block` (tf.range loop of Keras optimizer steps),
                    compiled whole with XLA: `tf.function(..., jit_compile=True)`. One line.
  FusedLoopTrainer  the epoch as one functional `tf.while_loop` over tensors (weights and Adamax
                    slots are loop values, written back to the variables once at the end), compiled
                    with XLA. Needs each optimizer's update rule written out (only Adamax here).
  JitAuxTrainer     the auxiliary epoch without tf.data: the same shuffled coordinates and image
                    draws as `AuxTrainer.dataset`, as [S, B] index blocks; images and labels are
                    gathered inside one XLA-compiled block of the library's own `_aux_step`.
  JitPredictTrainer the full replication pass with every chunk's forward pass (projection hash or
                    table gather, matmuls, activations) compiled by XLA, so that the elementwise
                    work is fused instead of materialising [chunk, d] temporaries op by op.
  FastPassTrainer   the full pass as one call: theta, the predictions and the float64 metrics in
                    one tf.function (the library runs the metrics eagerly, a dozen eager ops and
                    seven host syncs, 30% of the whole pass at N = 20,100), and the projection
                    hash compiled by XLA as JitHashTrainer does. Meant with eval_chunk_size=8192.
  JitHashTrainer    only the projection's on-the-fly hash compiled by XLA (one fused loop instead
                    of a dozen uint32 ops over [chunk, d] tensors); the matmuls stay TensorFlow's
                    own (oneDNN) kernels. A change to `models.projection.Projection.rows`.
"""

import numpy as np
import tensorflow as tf

from models import projection as projection_lib
from trainers import aux_lib
from trainers import metrics as metrics_lib
from trainers import train_lib

_INT_SPEC = tf.TensorSpec([None, None], tf.int32)


class JitBlockTrainer(train_lib.QuineTrainer):
  """QuineTrainer whose compiled block of steps is compiled by XLA as a whole."""

  def __init__(self, config, strategy=None):
    super().__init__(config, strategy)
    self.train_block = tf.function(self._train_block, input_signature=[_INT_SPEC],
                                   jit_compile=True)


class FusedLoopTrainer(train_lib.QuineTrainer):
  """QuineTrainer whose epoch is one XLA-compiled functional loop (Adamax only)."""

  def __init__(self, config, strategy=None):
    if config.optimizer != 'adamax':
      raise ValueError('FusedLoopTrainer only writes out the Adamax update')
    super().__init__(config, strategy)
    self.train_block = tf.function(self._fused_block, input_signature=[_INT_SPEC],
                                   jit_compile=True)

  def _adamax_slots(self):
    # pylint: disable=protected-access
    opt = self.optimizer
    variables = self.model.quine_variables
    # Keras 3 Adamax keeps its first moments in `_m` and its infinity norms in `_u`.
    return ([opt._m[opt._get_variable_index(v)] for v in variables],
            [opt._u[opt._get_variable_index(v)] for v in variables])

  def _fused_block(self, batches):
    """Runs one Adamax step per row of `batches` [S, B]; returns the mean minibatch loss."""
    opt = self.optimizer
    model = self.model
    variables = model.quine_variables
    ms, us = self._adamax_slots()
    beta_1, beta_2, epsilon = opt.beta_1, opt.beta_2, opt.epsilon
    learning_rate = tf.cast(opt.learning_rate, tf.float32)
    first_step = tf.cast(opt.iterations, tf.float32) + 1.0
    targets = tf.convert_to_tensor(self.targets)
    num_steps = tf.shape(batches)[0]

    def loss_fn(weights, coordinates):
      # pylint: disable=protected-access
      h = model.coordinate_projection.rows(coordinates)
      for w in weights[:-1]:
        h = model._activation(tf.matmul(h, w))
      predictions = model._output_activation(tf.matmul(h, weights[-1]))[:, 0]
      return metrics_lib.replication_loss(predictions, tf.gather(targets, coordinates))

    def body(i, weights, m, u, total):
      with tf.GradientTape() as tape:
        tape.watch(weights)
        loss = loss_fn(weights, batches[i])
      grads = tape.gradient(loss, weights)
      step = first_step + tf.cast(i, tf.float32)
      scale = learning_rate / (1.0 - tf.pow(tf.constant(beta_1, tf.float32), step))
      m = [mi + (g - mi) * (1.0 - beta_1) for mi, g in zip(m, grads)]
      u = [tf.maximum(beta_2 * ui, tf.abs(g)) for ui, g in zip(u, grads)]
      weights = [w - scale * mi / (ui + epsilon) for w, mi, ui in zip(weights, m, u)]
      return i + 1, weights, m, u, total + loss

    _, weights, m, u, total = tf.while_loop(
        lambda i, *_: i < num_steps, body,
        (tf.constant(0), [tf.convert_to_tensor(v) for v in variables],
         [tf.convert_to_tensor(v) for v in ms], [tf.convert_to_tensor(v) for v in us],
         tf.constant(0.0)))
    for targets_list, values in ((variables, weights), (ms, m), (us, u)):
      for variable, value in zip(targets_list, values):
        variable.assign(value)
    opt.iterations.assign_add(tf.cast(num_steps, opt.iterations.dtype))
    self.step.assign_add(tf.cast(num_steps, tf.int64))
    return total / tf.cast(num_steps, tf.float32)


class JitAuxTrainer(aux_lib.AuxTrainer):
  """AuxTrainer whose epoch gathers its minibatches inside one XLA-compiled block (no tf.data)."""

  def __init__(self, config, data, strategy=None):
    super().__init__(config, data, strategy)
    self.index_block = tf.function(self._index_block, input_signature=[_INT_SPEC, _INT_SPEC],
                                   jit_compile=True)

  def _index_blocks(self, phase):
    """The same coordinates and image draws as `dataset(phase)`, as [S, B] blocks (+ remainder)."""
    n, b = self.num_weights, self.config.batch_size
    perm = tf.random.experimental.stateless_shuffle(
        tf.range(n, dtype=tf.int32), seed=tf.constant([self.config.seed, phase], tf.int64))
    picks = tf.random.stateless_uniform(
        [n], seed=tf.constant([self.config.seed + 1, phase], tf.int64), minval=0,
        maxval=int(self._train_labels.shape[0]), dtype=tf.int32)
    full = n // b
    blocks = [(tf.reshape(perm[:full * b], [full, b]), tf.reshape(picks[:full * b], [full, b]))]
    if n % b:
      blocks.append((perm[full * b:][tf.newaxis], picks[full * b:][tf.newaxis]))
    return blocks

  def _index_block(self, coordinate_rows, image_rows):
    """One `_aux_step` per row on (coordinates, images[picks], labels[picks]); mean loss parts."""
    totals = tf.zeros([3])
    num_steps = tf.shape(coordinate_rows)[0]
    for i in tf.range(num_steps):
      batch = (coordinate_rows[i], tf.gather(self._train_images, image_rows[i]),
               tf.gather(self._train_labels, image_rows[i]))
      per_replica = self.strategy.run(self._aux_step, args=batch)
      totals += self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
    self.step.assign_add(tf.cast(num_steps, tf.int64))
    return totals / tf.cast(num_steps, tf.float32)

  def run_epoch(self, kind, phase):
    del kind
    self.targets.assign(self.model.flatten())
    blocks = self._index_blocks(phase)
    steps = np.array([int(c.shape[0]) for c, _ in blocks])
    sums = sum(self.index_block(c, p).numpy() * s for (c, p), s in zip(blocks, steps))
    loss, l_sr, l_task = sums / steps.sum()
    return {'train_loss': loss, 'train_l_sr': l_sr, 'train_l_task': l_task}


class JitPredictTrainer(train_lib.QuineTrainer):
  """QuineTrainer whose full replication pass compiles each chunk's forward pass with XLA."""

  def __init__(self, config, strategy=None):
    super().__init__(config, strategy)
    self._predict_chunk = tf.function(
        lambda start, size: self.model.predict_weights(start + tf.range(size)),
        jit_compile=True)
    self.predict_all = self._predict_all_chunks

  def _predict_all_chunks(self):
    # Python loop: one XLA executable per distinct chunk size (two at most), reused every pass.
    n = self.num_weights
    chunk = min(self.config.eval_chunk_size, n)
    return tf.concat([self._predict_chunk(tf.constant(s), min(chunk, n - s))
                      for s in range(0, n, chunk)], axis=0)


def jit_compiled_hash(projection):
  """`projection.rows` computed by one XLA-compiled function when the rows are hashed on the fly.

  Checks on a few rows that the compiled hash gives exactly the bits of the NumPy reference.
  """
  if projection.materialised:
    return projection.rows
  rows = tf.function(
      lambda indices: projection_lib.tf_projection(
          projection.seed, indices, projection.num_columns, projection.std),
      jit_compile=True)
  probe = np.array([0, 1, projection.num_rows // 2, projection.num_rows - 1], np.int32)
  expected = projection_lib.numpy_projection(projection.seed, probe, projection.num_columns,
                                             projection.std)
  if not np.array_equal(rows(tf.constant(probe)).numpy().view(np.uint32),
                        expected.view(np.uint32)):
    raise AssertionError('the XLA-compiled hash does not reproduce the reference bits')
  return rows


class JitHashTrainer(train_lib.QuineTrainer):
  """QuineTrainer whose model hashes its projection rows in one XLA-compiled function."""

  def __init__(self, config, strategy=None):
    super().__init__(config, strategy)
    projection = self.model.coordinate_projection
    projection.rows = jit_compiled_hash(projection)  # instance attribute shadows the method


class FastPassTrainer(JitHashTrainer):
  """JitHashTrainer whose `replication()` is one compiled call (flatten, predict, metrics)."""

  def __init__(self, config, strategy=None):
    super().__init__(config, strategy)
    self._replication = tf.function(self._replication_fn, input_signature=[])

  def _replication_fn(self):
    theta = self.model.flatten()
    predictions = self._predict_all()
    return theta, predictions, metrics_lib.replication_metrics(theta, predictions)

  def replication(self):
    theta, predictions, metrics = self._replication()
    return theta, predictions, {k: float(v) for k, v in metrics.items()}
