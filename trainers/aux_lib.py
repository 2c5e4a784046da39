"""Training library of the auxiliary quine: replicate its own weights and classify MNIST.

L_aux = replication_weight * L_SR + task_weight * L_task. Each training example pairs a coordinate
with a randomly drawn training image; an epoch visits every coordinate once. Both draws are
stateless functions of (seed, phase), so a resumed run sees the same minibatches. With
replication_weight = 0 the same network, data and schedule give the classifier-only baseline.

Method 'replicate' (not in the paper) trains the same network to replicate and classify at once.
The paper's loss has frozen targets and is not scale-free, so it only shrinks the weights (rho
stays at 1). Here each Adam step minimises

    rho(theta) + lambda * CE = L_SR(theta) / sum(theta^2) + lambda * mean cross-entropy,

differentiated through the predictions and the weights they predict alike (live targets), with
L_SR estimated without bias from a uniform sample of coordinates (scaled by N / sample size; the
denominator is exact) and CE from a minibatch of images. Shrinking does not lower rho, so the
only way down is to copy; and because the N equations f_theta(C) = theta leave no freedom for the
task at an exact quine, lambda sets a trade-off between the two.

Reported per phase, besides the replication metrics of the vanilla quine: test accuracy, the mean
test cross-entropy `l_task`, its sum over the test set `l_task_sum` and
`l_aux = l_sr + task_weight * l_task_sum` (the paper reports its losses summed over the test set).
"""

import numpy as np
import tensorflow as tf

from models import linearization
from trainers import methods
from trainers import plots
from trainers import train_lib

_INT_SPEC = tf.TensorSpec([None, None], tf.int32)


class AuxTrainer(train_lib.QuineTrainer):
  """QuineTrainer whose minibatches pair coordinates with labelled images."""

  def __init__(self, config, data, strategy=None):
    super().__init__(config, strategy)
    # Variables, not constants: the compiled block captures them by reference instead of copying
    # 190 MB of pixels into its graph.
    self._train_images = tf.Variable(data.train_images, trainable=False, name='train_images')
    self._train_labels = tf.Variable(data.train_labels, trainable=False, name='train_labels')
    self._test_images = tf.constant(data.test_images)
    self._test_labels = data.test_labels
    self.confusion = None
    # The minibatches are gathered inside the compiled block rather than fed by tf.data: an
    # epoch is 2,110 steps of 10 examples, and handing each one over from an iterator cost more
    # than the step itself (benchmarks/README.md: 0.57 s per epoch with tf.data, 0.19 s without).
    self.aux_block = tf.function(self._aux_block, input_signature=[_INT_SPEC, _INT_SPEC],
                                 jit_compile=self.jit_compile)
    # Not XLA-compiled: at the paper's size a step took 27 ms under XLA and 4.9 ms as a plain
    # graph (one core), whose oneDNN matmuls win at these batch sizes (2,048 coordinates).
    self.replicate_block = tf.function(
        self._replicate_block, input_signature=[tf.TensorSpec([], tf.int32)])
    self.test_logits = tf.function(lambda: self.model.logits(self._test_images))
    if config.descendants:
      self._regenerate_all = linearization.make_forward(self.model, tf.float32)
      self._kernels = linearization.kernel_split(self.model.architecture)
    trained = methods.trained_names(config)  # --train_only (validated for 'replicate' only)
    self._trained = [v for name, v in self.model.kernels().items() if name in trained]

  def _image_picks(self, size, seed):
    """`size` uniform training-image indices, a stateless function of `seed` [2]."""
    return tf.random.stateless_uniform([size], seed=seed, minval=0,
                                       maxval=int(self._train_labels.shape[0]), dtype=tf.int32)

  def image_draws(self, phase):
    """The training image paired with each position of the phase's order: int32 [N] indices."""
    return self._image_picks(self.num_weights,
                             tf.constant([self.config.seed + 1, phase], tf.int64))

  def _aux_step(self, global_coordinates, global_images, global_labels):
    """Per-replica step on this replica's share of the global minibatch; returns loss parts."""
    coordinates = train_lib.replica_share(global_coordinates)
    images = train_lib.replica_share(global_images)
    labels = train_lib.replica_share(global_labels)
    global_size = tf.shape(global_coordinates)[0]
    with tf.GradientTape() as tape:
      predictions, logits = self.model((coordinates, images))
      errors = tf.math.squared_difference(predictions, tf.gather(self.targets, coordinates))
      cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
      per_example = (self.config.replication_weight * errors
                     + self.config.task_weight * cross_entropy)
      loss = train_lib.global_mean(per_example, global_size)
    variables = self.model.quine_variables
    self.optimizer.apply(tape.gradient(loss, variables), variables)
    return tf.stack([loss, train_lib.global_mean(errors, global_size),
                     train_lib.global_mean(cross_entropy, global_size)])

  def _aux_block(self, coordinate_rows, image_rows):
    """One step per row of coordinates [S, B] and image indices [S, B]; mean (loss, l_sr, l_task)."""
    totals = tf.zeros([3])
    num_steps = tf.shape(coordinate_rows)[0]
    for i in tf.range(num_steps):
      batch = (coordinate_rows[i], tf.gather(self._train_images, image_rows[i]),
               tf.gather(self._train_labels, image_rows[i]))
      per_replica = self.strategy.run(self._aux_step, args=batch)
      totals += self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
    self.step.assign_add(tf.cast(num_steps, tf.int64))
    return totals / tf.cast(num_steps, tf.float32)

  def replicate_draws(self, step):
    """A 'replicate' step's (coordinates, training-image indices): stateless in (seed, step)."""
    config = self.config
    seed = tf.stack([tf.constant(config.seed, tf.int64), step])
    picks = self._image_picks(config.image_batch_size, seed)
    coordinates = tf.range(self.num_weights, dtype=tf.int32)
    if 0 < config.coordinate_batch_size < self.num_weights:
      # A uniform sample without replacement: the largest of N i.i.d. uniform keys (as XLA-ready
      # as the rest of the step; stateless_shuffle has no XLA kernel).
      keys = tf.random.stateless_uniform([self.num_weights],
                                         seed=seed + tf.constant([1, 0], tf.int64))
      coordinates = tf.math.top_k(keys, k=config.coordinate_batch_size, sorted=False).indices
    return coordinates, picks

  def _replicate_step(self, global_coordinates, global_images, global_labels):
    """Per-replica step on rho + lambda * CE with live targets; returns (loss, rho, CE) parts."""
    coordinates = train_lib.replica_share(global_coordinates)
    images = train_lib.replica_share(global_images)
    labels = train_lib.replica_share(global_labels)
    sample_scale = self.num_weights / tf.cast(tf.shape(global_coordinates)[0], tf.float32)
    num_replicas = tf.cast(self.strategy.num_replicas_in_sync, tf.float32)

    def cross_entropy(kernels=None):
      return train_lib.global_mean(
          tf.nn.sparse_softmax_cross_entropy_with_logits(
              labels=labels, logits=self.model.logits(images, kernels)),
          tf.shape(global_labels)[0])

    with tf.GradientTape() as tape:
      theta = self.model.flatten()
      task = cross_entropy()
      if self.config.descendants:
        # The lineage theta -> f_theta(C) -> ..., each generation over all N coordinates; rho is
        # then exact (each replica holds 1 / replicas of it, as of the sampled estimate).
        child = self._regenerate_all(theta)
        rho = (tf.reduce_sum(tf.square(child - theta)) / tf.reduce_sum(tf.square(theta))
               / num_replicas)
        descendant = child
        for generation in range(self.config.descendants):
          if generation:
            descendant = self._regenerate_all(descendant)
          task += cross_entropy(self._kernels(descendant))
        task /= self.config.descendants + 1
      else:
        errors = self.model.predict_weights(coordinates) - tf.gather(theta, coordinates)
        # This replica's part of the unbiased estimate of L_SR; the parts sum to the estimate.
        rho = tf.reduce_sum(tf.square(errors)) * sample_scale / tf.reduce_sum(tf.square(theta))
      loss = self.config.replication_weight * rho + self.config.task_weight * task
    variables = self._trained
    self.optimizer.apply(tape.gradient(loss, variables), variables)
    return tf.stack([loss, rho, task])

  def _replicate_block(self, num_steps):
    """num_steps 'replicate' steps; returns the mean (loss, rho estimate, CE)."""
    totals = tf.zeros([3])
    for _ in tf.range(num_steps):
      coordinates, picks = self.replicate_draws(self.step)
      batch = (coordinates, tf.gather(self._train_images, picks),
               tf.gather(self._train_labels, picks))
      per_replica = self.strategy.run(self._replicate_step, args=batch)
      totals += self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
      self.step.assign_add(1)
    return totals / tf.cast(num_steps, tf.float32)

  def replicate_phase(self, phase):
    """Phase `phase` of method 'replicate': its share of the num_steps Adam steps."""
    per_phase = self.config.replicate_phase_steps
    steps = min(per_phase, self.config.num_steps - (phase - 1) * per_phase)
    loss, rho, cross_entropy = self.replicate_block(tf.constant(steps, tf.int32)).numpy()
    return {'train_loss': float(loss), 'train_rho': float(rho),
            'train_l_task': float(cross_entropy)}

  def run_epoch(self, kind, phase):
    del kind  # validated: auxiliary quines train by gradient only
    self.targets.assign(self.model.flatten())
    blocks = zip(self.epoch_batches(phase), self.blocks(self.image_draws(phase)))
    sums, total_steps = np.zeros(3), 0
    for coordinate_rows, image_rows in blocks:
      steps = int(coordinate_rows.shape[0])
      sums += self.aux_block(coordinate_rows, image_rows).numpy() * steps
      total_steps += steps
    loss, l_sr, l_task = sums / total_steps
    return {'train_loss': loss, 'train_l_sr': l_sr, 'train_l_task': l_task}

  def extra_metrics(self):
    logits = self.test_logits().numpy().astype(np.float64)
    labels = self._test_labels
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    cross_entropy = -log_probs[np.arange(len(labels)), labels]
    predicted = logits.argmax(axis=1)
    k = self.config.model.num_classes
    self.confusion = np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)
    return {'test_accuracy': float(np.mean(predicted == labels)),
            'l_task': float(cross_entropy.mean()),
            'l_task_sum': float(cross_entropy.sum())}

  def task_data(self):
    return self._test_images, self._test_labels

  def confusion_image(self):
    return {'confusion_matrix': plots.confusion_png(self.confusion)}


def run(config, workdir, data, strategy=None, overwrite=False):
  """Trains an auxiliary quine as `config` says on `data` (an Mnist), in `workdir`."""
  config.validate()
  for split in ('train', 'test'):
    pixels = getattr(data, f'{split}_images').shape[1]
    if pixels != config.model.image_size:
      raise ValueError(f'the {split} images have {pixels} pixels but the quine expects '
                       f'image_size={config.model.image_size}')
  trainer = AuxTrainer(config, data, strategy)
  return train_lib.train(trainer, workdir, train_lib.config_dict(config), overwrite=overwrite,
                         extra_images_fn=trainer.confusion_image,
                         record_fn=lambda r: dict(
                             r, l_aux=r['l_sr'] + config.task_weight * r['l_task_sum']))
