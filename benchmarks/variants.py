"""Prototype variants of the training library, measured side by side with the real code path.

Nothing here is used by the trainers: a variant is a candidate change to `trainers/train_lib.py`,
kept as a subclass so that the benchmark can time it next to the unchanged library in the same run.

  FusedLoopTrainer  the epoch as one functional `tf.while_loop` over tensors (weights and Adamax
                    slots are loop values, written back to the variables once at the end), compiled
                    with XLA. Not adopted: it is within noise of the library's own XLA-compiled
                    block (`TrainConfig.jit_compile`), and it needs each optimizer's update rule
                    written out (only Adamax here; Keras' `stateless_apply` is unsupported on the
                    TensorFlow backend). Kept as the reference for what a hand-written loop buys.

The other prototypes timed here before have been adopted by the library, which the benchmark now
times directly (benchmarks/README.md): the XLA-compiled block of steps (`TrainConfig.jit_compile`,
trainers/train_lib.py), the XLA-compiled projection hash (`Projection.compile_hash`,
models/projection.py), the full pass as one compiled call (`QuineTrainer.replication`), the smaller
default `eval_chunk_size`, and the auxiliary epoch on in-graph index blocks (trainers/aux_lib.py).
Compiling the whole forward pass with XLA was dropped: no gain at the paper's size, and slower than
compiling the hash alone at large widths (XLA's CPU dot is slower than oneDNN's matmul).
"""

import tensorflow as tf

from trainers import metrics as metrics_lib
from trainers import train_lib

_INT_SPEC = tf.TensorSpec([None, None], tf.int32)


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
