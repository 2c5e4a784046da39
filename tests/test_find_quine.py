"""Tests of experiments/find_quine.py: the fixed-point solver from the command line, in-process."""

import json
import os

from absl.testing import absltest
import numpy as np

from conftest import command_line
from conftest import import_binary

find_quine = import_binary('experiments.find_quine')


class FindQuineTest(absltest.TestCase):

  def test_a_tiny_run_writes_theta_its_config_and_a_plot_and_prints_a_row(self):
    out = self.create_tempdir().full_path
    with command_line(find_quine, '--width=3', '--seeds=0', '--max_steps=3', '--log_every=0',
                      f'--out_dir={out}', f'--img_dir={out}') as argv:
      with absltest.mock.patch('builtins.print') as printed:
        find_quine.main(argv)
    rows = [json.loads(call.args[0]) for call in printed.call_args_list
            if call.args and str(call.args[0]).startswith('{"width"')]
    self.assertLen(rows, 1)
    row = rows[0]
    self.assertEqual((row['width'], row['N'], row['seed']), (3, 2 * 9 + 3, 0))
    self.assertLen(row['lineage_rho'], 5)  # the quine and four descendants
    theta = np.load(os.path.join(out, 'theta_fixed_point_w3_s0.npy'))
    self.assertEqual(theta.shape, (21,))
    with open(os.path.join(out, 'config_fixed_point_w3_s0.json')) as f:
      self.assertEqual(json.load(f)['width'], 3)
    self.assertTrue(os.path.exists(os.path.join(out, 'fixed_point_w3_s0.png')))


if __name__ == '__main__':
  absltest.main()
