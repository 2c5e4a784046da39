"""Tests of the replication / classification trade-off sweep."""

import csv
import dataclasses
import json
import os

from absl.testing import absltest

from conftest import aux_train_config, fake_mnist
from trainers import sweep_lib


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


if __name__ == '__main__':
  absltest.main()
