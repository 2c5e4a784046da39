"""Tests of the replication / classification trade-off sweep."""

import csv
import dataclasses
import json
import os
import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized
import pytest

from conftest import REPO_ROOT
from conftest import aux_train_config
from conftest import exit_line
from conftest import fake_mnist
from conftest import import_binary
from experiments import sweep_lib

sweep_aux = import_binary('experiments.sweep_aux')


@pytest.mark.slow  # each trains five tiny quines (~4 s); the fast loop keeps the CLI refusals
class SweepTest(absltest.TestCase):

  def test_small_sweep_writes_tables_plot_and_hparams(self):
    config = dataclasses.replace(aux_train_config(), num_epochs=1)
    sweep_dir = self.create_tempdir().full_path
    results = sweep_lib.run_sweep(config, sweep_dir, fake_mnist(config.model), [0.01, 1.0])
    self.assertEqual([r['name'] for r in results], ['lambda_0.01', 'lambda_1', 'baseline'])
    self.assertEqual([r['replication_weight'] for r in results], [1.0, 1.0, 0.0])
    for name in ('sweep.json', 'sweep.csv', 'tradeoff.png'):
      self.assertTrue(os.path.exists(os.path.join(sweep_dir, name)), name)
    with open(os.path.join(sweep_dir, 'sweep.json')) as f:
      self.assertEqual(json.load(f), results)
    with open(os.path.join(sweep_dir, 'sweep.csv')) as f:
      rows = list(csv.DictReader(f))
    self.assertEqual(float(rows[0]['test_accuracy']), results[0]['test_accuracy'])
    for r in results:
      self.assertEqual(r['status'], 'finished')
      for key in ('test_accuracy', 'rho', 'l_sr', 'weight_rms'):
        self.assertIsInstance(r[key], float)
      # Each point is an ordinary run with its own metrics and HParams summary.
      events = os.listdir(os.path.join(sweep_dir, r['name'], 'tensorboard'))
      self.assertNotEmpty(events)

  def test_rerun_resumes_every_point(self):
    config = dataclasses.replace(aux_train_config(), num_epochs=1)
    sweep_dir = self.create_tempdir().full_path
    data = fake_mnist(config.model)
    first = sweep_lib.run_sweep(config, sweep_dir, data, [0.1], include_baseline=False)
    again = sweep_lib.run_sweep(config, sweep_dir, data, [0.1], include_baseline=False)
    self.assertEqual(first[0]['l_sr'], again[0]['l_sr'])
    with open(os.path.join(sweep_dir, 'lambda_0.1', 'metrics.jsonl')) as f:
      self.assertLen(f.readlines(), 2)  # init + one epoch, not retrained



class SweepAuxCliTest(parameterized.TestCase):
  """The sweep_aux.py binary refuses what cannot run before loading any data.

  Its command line is parsed and main(argv) called in this process, as app.run would
  (conftest.command_line); one test, marked slow, starts it as a user does (a subprocess).
  """

  def _run(self, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
    env['PYTHONPATH'] = os.pathsep.join(p for p in (REPO_ROOT, env.get('PYTHONPATH')) if p)
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'experiments', 'sweep_aux.py'),
                           *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)

  def _error_line(self, *args):
    """The one line `python experiments/sweep_aux.py ARGS` exits with, run in this process."""
    return exit_line(self, sweep_aux, *args)

  @parameterized.named_parameters(
      ('preset_that_cannot_take_mnist', ['--preset=tiny', '--data_dir={empty}', '--nodownload'],
       'sweep_aux.py: error: --preset=tiny cannot run on MNIST: its quine takes 16-pixel images '
       'in 3 classes, MNIST has 784 pixels and 10 classes'),
      ('non_finite_task_weights', ['--task_weights=0.1,nan'],
       'sweep_aux.py: error: --task_weights=0.1,nan must be finite numbers >= 0'),
  )
  def test_what_cannot_run_is_refused_before_loading_mnist(self, args, line):
    empty = self.create_tempdir().full_path  # no MNIST here: the check must come first
    sweep_dir = os.path.join(self.create_tempdir().full_path, 'sweep')
    self.assertEqual(
        self._error_line(f'--sweep_dir={sweep_dir}', *(a.format(empty=empty) for a in args)),
        line)
    self.assertFalse(os.path.exists(sweep_dir))

  @pytest.mark.slow
  def test_a_preset_that_cannot_take_mnist_is_refused_by_the_process(self):
    empty = self.create_tempdir().full_path
    sweep_dir = os.path.join(self.create_tempdir().full_path, 'sweep')
    proc = self._run(f'--sweep_dir={sweep_dir}', '--preset=tiny', f'--data_dir={empty}',
                     '--nodownload')
    self.assertNotEqual(proc.returncode, 0)
    self.assertNotIn('Traceback', proc.stderr)
    self.assertEqual(proc.stderr.strip().splitlines()[-1],
                     'sweep_aux.py: error: --preset=tiny cannot run on MNIST: its quine takes '
                     '16-pixel images in 3 classes, MNIST has 784 pixels and 10 classes')
    self.assertFalse(os.path.exists(sweep_dir))


if __name__ == '__main__':
  absltest.main()
