"""Tests of the vanilla quine's training library: steps, epochs, regeneration, the phase loop.

Every run is the 'tiny' preset or close to it (width 4, N = 36, minibatches of 2), a second or
so on one CPU core; the runs killed with SIGKILL are processes of their own (marked slow).
"""

# The tests replay an epoch's minibatches, so they read QuineTrainer.epoch_batches.
# pylint: disable=protected-access

import dataclasses
import glob
import json
import os
import signal
import subprocess
import sys
import textwrap

from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from conftest import numpy_kernels
from conftest import numpy_predict_weights
from conftest import tiny_aux_config
from conftest import tiny_model_config
from conftest import tiny_train_config
from models import build_quine
from models import zoo
from trainers import configs
from trainers import train_lib
from trainers import workdir as workdir_lib

_TIMING_FIELDS = ('seconds', 'eval_seconds')
_RECORD_FIELDS = ('phase', 'epoch', 'generation', 'step', 'method', 'seconds', 'l_sr', 'rho', 'r2',
                  'weight_rms', 'prediction_rms', 'margin', 'quotient')


def _strict_json(line):
  """json.loads that refuses NaN / Infinity, which are not JSON."""
  def refuse(constant):
    raise ValueError(f'{constant} is not valid JSON')
  return json.loads(line, parse_constant=refuse)


def _read_lines(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f if line.strip()]


def _without_timing(records):
  return [{k: v for k, v in r.items() if k not in _TIMING_FIELDS} for r in records]


def _tensorboard_scalars(workdir, tag):
  """[(step, value)] of a scalar as TensorBoard's own reader loads it from the run's logs."""
  accumulator = event_accumulator.EventAccumulator(
      os.path.join(workdir, 'tensorboard'), size_guidance={event_accumulator.TENSORS: 0})
  accumulator.Reload()
  return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors(tag)]


# Trains the tiny preset for 3 epochs in argv[1] and SIGKILLs itself at argv[2]: 'save:P' as
# phase P's checkpoint is about to be written (its metrics line and summaries are), 'phase:P' as
# phase P starts.
_KILLED_RUN = textwrap.dedent('''
    import os, signal, sys
    sys.path[:0] = [{repo!r}, {tests!r}]
    import tensorflow as tf
    from conftest import tiny_train_config
    from trainers import train_lib
    where, at = sys.argv[2].split(':')
    save, run_phase = tf.train.CheckpointManager.save, train_lib.QuineTrainer.run_phase
    def dying_save(self, checkpoint_number=None, **kwargs):
      if where == 'save' and checkpoint_number == int(at):
        os.kill(os.getpid(), signal.SIGKILL)
      return save(self, checkpoint_number=checkpoint_number, **kwargs)
    def dying_phase(self, kind, phase):
      if where == 'phase' and phase == int(at):
        os.kill(os.getpid(), signal.SIGKILL)
      return run_phase(self, kind, phase)
    tf.train.CheckpointManager.save = dying_save
    train_lib.QuineTrainer.run_phase = dying_phase
    train_lib.run(tiny_train_config(num_epochs=3), sys.argv[1])
''')


def _all_rows(trainer, phase):
  """The phase's minibatches as one [S, B] array (only full batches)."""
  return np.concatenate([b.numpy() for b in trainer.epoch_batches(phase)
                         if b.shape[1] == trainer.config.batch_size])


def _mse(a, b):
  return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64))**2))


class StepTest(tf.test.TestCase, parameterized.TestCase):
  """The compiled blocks and the epoch / regeneration primitives of QuineTrainer."""

  def test_minibatch_loss_regresses_onto_the_targets_variable(self):
    trainer = train_lib.QuineTrainer(tiny_train_config(optimizer='sgd', learning_rate=1e-3))
    trainer.targets.assign(tf.zeros([36]))  # targets apart from the live weights
    batch = np.array([[3, 30]], np.int32)
    predictions = numpy_predict_weights(trainer.config.model, numpy_kernels(trainer.model),
                                        batch[0])
    loss = trainer.train_block(tf.constant(batch))
    self.assertAllClose(loss, np.mean(predictions**2), rtol=1e-5)

  def test_targets_stay_frozen_within_an_epoch(self):
    # Three SGD steps of 12 coordinates; a large rate so that theta moves between steps.
    lr = 20.0
    config = tiny_train_config(optimizer='sgd', learning_rate=lr, batch_size=12)
    trainer = train_lib.QuineTrainer(config)
    theta0 = trainer.model.flatten().numpy()
    rows = _all_rows(trainer, phase=1)
    self.assertEqual(rows.shape, (3, 12))

    def reference(live_targets):
      model = build_quine(config.model)
      np.testing.assert_array_equal(model.flatten().numpy(), theta0)
      losses = []
      for batch in rows:
        targets = model.flatten() if live_targets else tf.constant(theta0)
        with tf.GradientTape() as tape:
          loss = tf.reduce_mean(tf.square(
              model.predict_weights(batch) - tf.gather(tf.stop_gradient(targets), batch)))
        for v, g in zip(model.quine_variables, tape.gradient(loss, model.quine_variables)):
          v.assign_sub(lr * g)
        losses.append(float(loss))
      return float(np.mean(losses)), model.flatten().numpy()

    frozen_loss, frozen_theta = reference(live_targets=False)
    live_loss, _ = reference(live_targets=True)
    # The test can tell the two apart.
    self.assertGreater(abs(frozen_loss - live_loss), 1e-3 * frozen_loss)

    result = trainer.run_epoch('optimize', 1)
    theta1 = trainer.model.flatten().numpy()
    self.assertGreater(np.abs(theta1 - theta0).max(), 1e-3)
    # After the epoch the targets are still theta from before it, not after.
    np.testing.assert_array_equal(trainer.targets.numpy(), theta0)
    self.assertAllClose(result['train_loss'], frozen_loss, rtol=1e-5)
    self.assertAllClose(theta1, frozen_theta, rtol=1e-5, atol=1e-6)

  def test_next_epoch_refreezes_the_targets(self):
    trainer = train_lib.QuineTrainer(tiny_train_config(learning_rate=0.05))
    trainer.run_epoch('optimize', 1)
    theta1 = trainer.model.flatten().numpy()
    trainer.run_epoch('optimize', 2)
    np.testing.assert_array_equal(trainer.targets.numpy(), theta1)

  def test_regeneration_writes_all_weights_at_once_from_the_old_weights(self):
    config = tiny_train_config()
    trainer = train_lib.QuineTrainer(config)
    # O(1) weights, so that predictions are far from the weights they replace.
    trainer.model.assign_flat(np.random.default_rng(0).normal(0, 0.7, 36).astype(np.float32))
    old_kernels = numpy_kernels(trainer.model)
    old_theta = trainer.model.flatten().numpy()
    old_predictions = trainer.predict_all().numpy()
    simultaneous = numpy_predict_weights(config.model, old_kernels, np.arange(36))

    # A sequential in-place update (theta[c] written before f(c + 1) is computed) differs.
    sequential = old_theta.astype(np.float64)
    for c in range(36):
      kernels = [p.numpy().astype(np.float64) for p in trainer.model.unflatten(sequential)]
      sequential[c] = numpy_predict_weights(config.model, kernels, [c])[0]
    self.assertGreater(np.abs(sequential - simultaneous).max(), 1e-2)

    trainer.regenerate()
    theta_new = trainer.model.flatten().numpy()
    self.assertAllClose(theta_new, simultaneous, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(theta_new, old_predictions)

  def test_predict_all_in_chunks_equals_one_pass(self):
    whole = train_lib.QuineTrainer(tiny_train_config())
    chunked = train_lib.QuineTrainer(tiny_train_config(eval_chunk_size=5))  # 7 x 5 + 1
    want = numpy_predict_weights(whole.config.model, numpy_kernels(whole.model), np.arange(36))
    self.assertEqual(whole.predict_all().shape, (36,))
    # Same coordinates, other matmul shapes: equal up to float32 rounding.
    self.assertAllClose(chunked.predict_all(), whole.predict_all(), rtol=1e-5, atol=1e-7)
    self.assertAllClose(chunked.predict_all(), want, rtol=1e-5, atol=1e-7)

  def test_hill_climbing_keeps_only_improving_moves(self):
    trainer = train_lib.QuineTrainer(tiny_train_config(noise_stddev=0.05))
    seed = tf.constant(7, tf.int64)
    accepted = rejected = 0
    for batch in _all_rows(trainer, phase=1):
      block = tf.constant(batch[np.newaxis])
      before_loss = float(trainer.minibatch_loss(block[0], training=False))
      before = trainer.model.flatten().numpy()
      step = int(trainer.step)
      rate = float(trainer.hill_block(block, seed))
      after_loss = float(trainer.minibatch_loss(block[0], training=False))
      after = trainer.model.flatten().numpy()
      self.assertEqual(int(trainer.step), step + 1)
      self.assertIn(rate, (0.0, 1.0))
      if rate:
        accepted += 1
        self.assertLess(after_loss, before_loss)
        self.assertTrue(np.all(after != before))  # every weight was perturbed
      else:
        rejected += 1
        np.testing.assert_array_equal(after, before)  # bit-identical
        self.assertEqual(after_loss, before_loss)
    self.assertGreater(accepted, 0)
    self.assertGreater(rejected, 0)

    # Climbing on one fixed minibatch: its loss never rises.
    block = tf.constant(_all_rows(trainer, phase=2)[:1])
    losses = [float(trainer.minibatch_loss(block[0], training=False))]
    for _ in range(10):
      trainer.hill_block(block, seed)
      losses.append(float(trainer.minibatch_loss(block[0], training=False)))
    self.assertEqual(losses, sorted(losses, reverse=True))
    self.assertLess(losses[-1], losses[0])

  def test_hill_climbing_epoch_reports_an_accept_rate(self):
    trainer = train_lib.QuineTrainer(tiny_train_config(noise_stddev=0.05, batch_size=5))
    result = trainer.run_epoch('hill_climb', 1)
    self.assertBetween(result['accept_rate'], 0.0, 1.0)
    self.assertEqual(int(trainer.step), 8)  # 7 minibatches of 5 and one of 1

  def test_optimisation_fits_the_frozen_targets(self):
    trainer = train_lib.QuineTrainer(tiny_train_config(learning_rate=0.03))
    targets = trainer.targets.numpy()
    start = _mse(trainer.predict_all(), targets)
    for phase in (1, 2, 3):
      for block in trainer.epoch_batches(phase):
        trainer.train_block(block)
    np.testing.assert_array_equal(trainer.targets.numpy(), targets)
    self.assertLess(_mse(trainer.predict_all(), targets), 0.75 * start)

  def test_train_block_eager_equals_graph(self):
    graph = train_lib.QuineTrainer(tiny_train_config(learning_rate=0.05))
    eager = train_lib.QuineTrainer(tiny_train_config(learning_rate=0.05))
    block = tf.constant(_all_rows(graph, phase=1)[:3])
    self.assertTrue(graph.jit_compile)
    # XLA fuses and reorders float32 arithmetic: equal to rounding, not bit for bit.
    self.assertAllClose(graph.train_block(block), eager._train_block(block), rtol=1e-5)
    self.assertAllClose(graph.model.flatten(), eager.model.flatten(), rtol=1e-5, atol=1e-6)

  def test_uncompiled_graph_equals_compiled_to_rounding(self):
    xla = train_lib.QuineTrainer(tiny_train_config(learning_rate=0.05))
    plain = train_lib.QuineTrainer(tiny_train_config(learning_rate=0.05, jit_compile=False))
    self.assertFalse(plain.jit_compile)
    for phase in (1, 2):
      xla.run_epoch('optimize', phase)
      plain.run_epoch('optimize', phase)
    self.assertAllClose(xla.model.flatten(), plain.model.flatten(), rtol=1e-5, atol=1e-6)

  def test_blocks_do_not_retrace(self):
    trainer = train_lib.QuineTrainer(tiny_train_config(batch_size=5))
    trainer.train_block(tf.zeros([1, 2], tf.int32))
    trainer.train_block(tf.zeros([3, 2], tf.int32))
    trainer.train_block(tf.zeros([2, 5], tf.int32))
    seed = tf.constant(1, tf.int64)
    trainer.hill_block(tf.zeros([1, 2], tf.int32), seed)
    trainer.hill_block(tf.zeros([4, 3], tf.int32), seed + 1)
    trainer.predict_all()
    trainer.predict_all()
    trainer.run_epoch('optimize', 1)  # a [7, 5] block and a [1, 1] remainder
    trainer.run_epoch('hill_climb', 2)
    trainer.regenerate()
    self.assertEqual(trainer.train_block.experimental_get_tracing_count(), 1)
    self.assertEqual(trainer.hill_block.experimental_get_tracing_count(), 1)
    self.assertEqual(trainer.predict_all.experimental_get_tracing_count(), 1)

  def test_steps_per_loop_splits_an_epoch_into_blocks_without_changing_it(self):
    whole = train_lib.QuineTrainer(tiny_train_config(learning_rate=0.05))
    split = train_lib.QuineTrainer(tiny_train_config(learning_rate=0.05, steps_per_loop=4))
    self.assertLen(whole.epoch_batches(1), 1)
    self.assertLen(split.epoch_batches(1), 5)  # 18 steps: 4 + 4 + 4 + 4 + 2
    np.testing.assert_array_equal(
        np.concatenate([b.numpy().ravel() for b in split.epoch_batches(1)]),
        whole.epoch_batches(1)[0].numpy().ravel())
    a = whole.run_epoch('optimize', 1)
    b = split.run_epoch('optimize', 1)
    self.assertAllClose(a['train_loss'], b['train_loss'], rtol=1e-6)
    self.assertAllClose(whole.model.flatten(), split.model.flatten(), rtol=1e-6, atol=1e-8)

  def test_an_epoch_visits_every_coordinate_once(self):
    trainer = train_lib.QuineTrainer(tiny_train_config(batch_size=5))
    blocks = trainer.epoch_batches(3)
    coordinates = np.concatenate([b.numpy().ravel() for b in blocks])
    np.testing.assert_array_equal(np.sort(coordinates), np.arange(36))
    other = np.concatenate([b.numpy().ravel() for b in trainer.epoch_batches(4)])
    self.assertFalse(np.array_equal(coordinates, other))  # reshuffled every phase


class ConfigTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ('optimize', dict(method='optimize', num_epochs=3), ['optimize'] * 3),
      ('hill_climb', dict(method='hill_climb', num_epochs=2), ['hill_climb'] * 2),
      ('regenerate', dict(method='regenerate', generations=3), ['regenerate'] * 3),
      ('alternate', dict(method='alternate', generations=2, opt_epochs_per_generation=2),
       ['optimize', 'optimize', 'regenerate', 'optimize', 'optimize', 'regenerate']),
      ('no_epochs', dict(method='optimize', num_epochs=0), []),
  )
  def test_schedule(self, overrides, want):
    self.assertEqual(configs.TrainConfig(**overrides).schedule(), want)

  def test_paper_alternate_preset_is_one_epoch_then_one_regeneration_ten_times(self):
    self.assertEqual(configs.PRESETS['paper_alternate'].schedule(),
                     ['optimize', 'regenerate'] * 10)

  @parameterized.named_parameters(
      ('batch_size_above_n', dict(batch_size=37), '--batch_size=37'),
      ('zero_batch', dict(batch_size=0), '--batch_size'),
      ('method', dict(method='anneal'), '--method'),
      ('optimizer', dict(optimizer='lbfgs'), '--optimizer'),
      ('learning_rate', dict(learning_rate=-1.0), '--learning_rate'),
      ('num_epochs', dict(num_epochs=-1), '--num_epochs'),
      ('noise', dict(noise_stddev=0.0), '--noise_stddev'),
      ('max_weight_rms', dict(max_weight_rms=0.0), '--max_weight_rms'),
      ('model', dict(model=tiny_model_config(width=0)), 'width'),
      ('nan_learning_rate', dict(learning_rate=float('nan')), '--learning_rate=nan must be'),
      ('infinite_noise', dict(noise_stddev=float('inf')), '--noise_stddev=inf must be'),
      ('nan_task_weight', dict(model=tiny_aux_config(), task_weight=float('nan')),
       '--task_weight=nan must be a finite number'),
      ('infinite_replication_weight', dict(replication_weight=-float('inf')),
       '--replication_weight=-inf must be a finite number'),
  )
  def test_validate_names_the_bad_flag(self, overrides, message):
    with self.assertRaisesRegex(ValueError, message):
      tiny_train_config(**overrides).validate()

  def test_default_learning_rate_follows_the_optimizer(self):
    self.assertEqual(configs.TrainConfig(optimizer='adamax').resolved_learning_rate, 0.002)
    self.assertEqual(configs.TrainConfig(optimizer='adam', learning_rate=0.5)
                     .resolved_learning_rate, 0.5)

  def test_dict_round_trip(self):
    config = tiny_train_config(method='alternate', learning_rate=0.1)
    self.assertEqual(configs.TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))),
                     config)


class RunTest(tf.test.TestCase, parameterized.TestCase):
  """The phase loop: records, checkpoints, resuming, divergence, the workdir."""

  def _workdir(self, name='run'):
    return os.path.join(self.create_tempdir().full_path, name)

  def test_fixed_point_method_finds_a_non_trivial_quine_and_resumes_exactly(self):
    # The tiny quine (N = 36) from its paper initialisation: a fixed point with rho far below the
    # zero network's 1, at weights larger than the initial ones (not a shrunken copy).
    config = tiny_train_config(method='fixed_point', solver_steps=30)
    straight = self._workdir('straight')
    record = train_lib.run(config, straight)
    lines = _read_lines(straight)
    self.assertEqual(record['status'], 'finished')
    self.assertLess(record['rho'], 1e-3)
    self.assertGreater(record['r2'], 0.999)
    self.assertGreater(record['weight_rms'], lines[0]['weight_rms'] / 2)
    self.assertEqual([m['kind'] for m in lines[1:]], ['fixed_point'] * 30)
    self.assertIn('solver_stage', lines[-1])

    resumed = self._workdir('resumed')
    train_lib.run(dataclasses.replace(config, solver_steps=12), resumed)
    train_lib.run(config, resumed)  # the solver's damping and stage come back with the weights
    self.assertEqual(_without_timing(_read_lines(resumed)), _without_timing(lines))

  def test_metrics_lines_have_every_field_and_start_at_epoch_0(self):
    workdir = self._workdir()
    record = train_lib.run(tiny_train_config(num_epochs=2), workdir)
    self.assertEqual(record['status'], 'finished')
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      lines = [_strict_json(line) for line in f]
    self.assertLen(lines, 3)
    for line in lines:
      for field in _RECORD_FIELDS:
        self.assertIn(field, line)
      self.assertEqual(line['method'], 'optimize')
      self.assertAllClose(line['margin'], np.sqrt(line['l_sr'] / 36))
      self.assertAllClose(line['quotient'], np.log(36 / line['l_sr']))
    self.assertEqual([(m['phase'], m['epoch'], m['generation'], m['step']) for m in lines],
                     [(0, 0, 0, 0), (1, 1, 0, 18), (2, 2, 0, 36)])
    self.assertNotIn('train_loss', lines[0])
    self.assertIn('train_loss', lines[1])
    self.assertEqual(workdir_lib.read_config(workdir)['num_weights'], 36)
    self.assertEqual({k: v for k, v in record.items() if k != 'status'}, lines[-1])

  def test_first_record_measures_the_initial_weights(self):
    workdir = self._workdir()
    config = tiny_train_config(num_epochs=1)
    train_lib.run(config, workdir)
    first = _read_lines(workdir)[0]
    model = build_quine(config.model)
    theta = model.flatten().numpy().astype(np.float64)
    predictions = numpy_predict_weights(config.model, numpy_kernels(model), np.arange(36))
    self.assertAllClose(first['l_sr'], np.sum((predictions - theta)**2), rtol=1e-5)
    self.assertAllClose(first['weight_rms'], np.sqrt(np.mean(theta**2)), rtol=1e-6)

  def test_init_from_starts_at_the_pretrained_weights_and_resumes_past_them(self):
    workdir = self._workdir()
    config = tiny_train_config(model=zoo.load_config('exact_w5'), init_from='exact_w5',
                               method='regenerate', generations=1)
    self.assertEqual(configs.TrainConfig.from_dict(config.to_dict()), config)
    train_lib.run(config, workdir)
    first, last = _read_lines(workdir)[0], _read_lines(workdir)[-1]
    self.assertAllClose(first['rho'], zoo.catalogue()['exact_w5']['metrics']['rho'], rtol=1e-6)
    self.assertLess(last['rho'], 1e-9)  # the child of an exact quine is one too
    # Resuming restores the checkpoint, not the pretrained weights again.
    train_lib.run(dataclasses.replace(config, generations=2), workdir)
    self.assertEqual([r['generation'] for r in _read_lines(workdir)], [0, 1, 2])
    self.assertGreater(_read_lines(workdir)[-1]['rho'], last['rho'])

  def test_a_few_epochs_lower_the_loss(self):
    # The tiny preset as it is (Adamax, lr 2e-3): L_SR falls, and not by shrinking the weights.
    workdir = self._workdir()
    train_lib.run(tiny_train_config(num_epochs=3), workdir)
    lines = _read_lines(workdir)
    self.assertLess(lines[-1]['l_sr'], lines[0]['l_sr'])
    self.assertLess(lines[-1]['rho'], lines[0]['rho'])
    self.assertGreater(lines[-1]['weight_rms'], 0.95 * lines[0]['weight_rms'])

  def test_a_few_epochs_improve_the_copy(self):
    # At lr 0.03 the weights grow (L_SR rises), but the copy gets better relative to them.
    workdir = self._workdir()
    train_lib.run(tiny_train_config(num_epochs=3, learning_rate=0.03), workdir)
    lines = _read_lines(workdir)
    self.assertLess(lines[-1]['rho'], 0.8 * lines[0]['rho'])
    self.assertGreater(lines[-1]['r2'], lines[0]['r2'] + 0.2)

  @parameterized.named_parameters(
      ('optimize', dict(method='optimize'), 'num_epochs', 2, 4),
      ('hill_climb', dict(method='hill_climb', noise_stddev=0.02), 'num_epochs', 1, 3),
      ('alternate', dict(method='alternate', learning_rate=0.02), 'generations', 1, 2),
  )
  def test_resume_equals_an_uninterrupted_run(self, overrides, field, first, total):
    config = tiny_train_config(**overrides)
    a, b = self._workdir('a'), self._workdir('b')
    train_lib.run(dataclasses.replace(config, **{field: first}), a)
    resumed = train_lib.run(dataclasses.replace(config, **{field: total}), a)
    straight = train_lib.run(dataclasses.replace(config, **{field: total}), b)
    self.assertEqual(_without_timing(_read_lines(a)), _without_timing(_read_lines(b)))
    self.assertEqual(_without_timing([resumed]), _without_timing([straight]))
    self.assertEqual(workdir_lib.read_config(a), workdir_lib.read_config(b))

  def test_metrics_line_beyond_the_last_checkpoint_is_dropped_on_resume(self):
    config = tiny_train_config(num_epochs=3)
    a, b = self._workdir('a'), self._workdir('b')
    train_lib.run(config, a)
    # Simulate a kill after phase 3's metrics line was written but before its checkpoint.
    checkpoints = os.path.join(a, 'checkpoints')
    for path in glob.glob(os.path.join(checkpoints, 'ckpt-3.*')):
      os.remove(path)
    tf.compat.v1.train.update_checkpoint_state(
        checkpoints, os.path.join(checkpoints, 'ckpt-2'),
        all_model_checkpoint_paths=[os.path.join(checkpoints, f'ckpt-{i}') for i in (1, 2)])
    self.assertEqual([m['phase'] for m in _read_lines(a)], [0, 1, 2, 3])
    train_lib.run(dataclasses.replace(config, num_epochs=4), a)
    train_lib.run(dataclasses.replace(config, num_epochs=4), b)
    self.assertEqual([m['phase'] for m in _read_lines(a)], [0, 1, 2, 3, 4])
    self.assertEqual(_without_timing(_read_lines(a)), _without_timing(_read_lines(b)))

  @parameterized.parameters('save:0', 'phase:1', 'save:2')
  @pytest.mark.slow  # a process each, killed; the resumes above are in this process
  def test_a_sigkilled_run_resumes_without_recording_a_phase_twice(self, kill_at):
    # save:0 is a kill before the first checkpoint (phase 0 logged), phase:1 one during the first
    # epoch, save:2 one between phase 2's summaries and its checkpoint.
    killed, straight = self._workdir('killed'), self._workdir('straight')
    tests = os.path.dirname(os.path.abspath(__file__))
    script = _KILLED_RUN.format(repo=os.path.dirname(tests), tests=tests)
    result = subprocess.run([sys.executable, '-c', script, killed, kill_at],
                            capture_output=True, text=True, timeout=300, check=False)
    self.assertEqual(result.returncode, -signal.SIGKILL, result.stderr[-2000:])
    config = tiny_train_config(num_epochs=3)
    train_lib.run(config, killed)
    train_lib.run(config, straight)
    self.assertEqual([m['phase'] for m in _read_lines(killed)], [0, 1, 2, 3])
    self.assertEqual(_without_timing(_read_lines(killed)), _without_timing(_read_lines(straight)))
    scalars = _tensorboard_scalars(killed, 'l_sr')
    self.assertEqual([step for step, _ in scalars], [0, 1, 2, 3])
    self.assertAllClose([value for _, value in scalars],
                        [value for _, value in _tensorboard_scalars(straight, 'l_sr')])

  def test_summaries_past_the_restored_checkpoint_are_dropped_on_resume(self):
    config = tiny_train_config(num_epochs=3)
    workdir = self._workdir()
    train_lib.run(config, workdir)
    checkpoints = os.path.join(workdir, 'checkpoints')  # as if killed before ckpt-3
    for path in glob.glob(os.path.join(checkpoints, 'ckpt-3.*')):
      os.remove(path)
    tf.compat.v1.train.update_checkpoint_state(
        checkpoints, os.path.join(checkpoints, 'ckpt-2'),
        all_model_checkpoint_paths=[os.path.join(checkpoints, f'ckpt-{i}') for i in (1, 2)])
    train_lib.run(dataclasses.replace(config, num_epochs=4), workdir)
    self.assertEqual([step for step, _ in _tensorboard_scalars(workdir, 'l_sr')],
                     [0, 1, 2, 3, 4])

  def test_a_torn_last_metrics_line_is_dropped_on_resume(self):
    config = tiny_train_config(num_epochs=2)
    workdir = self._workdir()
    train_lib.run(config, workdir)
    with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:
      f.write('{"phase": 3, "l_sr": 0.1')  # a write cut short by a kill
    with self.assertLogs(level='WARNING') as logs:
      train_lib.run(dataclasses.replace(config, num_epochs=3), workdir)
    self.assertIn('torn', '\n'.join(logs.output))
    self.assertEqual([m['phase'] for m in _read_lines(workdir)], [0, 1, 2, 3])

  def test_rerunning_a_finished_run_changes_nothing(self):
    workdir = self._workdir()
    config = tiny_train_config(num_epochs=1)
    first = train_lib.run(config, workdir)
    lines = _read_lines(workdir)
    again = train_lib.run(config, workdir)
    self.assertEqual(_read_lines(workdir), lines)
    self.assertEqual(_without_timing([again]), _without_timing([first]))

  def test_checkpoint_restores_into_a_fresh_trainer(self):
    workdir = self._workdir()
    config = tiny_train_config(num_epochs=2, learning_rate=0.05)
    trainer = train_lib.QuineTrainer(config)
    train_lib.train(trainer, workdir, train_lib.config_dict(config))
    fresh = train_lib.QuineTrainer(config)
    latest = tf.train.latest_checkpoint(os.path.join(workdir, 'checkpoints'))
    self.assertEndsWith(latest, 'ckpt-2')
    fresh.checkpoint.restore(latest).assert_consumed()
    np.testing.assert_array_equal(fresh.model.flatten().numpy(), trainer.model.flatten().numpy())
    np.testing.assert_array_equal(fresh.targets.numpy(), trainer.targets.numpy())
    self.assertEqual(int(fresh.phase), 2)
    self.assertEqual(int(fresh.step), 36)
    self.assertEqual(int(fresh.optimizer.iterations), 36)

  def test_mirrored_strategy_on_two_cpus_matches_the_default_strategy(self):
    # run() takes a strategy. batch_size is the global batch (split across the replicas, as in
    # Keras and orbit), so two replicas must give a single replica's numbers.
    if len(tf.config.list_logical_devices('CPU')) < 2:
      self.skipTest('needs two logical CPUs (conftest splits the CPU before TensorFlow starts)')
    strategy = tf.distribute.MirroredStrategy(['CPU:0', 'CPU:1'])
    self.assertEqual(strategy.num_replicas_in_sync, 2)
    config = tiny_train_config(method='alternate', generations=1, learning_rate=0.02)
    mirrored = train_lib.run(config, self._workdir('mirrored'), strategy=strategy)
    default = train_lib.run(config, self._workdir('default'))
    self.assertEqual(mirrored['status'], 'finished')
    self.assertEqual(mirrored['step'], default['step'])
    for key in ('l_sr', 'rho', 'r2', 'weight_rms'):
      self.assertAllClose(mirrored[key], default[key], rtol=1e-5, msg=key)

  def test_workdir_with_a_different_config_is_refused_and_untouched(self):
    workdir = self._workdir()
    train_lib.run(tiny_train_config(num_epochs=1), workdir)
    before = {}
    for root, _, files in os.walk(workdir):
      for name in files:
        with open(os.path.join(root, name), 'rb') as f:
          before[os.path.join(root, name)] = f.read()
    with self.assertRaisesRegex(workdir_lib.WorkdirError, 'different configuration'):
      train_lib.run(tiny_train_config(num_epochs=1, model=tiny_model_config(width=3)), workdir)
    after = {}
    for root, _, files in os.walk(workdir):
      for name in files:
        with open(os.path.join(root, name), 'rb') as f:
          after[os.path.join(root, name)] = f.read()
    self.assertEqual(sorted(after), sorted(before))
    self.assertTrue(after == before)

  def test_overwrite_moves_the_old_run_aside(self):
    workdir = self._workdir()
    train_lib.run(tiny_train_config(num_epochs=1), workdir)
    new_config = tiny_train_config(num_epochs=1, model=tiny_model_config(width=3))
    record = train_lib.run(new_config, workdir, overwrite=True)
    self.assertEqual(record['status'], 'finished')
    moved = glob.glob(workdir + '.old-*')
    self.assertLen(moved, 1)
    self.assertEqual(workdir_lib.read_config(moved[0])['model']['width'], 4)
    self.assertLen(_read_lines(moved[0]), 2)
    self.assertTrue(glob.glob(os.path.join(moved[0], 'checkpoints', 'ckpt-1.index')))
    self.assertEqual(workdir_lib.read_config(workdir)['num_weights'], 2 * 3 * 3 + 3)
    self.assertEqual([m['phase'] for m in _read_lines(workdir)], [0, 1])

  def test_weights_above_max_weight_rms_count_as_diverged(self):
    workdir = self._workdir()
    # The initial weights' RMS is ~0.27: the run stops before any training, saving nothing.
    record = train_lib.run(tiny_train_config(num_epochs=3, max_weight_rms=0.1), workdir)
    self.assertEqual(record['status'], 'diverged')
    self.assertEqual(record['phase'], 0)
    lines = _read_lines(workdir)
    self.assertEqual([m['phase'] for m in lines], [0])
    self.assertEqual(lines[-1]['status'], 'diverged')
    self.assertIsNone(tf.train.latest_checkpoint(os.path.join(workdir, 'checkpoints')))

  def test_exploding_regeneration_keeps_the_last_finite_checkpoint(self):
    # he_normal at width 32 regenerates to ever larger weights, then inf and NaN.
    workdir = self._workdir()
    config = tiny_train_config(model=tiny_model_config(width=32, init='he_normal'),
                               method='regenerate', generations=10, max_weight_rms=1e30)
    record = train_lib.run(config, workdir)
    self.assertEqual(record['status'], 'diverged')
    diverged = record['phase']
    self.assertBetween(diverged, 2, 10)
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      lines = [_strict_json(line) for line in f]  # NaN and inf are written as null
    self.assertEqual([m['phase'] for m in lines], list(range(diverged + 1)))
    self.assertEqual(lines[-1]['status'], 'diverged')
    self.assertNotIn('status', lines[-2])
    latest = tf.train.latest_checkpoint(os.path.join(workdir, 'checkpoints'))
    self.assertEndsWith(latest, f'ckpt-{diverged - 1}')
    trainer = train_lib.QuineTrainer(config)
    trainer.checkpoint.restore(latest).assert_consumed()
    theta = trainer.model.flatten().numpy()
    self.assertTrue(np.all(np.isfinite(theta)))
    self.assertAllClose(np.sqrt(np.mean(theta.astype(np.float64)**2)), lines[-2]['weight_rms'],
                        rtol=1e-5)

    # Rerunning diverges again at the same phase, with one diverged line.
    again = train_lib.run(config, workdir)
    self.assertEqual(again['status'], 'diverged')
    self.assertEqual(again['phase'], diverged)
    self.assertEqual([m['phase'] for m in _read_lines(workdir)], list(range(diverged + 1)))

  def test_metrics_stay_valid_json_when_the_quine_collapses_to_zero(self):
    # Regenerating he_normal at width 4 reaches all-zero weights, a trivial exact copy: L_SR = 0,
    # so quotient = ln(N / 0) is infinite. metrics.jsonl must still be JSON (no 'Infinity').
    workdir = self._workdir()
    config = tiny_train_config(model=tiny_model_config(init='he_normal'), method='regenerate',
                               generations=5)
    record = train_lib.run(config, workdir)
    self.assertEqual(record['status'], 'finished')
    self.assertEqual(record['l_sr'], 0.0)
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      for line in f:
        _strict_json(line)

  @parameterized.named_parameters(
      ('regenerate', dict(method='regenerate', generations=2),
       ['init', 'regenerate', 'regenerate'], [0, 0, 0], [0, 1, 2]),
      ('alternate', dict(method='alternate', generations=2),
       ['init', 'optimize', 'regenerate', 'optimize', 'regenerate'], [0, 1, 1, 2, 2],
       [0, 0, 1, 1, 2]),
      ('hill_climb', dict(method='hill_climb', num_epochs=2),
       ['init', 'hill_climb', 'hill_climb'], [0, 1, 2], [0, 0, 0]),
  )
  def test_tiny_run_of_each_method_finishes(self, overrides, kinds, epochs, generations):
    workdir = self._workdir()
    config = tiny_train_config(**overrides)
    record = train_lib.run(config, workdir)
    self.assertEqual(record['status'], 'finished')
    lines = _read_lines(workdir)
    self.assertEqual([m['kind'] for m in lines], kinds)
    self.assertEqual(kinds[1:], config.schedule())
    self.assertEqual([m['epoch'] for m in lines], epochs)
    self.assertEqual([m['generation'] for m in lines], generations)
    self.assertEqual({m['method'] for m in lines}, {config.method})
    self.assertTrue(os.path.exists(os.path.join(workdir, 'plots', 'curves.png')))
    self.assertTrue(os.path.exists(os.path.join(workdir, 'plots', 'weights_vs_predictions.png')))


if __name__ == '__main__':
  tf.test.main()
