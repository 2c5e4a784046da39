"""Tests of the evolution engine (experiments/evolve_lib.py) and its binary, on tiny quines."""

import dataclasses
import json
import os
import subprocess
import sys
from unittest import mock

from absl.testing import absltest
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from conftest import command_line
from conftest import fake_mnist
from conftest import import_binary
from conftest import tiny_aux_config
from experiments import evolve_lib
from export import dump as dump_lib
from models import stability
from models.quine import build_quine
from trainers import configs

evolve = import_binary('experiments.evolve')

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A process of its own: the CPU can only be split before TensorFlow initialises its devices.
_MIRRORED_SCRIPT = r"""
import json
import numpy as np
from trainers import strategies
mirrored = strategies.make_strategy('mirrored', cpu_devices=2)
from experiments import evolve_lib
from models.quine import build_quine
from trainers import configs
model_config = configs.AUX_PRESETS['tiny'].model
rng = np.random.default_rng(0)
images = rng.random((40, model_config.image_size), dtype=np.float32)
labels = rng.integers(0, model_config.num_classes, 40)
config = evolve_lib.EvolveConfig(population=6, initial_development=5)
out = {'replicas': mirrored.num_replicas_in_sync}
for name, strategy in (('default', None), ('mirrored', mirrored)):
  engine = evolve_lib.Engine(build_quine(model_config), config, images, labels, strategy)
  adults = engine.initial(model_config)
  assessed = [x.numpy() for x in engine.assess(adults)]
  state = {arm: (adults, *assessed) for arm in evolve_lib.ARMS}
  state, parents = engine.step(state, 0)
  out[name] = {'adults': adults.tolist(), 'rho': assessed[1].tolist(),
               'fitness': assessed[2].tolist(),
               'next': state['selection'][0].tolist(), 'parents': parents['selection'].tolist()}
print('RESULT ' + json.dumps(out))
"""


def _models(config, count):
  return [build_quine(dataclasses.replace(config, init_seed=k)) for k in range(count)]


class PopulationTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.config = tiny_aux_config()
    self.data = fake_mnist(self.config, num_train=40, num_test=30)
    self.models = _models(self.config, 3)
    self.thetas = np.stack([m.flatten().numpy() for m in self.models])

  def test_batched_regeneration_is_each_quines_own(self):
    population = evolve_lib.Population(self.models[0], self.data.test_images,
                                       self.data.test_labels, chunk=7)
    batched = population.regenerate(tf.constant(self.thetas)).numpy()
    for k, model in enumerate(self.models):
      own = model.predict_weights(tf.range(model.num_weights)).numpy()
      self.assertAllClose(batched[k], own, rtol=1e-5, atol=1e-6)

  def test_batched_fitness_is_each_quines_accuracy(self):
    population = evolve_lib.Population(self.models[0], self.data.test_images,
                                       self.data.test_labels, chunk=64)
    fitness = population.fitness(tf.constant(self.thetas)).numpy()
    for k, model in enumerate(self.models):
      accuracy = stability.accuracy_fn(model, self.data.test_images, self.data.test_labels)
      self.assertAlmostEqual(fitness[k], accuracy(self.thetas[k]), places=6)

  def test_a_standardised_population_matches_too(self):
    config = dataclasses.replace(self.config, kernel_norm='standardise', gain=0.7,
                                 output_activation='tanh')
    models = _models(config, 2)
    thetas = np.stack([m.flatten().numpy() for m in models])
    population = evolve_lib.Population(models[0], self.data.test_images, self.data.test_labels,
                                       chunk=100)
    batched = population.regenerate(tf.constant(thetas)).numpy()
    for k, model in enumerate(models):
      self.assertAllClose(batched[k], model.predict_weights(tf.range(model.num_weights)),
                          rtol=1e-5, atol=1e-6)


class OperatorsTest(tf.test.TestCase):

  def test_mutation_has_the_relative_size_asked(self):
    children = tf.constant(np.random.default_rng(0).normal(size=(4, 50)), tf.float32)
    mutated = evolve_lib.mutate(children, 0.05, tf.constant([1, 2], tf.int64))
    sizes = tf.norm(mutated - children, axis=1) / tf.norm(children, axis=1)
    self.assertAllClose(sizes, [0.05] * 4, rtol=1e-4)
    again = evolve_lib.mutate(children, 0.05, tf.constant([1, 2], tf.int64))
    self.assertAllEqual(mutated, again)  # stateless: a resumed run draws the same

  def test_tournaments_pick_the_fittest_quine_and_the_control_a_random_one(self):
    fitness = tf.constant([0.9, 0.1, 0.5, 0.3, 0.99])
    quine = tf.constant([True, True, True, True, False])  # the fittest is no quine
    selected, control = evolve_lib.tournaments(fitness, quine, 3, tf.constant([0, 1], tf.int64))
    self.assertNotIn(4, selected.numpy())
    self.assertNotIn(4, control.numpy())
    # Each winner is at least as fit as the control's pick from the same tournament.
    self.assertTrue(np.all(tf.gather(fitness, selected) >= tf.gather(fitness, control)))
    many, _ = evolve_lib.tournaments(tf.random.uniform([200]), tf.ones([200], tf.bool), 4,
                                     tf.constant([3, 4], tf.int64))
    self.assertGreater(np.mean(many.numpy() >= 0), 0)  # indices, in range
    self.assertLess(int(tf.reduce_max(many)), 200)

  def test_heritability_is_the_slope_with_its_interval(self):
    rng = np.random.default_rng(0)
    parents = rng.uniform(size=400)
    children = 0.5 * parents + rng.normal(scale=0.05, size=400)
    h = evolve_lib.heritability(parents, children)
    self.assertAlmostEqual(h['slope'], 0.5, delta=0.03)
    self.assertLess(h['low'], h['slope'])
    self.assertGreater(h['high'], h['slope'])
    self.assertLess(h['high'] - h['low'], 0.05)
    self.assertIsNone(evolve_lib.heritability([0.3] * 5, parents[:5])['slope'])

  def test_diversity_counts_distinct_individuals(self):
    a = np.ones(10)
    population = np.stack([a, a * 1.0001, -a, a * 3])
    mean, count = evolve_lib.diversity(population, 1e-2)
    self.assertEqual(count, 3)
    self.assertGreater(mean, 0)


@pytest.mark.slow  # a process of its own, whose CPU it splits
class MirroredTest(absltest.TestCase):

  def test_a_population_sharded_over_two_replicas_evolves_as_on_one_device(self):
    proc = subprocess.run(
        [sys.executable, '-c', _MIRRORED_SCRIPT], capture_output=True, text=True, timeout=300,
        check=False, env=dict(os.environ, PYTHONPATH=_ROOT, TF_CPP_MIN_LOG_LEVEL='2'))
    lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
    self.assertLen(lines, 1, proc.stderr[-3000:])
    out = json.loads(lines[0][len('RESULT '):])
    self.assertEqual(out['replicas'], 2)
    for key in ('adults', 'rho', 'fitness', 'next'):
      np.testing.assert_allclose(out['mirrored'][key], out['default'][key], rtol=1e-5,
                                 atol=1e-6, err_msg=key)
    self.assertEqual(out['mirrored']['parents'], out['default']['parents'])


class EvolveBinaryTest(absltest.TestCase):

  def _run(self, workdir, *args):
    data = fake_mnist(configs.AUX_PRESETS['tiny'].model, num_train=300, num_test=10,
                      separable=True)
    with mock.patch('trainers.data.load_mnist', return_value=data), \
         mock.patch('trainers.data.check_fits_mnist'), mock.patch('builtins.print'):
      with command_line(evolve, f'--workdir={workdir}', '--preset=tiny', '--population=6',
                        '--num_validation=100', '--num_exports=1', '--initial_development=20',
                        *args) as argv:
        evolve.main(argv)

  @pytest.mark.slow  # exports 8 tiny SavedModels and ONNX graphs (~6 s)
  def test_a_run_writes_both_arms_resumes_and_exports_dumps(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    self._run(workdir, '--generations=1')
    # As a run killed while it wrote generation 2 leaves it: a line cut short.
    with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:
      f.write('{"generation": 2, "arm": "sel')
    self._run(workdir, '--generations=3')  # resumes after generation 1
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      records = [json.loads(line) for line in f]
    self.assertEqual([(r['generation'], r['arm']) for r in records],
                     [(g, arm) for g in range(4) for arm in evolve_lib.ARMS])
    self.assertEqual(records[0]['fitness_mean'], records[1]['fitness_mean'])  # same generation 0
    for r in records[2:]:
      self.assertIn('heritability', r)
      self.assertBetween(r['quine_share'], 0.0, 1.0)
    for name in ('selection-g0-0', 'selection-g0-best', 'control-g3-best', 'selection-g3-0'):
      dump = dump_lib.read_dump(os.path.join(workdir, 'exports', name, '1'))
      self.assertTrue(dump.classifies)
    for name in ('fitness', 'heritability', 'phylogeny'):
      self.assertTrue(os.path.exists(os.path.join(workdir, 'plots', f'{name}.png')))
    with open(os.path.join(workdir, 'population.json')) as f:
      population = json.load(f)
    self.assertEqual(population['tensors']['selection/theta'],
                     [6, configs.AUX_PRESETS['tiny'].model.num_weights])
    # TensorBoard's own reader sees each generation once, across the resume.
    events = event_accumulator.EventAccumulator(os.path.join(workdir, 'tensorboard'))
    events.Reload()
    self.assertEqual([e.step for e in events.Tensors('selection/fitness_mean')], [1, 2, 3])
    with open(os.path.join(workdir, 'summary.json')) as f:
      summary = json.load(f)
    self.assertBetween(summary['final_test_accuracy']['selection']['mean'], 0.0, 1.0)
    self.assertIn('slope', summary['pooled_heritability']['control'])
    with np.load(os.path.join(workdir, 'checkpoint.npz')) as checkpoint:
      self.assertEqual(int(checkpoint['generation']), 3)
      self.assertEqual(checkpoint['history/control/parents'].shape, (3, 6))

  def test_a_workdir_of_another_run_is_refused(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    with mock.patch.object(evolve, '_export'):  # the slow test above covers the exports
      self._run(workdir, '--generations=1')
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      self.assertLen(f.readlines(), 4)  # generations 0 and 1, both arms
    with self.assertRaises(SystemExit) as exited:
      self._run(workdir, '--generations=0', '--mutation=0.2')
    self.assertIn('holds another run (its config.json differs); use another --workdir (only '
                  '--generations may change)', exited.exception.code)

  def test_too_many_validation_images_are_refused_before_anything_is_written(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    with self.assertRaises(SystemExit) as exited:
      self._run(workdir, '--num_validation=5000')  # more than the 300 fake training images
    self.assertIn('must be below the 300 training images', exited.exception.code)
    self.assertFalse(os.path.exists(os.path.join(workdir, 'config.json')))

  def test_bad_flags_are_one_line_before_any_work(self):
    workdir = self.create_tempdir().full_path
    for args, message in [
        (('--tournament=1',), '--tournament=1 must be in [2, --population=32]'),
        (('--tournament=1000000000000',), 'must be in [2, --population=32]'),
        (('--seed=-5',), '--seed=-5 must be in [0, 2**31)'),
        (('--mutation=-0.1',), '--mutation=-0.1 must be a finite number >= 0'),
        (('--ancestor=stable_w142',), 'does not classify'),
        (('--generations=2000000',), '--generations=2000000 must be in [0, 1,000,000]'),
        (('--population=1000000000',), '--population=1000000000 needs about'),
    ]:
      with mock.patch('trainers.data.load_mnist') as load:
        with self.assertRaises(SystemExit) as exited:
          with command_line(evolve, f'--workdir={workdir}', *args) as argv:
            evolve.main(argv)
      self.assertIn(message, exited.exception.code)
      self.assertLen(exited.exception.code.splitlines(), 1)
      load.assert_not_called()


if __name__ == '__main__':
  absltest.main()
