"""Replicating classifiers: an auxiliary quine trained on rho + lambda * cross-entropy.

The paper trains the auxiliary quine on L_SR + lambda * L_task with the replication targets frozen
at the start of each epoch. Like every frozen-target method that only shrinks the weights: L_SR
falls because sum(theta^2) does, rho = L_SR / sum(theta^2) stays at 1, and nothing is replicated.

Here the objective is scale-free and differentiated through both sides of the quine equation:

    loss(theta) = rho(theta) + lambda * CE(theta),
    rho(theta)  = sum_c (f_theta(c) - theta_c)^2 / sum_c theta_c^2,

where f_theta(c) is the weight head's prediction of weight c (zero image) and CE the mean
cross-entropy of the class head on a minibatch of training images (zero coordinate part).

Why it works:

* Normalisation. Shrinking theta leaves rho unchanged near 0 (rho -> 1 as theta -> 0), so the
  only way down is to make the predictions copy the weights (the same reason the fixed-point
  solver of `trainers/fixed_point.py` divides its residual by ||theta||).
* Live targets. The gradient flows through theta_c as a target too: d rho / d theta_c contains
  -2 (f(c) - theta_c) / sum(theta^2), which pulls each weight towards its own prediction (a soft
  regeneration step) while the network is pulled towards the weights. Frozen targets drop that
  half of the gradient.
* A trade-off, not a constraint. theta has N components and the quine equation f_theta(C) = theta
  is N equations, so an exact quine leaves no freedom for the task. A penalty on rho with a task
  weight lambda lets the optimiser spend a little replication error (rho ~ 0.01-0.1) for the
  classifier; the sweep over lambda traces the trade-off (`scripts/aux_tradeoff.py`).
* Optimisation that suits both terms: Adam at 3e-3 with cosine decay to 0, image minibatches of
  256 (the paper's minibatches of 10 with Adamax reach only ~89% even without the quine), and an
  unbiased coordinate-minibatch estimate of rho (2,048 of the N coordinates per step, scaled by
  N / 2,048; the denominator sum(theta^2) is exact) so that a step costs ~3 ms instead of the
  ~25 ms of a full replication pass at N = 21,100 on one CPU core. The accuracy rises most in the
  last third of the schedule, when the learning rate anneals.

Measured (paper network, 40,000 steps, ~140 s on one CPU core, `scripts/aux_tradeoff.py`): lambda 1
gives rho 0.089-0.093 (R^2 ~0.91, weight RMS 2.7x the initial) at 94.4-94.8% test accuracy,
lambda 3 rho ~0.17 at 94.9-95.1%, lambda 0.3 rho ~0.04 at ~93.5%. The same network, optimiser and
schedule without the replication term (replication_weight = 0) reach ~94.9%: the ceiling is the
classifier's (50 fixed random image features), and the quine costs at most a few tenths of a
percent of it.

`ReplicatingClassifierTrainer` runs compiled blocks of steps on a Keras `AuxiliaryQuine` (its
variables are trained in place) and evaluates rho, R^2 and test accuracy with the model's own
`predict_weights` / `classify`; `train()` loops it for scripts. The minibatches are stateless
functions of (seed, step), so a run restored from `tf.train.Checkpoint(trainer=trainer)` (the
model's weights, Adam's slots and the step counter) continues exactly as an uninterrupted one.
"""

import dataclasses
import time

import numpy as np
import tensorflow as tf

from trainers import metrics as metrics_lib


@dataclasses.dataclass(frozen=True)
class AuxQuineConfig:
  """Hyper-parameters of `ReplicatingClassifierTrainer`.

  Attributes:
    task_weight: lambda in rho + lambda * CE (CE: mean cross-entropy per image). Larger values
      trade replication for accuracy: for the paper's network (40,000 steps, seeds 0-2) 1.0 gives
      rho 0.089-0.093 at 94.4-94.8% test accuracy, 3.0 rho ~0.17 at ~94.9%.
    num_steps: Adam steps; also the length of the cosine learning-rate decay.
    learning_rate: Adam's peak learning rate (cosine decay to 0 over num_steps).
    image_batch_size: training images per step.
    coordinate_batch_size: coordinates per step in the unbiased estimate of L_SR (sampled without
      replacement); 0 or >= N means every coordinate every step.
    seed: seed of the image and coordinate sampling.
    steps_per_loop: steps compiled into one `tf.function` call by `train()`.
    replication_weight: weight of rho in the loss; 0 trains the classifier alone on the same
      network and schedule (the baseline of the trade-off).
  """
  task_weight: float = 1.0
  num_steps: int = 40000
  learning_rate: float = 3e-3
  image_batch_size: int = 256
  coordinate_batch_size: int = 2048
  seed: int = 0
  steps_per_loop: int = 1000
  replication_weight: float = 1.0

  def validate(self):
    """Raises ValueError naming the first bad field."""
    for name in ('task_weight', 'replication_weight'):
      if getattr(self, name) < 0:
        raise ValueError(f'{name}={getattr(self, name)} must be >= 0')
    if self.learning_rate <= 0:
      raise ValueError(f'learning_rate={self.learning_rate} must be positive')
    for name in ('num_steps', 'image_batch_size', 'steps_per_loop'):
      if getattr(self, name) <= 0:
        raise ValueError(f'{name}={getattr(self, name)} must be positive')
    if self.coordinate_batch_size < 0:
      raise ValueError(f'coordinate_batch_size={self.coordinate_batch_size} must be >= 0')
    return self


class ReplicatingClassifierTrainer(tf.Module):
  """Adam on rho + task_weight * cross-entropy for an `AuxiliaryQuine`, in compiled blocks.

  (rho is multiplied by config.replication_weight, 1 unless a classifier-only baseline is wanted.)

  Its state is the model's weights, the optimizer's slots and `step` (a tf.Variable):
  `tf.train.Checkpoint(trainer=trainer)` saves and restores all three.
  """

  def __init__(self, model, data, config=AuxQuineConfig(), name='replicating_classifier'):
    """Builds the trainer.

    Args:
      model: a built `AuxiliaryQuine`; trained in place.
      data: an `trainers.data.Mnist` (or anything with the same four arrays) whose images have
        `model.config.image_size` pixels.
      config: `AuxQuineConfig`.
      name: the module's name.

    Raises:
      ValueError: the model is not an auxiliary quine, the images do not fit it, or the config
        is invalid.
    """
    super().__init__(name=name)
    config.validate()
    if model.config.kind != 'auxiliary':
      raise ValueError('ReplicatingClassifierTrainer needs an auxiliary quine')
    for split in ('train', 'test'):
      pixels = getattr(data, f'{split}_images').shape[1]
      if pixels != model.config.image_size:
        raise ValueError(f'the {split} images have {pixels} pixels but the quine expects '
                         f'image_size={model.config.image_size}')
    self.model = model
    self.config = config
    self.num_weights = model.num_weights
    cb = config.coordinate_batch_size
    self._coordinate_batch = self.num_weights if cb == 0 or cb >= self.num_weights else cb
    self._train_images = tf.constant(data.train_images, tf.float32)
    self._train_labels = tf.constant(data.train_labels, tf.int32)
    self._test_images = tf.constant(data.test_images, tf.float32)
    self._test_labels = np.asarray(data.test_labels)
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')
    schedule = tf.keras.optimizers.schedules.CosineDecay(config.learning_rate, config.num_steps)
    self.optimizer = tf.keras.optimizers.Adam(schedule)
    self.optimizer.build(model.quine_variables)
    self.train_block = tf.function(self._train_block)
    self._predict_all = tf.function(
        lambda: self.model.predict_weights(tf.range(self.num_weights)))
    self._test_logits = tf.function(lambda: self.model.classify(self._test_images))

  def _batch(self, step):
    """(coordinates [Bc], images [Bi, pixels], labels [Bi]) of a step: stateless in (seed, step)."""
    seed = tf.stack([tf.constant(self.config.seed, tf.int64), step])
    picks = tf.random.stateless_uniform(
        [self.config.image_batch_size], seed=seed, minval=0,
        maxval=tf.shape(self._train_labels)[0], dtype=tf.int32)
    coordinates = tf.range(self.num_weights, dtype=tf.int32)
    if self._coordinate_batch < self.num_weights:
      coordinates = tf.random.experimental.stateless_shuffle(
          coordinates, seed=seed + tf.constant([1, 0], tf.int64))[:self._coordinate_batch]
    return coordinates, tf.gather(self._train_images, picks), tf.gather(self._train_labels, picks)

  def _train_step(self):
    coordinates, images, labels = self._batch(self.step)
    variables = self.model.quine_variables
    with tf.GradientTape() as tape:
      theta = self.model.flatten()
      errors = self.model.predict_weights(coordinates) - tf.gather(theta, coordinates)
      # Unbiased for L_SR: a uniform sample without replacement, scaled by N / B.
      l_sr = tf.reduce_sum(tf.square(errors)) * (self.num_weights / self._coordinate_batch)
      rho = l_sr / tf.reduce_sum(tf.square(theta))
      cross_entropy = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels=labels, logits=self.model.classify(images)))
      loss = (self.config.replication_weight * rho
              + self.config.task_weight * cross_entropy)
    self.optimizer.apply(tape.gradient(loss, variables), variables)
    self.step.assign_add(1)
    return tf.stack([loss, rho, cross_entropy])

  def _train_block(self, num_steps):
    """num_steps Adam steps; returns the block's mean (loss, rho estimate, cross-entropy)."""
    totals = tf.zeros([3])
    for _ in tf.range(num_steps):
      totals += self._train_step()
    return totals / tf.cast(num_steps, tf.float32)

  def evaluate(self):
    """The model's replication metrics (every coordinate) and test-set classification metrics.

    Returns:
      A dict of Python floats: l_sr, rho, r2, weight_rms, prediction_rms, margin, quotient
      (as `trainers.metrics.replication_metrics`), test_accuracy and l_task (mean test
      cross-entropy), and step.
    """
    record = {k: float(v) for k, v in metrics_lib.replication_metrics(
        self.model.flatten(), self._predict_all()).items()}
    logits = self._test_logits().numpy().astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    labels = self._test_labels
    record.update(
        test_accuracy=float(np.mean(logits.argmax(axis=1) == labels)),
        l_task=float(-log_probs[np.arange(len(labels)), labels].mean()),
        step=int(self.step.numpy()))
    return record


def train(model, data, config=AuxQuineConfig(), log_every_steps=0, time_limit_s=None):
  """Trains `model` with `ReplicatingClassifierTrainer` for the rest of config.num_steps.

  Args:
    model: a built `AuxiliaryQuine`; its weights are the start and receive the result.
    data: an `Mnist` whose images fit the model.
    config: `AuxQuineConfig`.
    log_every_steps: evaluate (full replication pass and test set) and print a line every this
      many steps, rounded up to whole blocks of config.steps_per_loop (0: only at the start and
      the end).
    time_limit_s: stop after the first block that ends past this many seconds (None: no limit).

  Returns:
    A list of `evaluate()` records, the first for the starting weights, the last for the result;
    each has 'seconds' (training wall time so far, evaluation excluded) and, after the first,
    'train_loss', 'train_rho' (the minibatch estimate) and 'train_ce' of the last block.
  """
  trainer = ReplicatingClassifierTrainer(model, data, config)
  record = trainer.evaluate()
  record['seconds'] = 0.0
  history = [record]
  if log_every_steps:
    _print(record)
  seconds, since_log = 0.0, 0
  while int(trainer.step.numpy()) < config.num_steps:
    steps = min(config.steps_per_loop, config.num_steps - int(trainer.step.numpy()))
    start = time.time()
    loss, rho, ce = trainer.train_block(tf.constant(steps)).numpy()
    seconds += time.time() - start
    since_log += steps
    done = int(trainer.step.numpy()) >= config.num_steps
    out_of_time = time_limit_s is not None and seconds > time_limit_s
    if done or out_of_time or (log_every_steps and since_log >= log_every_steps):
      record = trainer.evaluate()
      record.update(seconds=seconds, train_loss=float(loss), train_rho=float(rho),
                    train_ce=float(ce))
      history.append(record)
      since_log = 0
      if log_every_steps:
        _print(record)
    if out_of_time:
      break
  return history


def _print(record):
  keys = ('step', 'seconds', 'rho', 'r2', 'l_sr', 'weight_rms', 'test_accuracy', 'l_task')
  print(' '.join(f'{k}={record[k]:.4g}' for k in keys if k in record), flush=True)
