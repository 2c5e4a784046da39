"""Tests of experiments/reproduce.py: the reproduction table from its runs' metrics, in-process.

The runs themselves are the trainers' (paper size, minutes each): here `_run` is replaced by one
that writes a workdir's metrics.jsonl, so the test checks which runs the table asks for and how it
reads and prints them.
"""

import json
import os
from unittest import mock

from absl.testing import absltest

from conftest import command_line
from conftest import import_binary

reproduce = import_binary('experiments.reproduce')


class ReproduceTest(absltest.TestCase):

  def test_the_vanilla_table_has_a_row_per_experiment_and_a_column_per_seed(self):
    runs = self.create_tempdir().full_path
    calls = []

    def fake_run(binary, flag_list, workdir):
      calls.append((binary, flag_list))
      os.makedirs(workdir)
      records = [{'phase': p, 'l_sr': 90.0 - p, 'rho': 1.0, 'weight_rms': 0.05 / (p + 1)}
                 for p in range(3)]
      with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
        f.writelines(json.dumps(r) + '\n' for r in records)

    with mock.patch.object(reproduce, '_run', fake_run), \
         mock.patch('builtins.print') as printed:
      with command_line(reproduce, '--part=vanilla', '--seeds=0,1', f'--runs_dir={runs}') as argv:
        reproduce.main(argv)
    self.assertLen(calls, 2 * len(reproduce.VANILLA_ROWS))
    self.assertIn(('train_vanilla', ['--method=regenerate', '--generations=10', '--seed=1']), calls)
    lines = '\n'.join(str(c.args[0]) for c in printed.call_args_list if c.args).splitlines()
    table = [line for line in lines if line.startswith('| ')]
    self.assertLen(table, 1 + len(reproduce.VANILLA_ROWS))  # the header, then a row each
    self.assertIn('| seed 0: L_SR / rho / RMS | seed 1: L_SR / rho / RMS |', table[0])
    self.assertIn('| 30 epochs Adamax | lowest, ~33 | 88 / 1 / 0.0167 | 88 / 1 / 0.0167 |',
                  '\n'.join(table))


if __name__ == '__main__':
  absltest.main()
