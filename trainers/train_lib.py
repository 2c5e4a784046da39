"""The training library shared by the quine trainers: state, compiled steps, the phase loop.

A run is a list of phases (see `TrainConfig.schedule`): an optimisation or hill-climbing epoch,
or a regeneration. After every phase the full self-replication pass is measured over all N
coordinates, written to metrics.jsonl and TensorBoard, and a checkpoint is saved, so rerunning the
same command resumes where the last checkpoint left off and reproduces the same numbers (the
shuffling and the noise are stateless functions of the seed, the phase and the step).

Steps are tiny (10 coordinates), so a whole block of them is compiled into one `tf.function`
around a `tf.range` loop, and on one replica XLA compiles that block into a single executable
(`TrainConfig.jit_compile`); the input signatures have unknown dimensions, so the functions are
traced once per run (XLA compiles once per distinct block shape: at most two per epoch).

Everything runs under a `tf.distribute.Strategy` (the default one unless given): state is created
in `strategy.scope()`, every replica takes its share of each global minibatch and of the full
replication pass, and only the chief writes checkpoints, metrics and summaries.
"""

import json
import logging as std_logging
import math
import os
import tempfile
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf

import formats
from models import build_quine
from models import zoo
from models import stability as stability_lib
from trainers import configs
from trainers import methods
from trainers import metrics as metrics_lib
from trainers import plots
from trainers import workdir as workdir_lib

_INT_SPEC = tf.TensorSpec([None, None], tf.int32)


def quiet_tensorflow_logs():
  """Hides the INFO lines of TensorFlow (one per checkpoint save) and tf2onnx (progress bar)."""
  tf.get_logger().setLevel('WARNING')
  logging.get_absl_handler().addFilter(
      lambda r: r.levelno >= std_logging.WARNING or not any(
          f'{os.sep}{lib}{os.sep}' in r.pathname for lib in ('tensorflow', 'tf2onnx')))


def _to_python(d):
  return {k: float(v.numpy()) if hasattr(v, 'numpy') else v for k, v in d.items()}


def replica_share(global_batch):
  """This replica's contiguous share of a global batch (axis 0), in replica context.

  Every replica receives the same global batch and takes rows [B*i/R, B*(i+1)/R): the union over
  replicas is the batch, whatever B and R.
  """
  ctx = tf.distribute.get_replica_context()
  size = tf.shape(global_batch)[0]
  i = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
  r = ctx.num_replicas_in_sync
  return global_batch[size * i // r:size * (i + 1) // r]


def global_mean(per_example, global_batch_size):
  """This replica's per-example values summed and divided by the global batch size.

  The optimizer sums the replicas' gradients, so a loss scaled this way gives the single-device
  step on the mean loss whatever the number of replicas. (`tf.nn.compute_average_loss` computes
  the same, with a runtime assertion that XLA drops with a warning every epoch.)
  """
  return tf.reduce_sum(per_example) / tf.cast(global_batch_size, per_example.dtype)


def is_chief(strategy):
  """Whether this process writes checkpoints, metrics and summaries (TF's chief convention)."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  if task_type == 'chief':
    return True
  return task_type == 'worker' and task_id == 0 and 'chief' not in resolver.cluster_spec().jobs


class QuineTrainer:
  """State and compiled functions of one quine's training.

  Subclasses adapt the minibatch loss (`minibatch_loss`) and may add evaluation metrics
  (`extra_metrics`); the replication machinery is shared.
  """

  def __init__(self, config, strategy=None):
    self.config = config
    self.strategy = strategy or tf.distribute.get_strategy()
    with self.strategy.scope():
      self.model = build_quine(config.model)
      if config.init_from:  # a pretrained start; a resumed run's checkpoint overrides it
        self.model.assign_flat(zoo.load_theta(config.init_from))
      self.optimizer = self.make_optimizer()
      self.optimizer.build(self.model.quine_variables)
      # The frozen copy of theta that an epoch's minibatches regress onto.
      self.targets = tf.Variable(self.model.flatten(), trainable=False, name='targets')
      self.phase = tf.Variable(0, dtype=tf.int64, trainable=False, name='phase')
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')
    self.num_weights = config.model.num_weights
    self.checkpoint = tf.train.Checkpoint(
        model=self.model, optimizer=self.optimizer, targets=self.targets, phase=self.phase,
        step=self.step)
    self.solver = None
    self.method = methods.get(config.method)
    if self.method.setup:
      self.method.setup(self)
    # XLA compiles a whole block of steps into one executable (no per-op dispatch inside the
    # loop): 3-4x faster epochs at the paper's size. It cannot compile `strategy.run` over
    # several replicas, so with more than one the block stays a plain graph.
    self.jit_compile = config.jit_compile and self.strategy.num_replicas_in_sync == 1
    if self.jit_compile:
      self.model.coordinate_projection.compile_hash()
    self.train_block = tf.function(self._train_block, input_signature=[_INT_SPEC],
                                   jit_compile=self.jit_compile)
    self.hill_block = tf.function(
        self._hill_block, input_signature=[_INT_SPEC, tf.TensorSpec([], tf.int64)])
    self.predict_all = tf.function(self._predict_all, input_signature=[])
    self._replication = tf.function(self._replication_fn, input_signature=[])

  def make_optimizer(self):
    """The run's optimizer (built inside the strategy's scope): the method's, else the configured
    optimizer at a constant learning rate."""
    method = methods.get(self.config.method)
    if method.optimizer:
      return method.optimizer(self.config)
    return methods.make_optimizer(self.config.optimizer, self.config.resolved_learning_rate)

  # ----------------------------------------------------------------------------- steps

  def minibatch_loss(self, coordinates, training):
    """Replication loss (mean squared error) of a minibatch against the frozen targets."""
    del training
    predictions = self.model.predict_weights(coordinates)
    return metrics_lib.replication_loss(predictions, tf.gather(self.targets, coordinates))

  def _train_step(self, global_batch):
    """Per-replica step: forward, loss, gradients, apply."""
    coordinates = replica_share(global_batch)
    with tf.GradientTape() as tape:
      errors = tf.math.squared_difference(self.model.predict_weights(coordinates),
                                          tf.gather(self.targets, coordinates))
      loss = global_mean(errors, tf.shape(global_batch)[0])
    variables = self.model.quine_variables
    self.optimizer.apply(tape.gradient(loss, variables), variables)
    return loss

  def _train_block(self, batches):
    """Runs one gradient step per row of `batches` [S, B]; returns the mean minibatch loss."""
    total = tf.constant(0.0)
    num_steps = tf.shape(batches)[0]
    for i in tf.range(num_steps):
      per_replica = self.strategy.run(self._train_step, args=(batches[i],))
      total += self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
    self.step.assign_add(tf.cast(num_steps, tf.int64))
    return total / tf.cast(num_steps, tf.float32)

  def _hill_block(self, batches, seed):
    """Hill-climbing: per minibatch, perturb every weight; keep the move only if the loss falls.

    Runs in cross-replica context (each minibatch is one forward pass, there is no gradient to
    share); the noise is a stateless function of the seed, so every replica makes the same move.
    Returns the fraction of accepted moves.
    """
    variables = self.model.quine_variables
    accepted = tf.constant(0.0)
    num_steps = tf.shape(batches)[0]
    for i in tf.range(num_steps):
      before = self.minibatch_loss(batches[i], training=False)
      old = [tf.identity(v) for v in variables]
      step_seed = tf.stack([seed, self.step + tf.cast(i, tf.int64)])
      for j, v in enumerate(variables):
        noise = tf.random.stateless_normal(
            v.shape, tf.random.experimental.stateless_fold_in(step_seed, j),
            stddev=self.config.noise_stddev)
        v.assign_add(noise)
      after = self.minibatch_loss(batches[i], training=False)
      keep = after < before
      for v, o in zip(variables, old):
        v.assign(tf.where(keep, v, o))
      accepted += tf.cast(keep, tf.float32)
    self.step.assign_add(tf.cast(num_steps, tf.int64))
    return accepted / tf.cast(num_steps, tf.float32)

  def _predict_range(self, begin, end):
    """Predictions for coordinates [begin, end), in chunks of eval_chunk_size."""
    chunk = min(self.config.eval_chunk_size, self.num_weights)
    starts = tf.range(begin, end, chunk)
    out = tf.TensorArray(tf.float32, size=tf.size(starts), infer_shape=False,
                         element_shape=tf.TensorShape([None]))
    for i in tf.range(tf.size(starts)):
      coords = tf.range(starts[i], tf.minimum(starts[i] + chunk, end))
      out = out.write(i, self.model.predict_weights(coords))
    return out.concat()

  def _predict_share(self):
    """This replica's contiguous share of all N coordinates."""
    ctx = tf.distribute.get_replica_context()
    i, r, n = ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync, self.num_weights
    return self._predict_range(n * i // r, n * (i + 1) // r)

  def _predict_all(self):
    """The network's prediction of every one of its N weights, as a vector [N].

    Each replica predicts a contiguous share of the coordinates; the shares are gathered in order.
    """
    if self.strategy.num_replicas_in_sync == 1:
      return self._predict_range(0, self.num_weights)
    return self.strategy.gather(self.strategy.run(self._predict_share), axis=0)

  def regenerate(self):
    """theta <- f_theta(all coordinates), every weight written at once from the old theta."""
    self.model.assign_flat(self.predict_all())

  def _replication_fn(self):
    theta = self.model.flatten()
    predictions = self._predict_all()
    return theta, predictions, metrics_lib.replication_metrics(theta, predictions)

  def replication(self):
    """(theta, predictions, metrics dict of Python floats) of the full pass.

    One compiled call: run eagerly, the float64 metrics alone are a dozen ops and several host
    syncs, 30% of the whole pass at the paper's size.
    """
    theta, predictions, metrics = self._replication()
    return theta, predictions, _to_python(metrics)

  def extra_metrics(self):
    """Task metrics added to every record (none for a vanilla quine)."""
    return {}

  def task_data(self):
    """(test images, labels) on which the stability report measures accuracy, or (None, None)."""
    return None, None

  # ----------------------------------------------------------------------------- epochs

  def epoch_order(self, phase):
    """The phase's visiting order: a stateless shuffle of all N coordinates, int32 [N]."""
    seed = tf.constant([self.config.seed, phase], tf.int64)
    return tf.random.experimental.stateless_shuffle(
        tf.range(self.num_weights, dtype=tf.int32), seed=seed)

  def epoch_batches(self, phase):
    """The phase's coordinates as minibatch blocks (see `blocks`)."""
    return self.blocks(self.epoch_order(phase))

  def blocks(self, values):
    """Splits per-example `values` [N] into minibatch blocks, one compiled call each.

    Returns full blocks [S, B] of at most steps_per_loop rows, then the remainder as [1, N mod B].
    """
    n, b = self.num_weights, self.config.batch_size
    full = n // b
    blocks = []
    per_loop = self.config.steps_per_loop or full
    for start in range(0, full, per_loop):
      stop = min(start + per_loop, full)
      blocks.append(tf.reshape(values[start * b:stop * b], [stop - start, b]))
    if n % b:
      blocks.append(values[full * b:][tf.newaxis])
    return blocks

  def run_epoch(self, kind, phase):
    """One optimisation or hill-climbing epoch; returns its own metrics."""
    self.targets.assign(self.model.flatten())  # frozen for the whole epoch
    blocks = self.epoch_batches(phase)
    weights = [int(blk.shape[0]) for blk in blocks]
    if kind == 'optimize':
      values = [self.train_block(blk) for blk in blocks]
      key = 'train_loss'
    else:
      seed = tf.constant(self.config.seed * 1_000_003 + phase, tf.int64)
      values = [self.hill_block(blk, seed) for blk in blocks]
      key = 'accept_rate'
    return {key: float(np.average([float(v) for v in values], weights=weights))}

  def run_phase(self, kind, phase):
    """Runs phase number `phase` of kind `kind` (a registered `methods.Phase`); its metrics."""
    return methods.phase(kind).run(self, phase)


def _diverged(record, max_weight_rms):
  values = [record[k] for k in metrics_lib.MAIN_METRICS]
  return not np.all(np.isfinite(values)) or record['weight_rms'] > max_weight_rms


def _stop_diverged(record, out):
  """Marks `record` diverged and logs it (no checkpoint, no plot); returns it."""
  record['status'] = 'diverged'
  if out:
    out.log.write(record)
  return record


class _Summaries:
  """TensorBoard scalars, histograms and images for the phase loop."""

  def __init__(self, workdir):
    self._writer = tf.summary.create_file_writer(
        os.path.join(workdir, workdir_lib.TENSORBOARD_DIR))

  def write(self, record, theta, predictions, image_png=None, extra_images=None):
    with self._writer.as_default(step=record['phase']):
      for key, value in record.items():
        if isinstance(value, float) and np.isfinite(value):
          tf.summary.scalar(key, value)
      if np.all(np.isfinite(theta)) and np.all(np.isfinite(predictions)):
        tf.summary.histogram('weights', theta)
        tf.summary.histogram('predictions', predictions)
      if image_png is not None:
        tf.summary.image('weights_vs_predictions', plots.png_to_summary_image(image_png))
      for name, png in (extra_images or {}).items():
        tf.summary.image(name, plots.png_to_summary_image(png))
    self._writer.flush()

  def write_stability(self, phase, result, png):
    with self._writer.as_default(step=phase):
      for key in ('spectral_radius', 'largest_singular_value', 'frobenius_radius',
                  'rayleigh_theta', 'fertile_generations'):
        tf.summary.scalar(f'stability/{key}', float(result[key]))
      tf.summary.scalar('stability/noise_returned', float(result['noise']['returned']))
      tf.summary.image('spectrum', plots.png_to_summary_image(png))
    # A classifying quine's descendants, one step per generation (0: the quine itself).
    traced = result.get('trajectory', {})
    with self._writer.as_default():
      for generation, (rho, accuracy) in enumerate(zip(traced.get('rhos', []),
                                                       traced.get('accuracies', []))):
        tf.summary.scalar('lineage/test_accuracy', accuracy, step=generation)
        if rho is not None and math.isfinite(rho):
          tf.summary.scalar('lineage/rho', rho, step=generation)
    self._writer.flush()


def _checkpoint_manager(trainer, workdir, chief):
  """The chief saves into <workdir>/checkpoints; other workers into a private temporary folder.

  Every worker takes part in each save (with several workers, saving may run collectives), but
  only the chief's files are kept, as in TF's multi-worker convention; all workers restore from
  the chief's folder.
  """
  directory = os.path.join(workdir, formats.CHECKPOINT_DIR)
  if not chief:
    directory = tempfile.mkdtemp(prefix='quine-worker-checkpoints-')
  return tf.train.CheckpointManager(trainer.checkpoint, directory, max_to_keep=3)


def train(trainer, workdir, config_dict, overwrite=False, extra_images_fn=None, record_fn=None):
  """Runs (or resumes) the trainer's schedule in `workdir`.

  Args:
    trainer: a QuineTrainer.
    workdir: the run's folder.
    config_dict: the configuration to record in config.json.
    overwrite: move a run with a different configuration aside instead of refusing it.
    extra_images_fn: optional callable returning {name: png} added to TensorBoard with each plot.
    record_fn: optional callable adding derived fields to each metrics record.

  Returns:
    The last metrics record (a dict); its 'status' is 'finished' or 'diverged'.

  Raises:
    workdir_lib.WorkdirError: the workdir holds a different run.
  """
  config = trainer.config
  chief = is_chief(trainer.strategy)
  if chief:
    moved = workdir_lib.prepare(workdir, config_dict, overwrite, configs.RESUMABLE_FIELDS)
    if moved:
      logging.warning('Moved the previous run in %s to %s', workdir, moved)
  manager = _checkpoint_manager(trainer, workdir, chief)
  latest = tf.train.latest_checkpoint(os.path.join(workdir, formats.CHECKPOINT_DIR))
  if latest:
    trainer.checkpoint.restore(latest).assert_existing_objects_matched()
    logging.info('Resumed from %s (phase %d)', latest, int(trainer.phase.numpy()))
  start = int(trainer.phase.numpy())
  # Without a checkpoint nothing is done yet, whatever a killed earlier run logged.
  out = _Outputs(workdir, start if latest else -1) if chief else None
  schedule = config.schedule()

  def measure(phase, kind, phase_metrics, seconds):
    t0 = time.perf_counter()
    theta, predictions, replication = trainer.replication()
    record = {'phase': phase, 'kind': kind, 'method': config.method, **methods.counters(schedule, phase),
              'step': int(trainer.step.numpy()), 'seconds': seconds, **replication, **phase_metrics,
              **trainer.extra_metrics()}
    record['eval_seconds'] = time.perf_counter() - t0
    if record_fn:
      record = record_fn(record)
    return record, theta.numpy(), predictions.numpy()

  record = None
  if not latest:  # phase 0 (the initial weights) is recorded, then checkpointed as ckpt-0
    record, theta, predictions = measure(0, 'init', {}, 0.0)
    if _diverged(record, config.max_weight_rms):
      logging.error('The initial weights already exceed max_weight_rms (weight RMS %.4g > %.4g)',
                    record['weight_rms'], config.max_weight_rms)
      return _stop_diverged(record, out)
    if out:
      out.write(record, theta, predictions, plot=True)
    manager.save(checkpoint_number=0)
  elif out and out.log.lines:
    record = out.log.lines[-1]

  shown = list(metrics_lib.MAIN_METRICS) + ['test_accuracy']
  bar = keras.utils.Progbar(len(schedule), stateful_metrics=shown, unit_name='phase',
                            verbose=1 if chief else 0)
  bar.update(start)
  for phase in range(start + 1, len(schedule) + 1):
    kind = schedule[phase - 1]
    t0 = time.perf_counter()
    phase_metrics = trainer.run_phase(kind, phase)
    seconds = time.perf_counter() - t0
    trainer.phase.assign(phase)
    record, theta, predictions = measure(phase, kind, phase_metrics, seconds)
    if _diverged(record, config.max_weight_rms):
      logging.error('Diverged in phase %d (generation %d, epoch %d): weight RMS %.4g; the last '
                    'finite checkpoint is kept.', phase, record['generation'], record['epoch'],
                    record['weight_rms'])
      return _stop_diverged(record, out)
    if out:
      due = phase == len(schedule) or (config.plot_every and phase % config.plot_every == 0)
      out.write(record, theta, predictions, plot=due,
                extra=extra_images_fn() if (due and extra_images_fn) else None)
    manager.save(checkpoint_number=phase)
    bar.update(phase, [(k, record[k]) for k in shown if k in record])

  if record is not None or not chief:
    last_phase = int(trainer.phase.numpy())
    final, theta, predictions = measure(last_phase, schedule[last_phase - 1] if last_phase
                                        else 'init', {}, 0.0)
    record = dict(record or final, status='finished')
    if out:
      title = config.method + (f' ({config.optimizer})' if trainer.method.uses_optimizer else '')
      out.final_plots(record, theta, predictions, title)
      if config.measure_stability:
        out.stability(trainer.model, last_phase, *trainer.task_data())
  if not chief:
    tf.io.gfile.rmtree(manager.directory)
  return record


class _Outputs:
  """What the chief writes: metrics.jsonl, TensorBoard and plots."""

  def __init__(self, workdir, restored_phase):
    self._workdir = workdir
    self.log = workdir_lib.MetricsLog(workdir, restored_phase)
    workdir_lib.truncate_tensorboard(workdir, restored_phase)  # before a new events file opens
    self._summaries = _Summaries(workdir)
    self._plot_dir = os.path.join(workdir, formats.PLOTS_DIR)
    tf.io.gfile.makedirs(self._plot_dir)

  @staticmethod
  def _plot(record, theta, predictions):
    title = (f'phase {record["phase"]} ({record["kind"]}): L_SR={record["l_sr"]:.4g} '
             f'rho={record["rho"]:.4g} R2={record["r2"]:.3g} rms={record["weight_rms"]:.3g}')
    return plots.weights_vs_predictions_png(theta, predictions, title)

  def write(self, record, theta, predictions, plot=False, extra=None):
    self.log.write(record)
    png = self._plot(record, theta, predictions) if plot else None
    self._summaries.write(record, theta, predictions, png, extra)

  def stability(self, model, phase, images=None, labels=None):
    """The quine's stability at the end of the run (measured once per final phase).

    With test images (a quine that classifies) the report adds the accuracy of every generation.
    Written to stability.json, TensorBoard (scalars stability/..., image spectrum) and
    plots/spectrum.png; a rerun of a finished run reads it back instead of measuring again.
    """
    path = os.path.join(self._workdir, workdir_lib.STABILITY_FILE)
    if tf.io.gfile.exists(path):
      with tf.io.gfile.GFile(path) as f:
        try:
          result = json.load(f)
        except json.JSONDecodeError:
          result = {}
      if result.get('phase') == phase:
        return result
    result = dict(stability_lib.analyse(model, images=images, labels=labels), phase=phase)
    formats.write_json_atomic(path, result)
    png = plots.spectrum_png(result, title=f'phase {phase}')
    plots.write_png(os.path.join(self._plot_dir, 'spectrum.png'), png)
    self._summaries.write_stability(phase, result, png)
    return result

  def final_plots(self, record, theta, predictions, title):
    plots.write_png(os.path.join(self._plot_dir, 'weights_vs_predictions.png'),
                    self._plot(record, theta, predictions))
    plots.write_png(os.path.join(self._plot_dir, 'curves.png'),
                    plots.curves_png(self.log.lines, title=title))


def config_dict(config):
  """The JSON form of a TrainConfig with the derived numbers a reader wants."""
  d = config.to_dict()
  d['num_weights'] = config.model.num_weights
  d['learning_rate_resolved'] = config.resolved_learning_rate
  return d


def run(config, workdir, strategy=None, overwrite=False):
  """Trains a vanilla quine as `config` says, in `workdir` (resuming it if it holds this run)."""
  config.validate()
  trainer = QuineTrainer(config, strategy)
  return train(trainer, workdir, config_dict(config), overwrite=overwrite)

