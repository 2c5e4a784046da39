"""Tests of trainers.methods: training methods and phases as registry entries.

A toy method registered here alone (one phase that halves every weight, counted as a generation)
trains, resumes and exports through the same library as the built-in methods, with no edit
anywhere else.
"""

import dataclasses
import json
import os

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from conftest import tiny_train_config
from export import dump as dump_lib
from export import exporter
from trainers import configs
from trainers import methods
from trainers import train_lib


def _halve(trainer, phase):
  del phase
  trainer.model.assign_flat(trainer.model.flatten() * 0.5)
  return {'halved': 1.0}


def _validate_halve(config):
  if config.generations > 5:
    raise ValueError(f'--generations={config.generations} must be <= 5 for --method=halve')


class ToyMethodTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    methods.register_phase(methods.Phase('halve', _halve, methods.GENERATION))
    methods.register(methods.Method(
        'halve', kinds=('vanilla',), phases=('halve',),
        schedule=lambda config: ['halve'] * config.generations, validate=_validate_halve))
    self.addCleanup(methods.unregister_phase, 'halve')
    self.addCleanup(methods.unregister, 'halve')

  def _lines(self, workdir):
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      return [json.loads(line) for line in f]

  def test_a_registered_method_trains_resumes_and_exports(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    config = tiny_train_config(method='halve', generations=2, measure_stability=False)
    record = train_lib.run(config, workdir)
    self.assertEqual(record['status'], 'finished')
    initial = self._lines(workdir)[0]['weight_rms']
    self.assertAllClose(record['weight_rms'], initial / 4)

    # Resume: the same command with a longer schedule runs only the new phases.
    record = train_lib.run(dataclasses.replace(config, generations=3), workdir)
    lines = self._lines(workdir)
    self.assertEqual([m['kind'] for m in lines], ['init', 'halve', 'halve', 'halve'])
    self.assertEqual([m['generation'] for m in lines], [0, 1, 2, 3])
    self.assertEqual([m.get('halved') for m in lines], [None, 1.0, 1.0, 1.0])
    self.assertAllClose(record['weight_rms'], initial / 8)

    version = exporter.export_workdir(workdir, self.create_tempdir().full_path, 'halve')
    dump = dump_lib.read_dump(version)
    self.assertEqual(dump.num_weights, config.model.num_weights)
    self.assertAllClose(np.sqrt(np.mean(dump.theta.astype(np.float64) ** 2)), initial / 8,
                        rtol=1e-5)

  def test_its_validation_and_kinds_are_the_configs(self):
    with self.assertRaisesRegex(ValueError, r'--generations=6 must be <= 5 for --method=halve'):
      tiny_train_config(method='halve', generations=6).validate()
    aux = dataclasses.replace(configs.AUX_PRESETS['tiny'], method='halve')
    with self.assertRaisesRegex(ValueError, r'--method=halve is not supported for auxiliary'):
      aux.validate()

  def test_a_method_with_an_unregistered_phase_is_refused(self):
    with self.assertRaisesRegex(ValueError, r"unregistered phases \['nope'\]"):
      methods.register(methods.Method('broken', ('vanilla',), ('nope',), schedule=list))
    self.assertNotIn('broken', methods.names())


class RegistryTest(parameterized.TestCase):

  def test_the_built_in_methods_are_registered(self):
    self.assertEqual(methods.names(), ('optimize', 'hill_climb', 'regenerate', 'alternate',
                                       'fixed_point', 'replicate'))

  def test_unknown_method_is_named(self):
    with self.assertRaisesRegex(ValueError, r"--method='nope' is not one of"):
      methods.get('nope')

  @parameterized.named_parameters(
      ('alternate', ['optimize', 'regenerate', 'optimize', 'regenerate'], 2, 2),
      ('hill_climb', ['hill_climb', 'hill_climb'], 2, 0),
      ('solver', ['fixed_point'] * 3, 0, 0),
  )
  def test_counters_follow_the_phases(self, schedule, epochs, generations):
    self.assertEqual(methods.counters(schedule, len(schedule)),
                     {'epoch': epochs, 'generation': generations})


if __name__ == '__main__':
  tf.test.main()
