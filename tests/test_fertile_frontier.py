"""Tests of experiments/fertile_frontier.py: its commands, rows, table and figure, in-process.

The points are MNIST-sized runs (minutes each). Here every point's training command is parsed by
train_aux.py's own flags and validated as its config, and `_run` is replaced by one that writes
the fertility report an analysis command would, so the test checks which commands the frontier
runs, in which order, and how it reads and writes their results.
"""

import json
import os
from unittest import mock

from absl.testing import absltest

from conftest import command_line
from conftest import import_binary

frontier = import_binary('experiments.fertile_frontier')
train_aux = import_binary('trainers.train_aux')


def _report(accuracies, rhos, radius):
  return {'spectral_radius': radius, 'rho': rhos[0], 'fertile_generations': 0,
          'noise': {'returned': 0, 'num_perturbations': 10},
          'trajectory': {'accuracies': accuracies, 'rhos': rhos, 'diverged_at': None}}


class FertileFrontierTest(absltest.TestCase):

  def test_every_training_command_is_a_valid_train_aux_command_line(self):
    for name, _, (kind, what), _ in frontier.POINTS:
      if kind != 'train':
        continue
      train, _, _ = frontier.point_commands(name, (kind, what), '/tmp/f', None)
      with command_line(train_aux, *train[1:]):
        config = train_aux.cli.config_from_flags(train_aux.configs.AUX_PRESETS, 'short')
      self.assertEqual(config.model.num_weights, 21_726, msg=name)
      self.assertTrue(config.measure_stability, msg=name)

  def test_runs_each_point_then_its_analysis_and_writes_the_frontier(self):
    runs = self.create_tempdir().full_path
    calls = []

    def fake_run(argv):
      calls.append(argv)
      if argv[0] == 'experiments/fertility.py':
        output = next(a for a in argv if a.startswith('--output_dir=')).partition('=')[2]
        os.makedirs(output)
        accuracies = [0.9, 0.6] + [0.1] * 299
        rhos = [0.05, 2.0] + [1e-12] * 299
        with open(os.path.join(output, 'stability.json'), 'w') as f:
          json.dump(_report(accuracies, rhos, radius=3.5), f)

    points = ['aux_replicate', 'lineage', 'random_features']
    with mock.patch.object(frontier, '_run', fake_run), mock.patch('builtins.print'):
      with command_line(frontier, f'--runs_dir={runs}', f'--points={",".join(points)}',
                        '--data_dir=/data') as argv:
        frontier.main(argv)
    self.assertEqual([argv[0] for argv in calls],
                     ['experiments/fertility.py',  # a pretrained quine is only analysed
                      'trainers/train_aux.py', 'experiments/fertility.py',
                      'trainers/train_aux.py', 'experiments/fertility.py'])
    self.assertIn('--pretrained=aux_replicate', calls[0])
    self.assertIn(f'--export_dir={runs}/exports', calls[1])
    self.assertIn('--model_name=lineage', calls[1])
    self.assertIn(f'--dump={runs}/exports/lineage', calls[2])
    self.assertIn('--data_dir=/data', calls[2])

    with open(os.path.join(runs, 'frontier.jsonl')) as f:
      rows = [json.loads(line) for line in f]
    self.assertEqual([r['point'] for r in rows], points)
    self.assertEqual(rows[1]['accuracy'], {'0': 0.9, '1': 0.6, '5': 0.1, '300': 0.1})
    self.assertEqual(rows[1]['rho_at']['1'], 2.0)
    self.assertTrue(rows[2]['control'])
    self.assertEqual(rows[1]['commands'][0].split()[:2], ['python', 'trainers/train_aux.py'])
    with open(os.path.join(runs, 'frontier.md')) as f:
      table = f.read()
    self.assertIn('| lineage | 3.5 | 0.05 | 0/300 | 90.00% / 0.05 | 60.00% / 2 | 10.00% / 1e-12 '
                  '| 10.00% / 1e-12 |', table)
    with open(os.path.join(runs, 'frontier.png'), 'rb') as f:
      self.assertEqual(f.read(8), b'\x89PNG\r\n\x1a\n')

    calls.clear()  # a rerun reads the reports it has instead of running again
    with mock.patch.object(frontier, '_run', fake_run), mock.patch('builtins.print'):
      with command_line(frontier, f'--runs_dir={runs}', f'--points={",".join(points)}') as argv:
        frontier.main(argv)
    self.assertEqual(calls, [])

  def test_an_unknown_point_is_one_line_before_any_run(self):
    with mock.patch.object(frontier, '_run') as run:
      with self.assertRaises(SystemExit) as exited:
        with command_line(frontier, '--points=lineage,nope',
                          f'--runs_dir={self.create_tempdir().full_path}') as argv:
          frontier.main(argv)
    self.assertStartsWith(exited.exception.code,
                          "fertile_frontier.py: error: --points: unknown ['nope']")
    run.assert_not_called()


if __name__ == '__main__':
  absltest.main()
