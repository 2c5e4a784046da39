"""Tests of experiments/fertility_survey.py (the regeneration experiment), in-process."""

import json
import os

from absl.testing import absltest

from conftest import command_line
from conftest import import_binary

fertility_survey = import_binary('experiments.fertility_survey')


def _strict(text):
  def refuse(token):
    raise ValueError(f'not JSON: {token}')
  return json.loads(text, parse_constant=refuse)


class RegenerationExperimentTest(absltest.TestCase):

  def test_a_tiny_gain_survey_writes_strict_rows_and_a_plot_then_replots_them(self):
    out = self.create_tempdir().full_path
    rows_path, plot = os.path.join(out, 'rows.jsonl'), os.path.join(out, 'gains.png')
    # Width 8, gain 6: the tiny contracting quine regeneration reaches (tests/test_stability.py).
    with command_line(fertility_survey, '--experiment=regeneration', '--widths=8', '--seeds=0',
                      '--activations=relu/tanh', '--gains=6', '--generations=60',
                      f'--output={rows_path}', f'--plot={plot}') as argv:
      fertility_survey.main(argv)
    with open(rows_path) as f:
      (row,) = [_strict(line) for line in f]
    self.assertEqual((row['width'], row['gain'], row['generations']), (8, 6.0, 60))
    self.assertLess(row['spectral_radius'], 1.0)
    self.assertLess(row['rho'], 1e-6)
    self.assertTrue(os.path.exists(plot))
    os.remove(plot)
    with command_line(fertility_survey, '--experiment=regeneration', f'--replot={rows_path}',
                      f'--plot={plot}') as argv:
      fertility_survey.main(argv)
    self.assertTrue(os.path.exists(plot))

  def test_a_bad_gain_is_one_line_before_any_work(self):
    with self.assertRaises(SystemExit) as exited:
      with command_line(fertility_survey, '--experiment=regeneration', '--gains=abc') as argv:
        fertility_survey.main(argv)
    self.assertEqual(exited.exception.code,
                     'fertility_survey.py: error: --gains=abc must be a list of floats')


if __name__ == '__main__':
  absltest.main()
