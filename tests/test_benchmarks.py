"""Smoke test of the benchmarks.

Benchmarks are not tests: `QuickRunTest` only checks that `benchmarks/run.py --quick` still executes
end to end (tiny sizes, random MNIST-shaped data, all implementations packed into two worker
processes) and that each result row carries the fields the README's table is built from; no timing
is asserted. The speed-ups the library adopted are tested with the library
(tests/test_train_lib.py, tests/test_aux_lib.py, tests/test_projection.py).
"""

import dataclasses
import json
import os
import subprocess
import sys

from absl.testing import absltest

from conftest import REPO_ROOT
from trainers import configs

if REPO_ROOT not in sys.path:  # `benchmarks` is not an installed package
  sys.path.insert(0, REPO_ROOT)
from benchmarks import cases  # pylint: disable=g-import-not-at-top

_FIELDS = ('case', 'impl', 'seconds', 'ratio_to_baseline', 'fraction_of_matmul_peak',
           'peak_rss_mb', 'throughput', 'gflops', 'repeats_s')


class QuickRunTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    output = os.path.join(absltest.get_default_test_tmpdir(), 'bench_quick.json')
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, 'benchmarks', 'run.py'), '--quick',
         f'--output={output}'],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode:
      raise AssertionError(f'run.py --quick failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n'
                           f'{proc.stderr[-3000:]}')
    cls.stdout = proc.stdout
    with open(output) as f:
      cls.report = json.load(f)
    cls.rows = {(r['case'], r['impl']): r for r in cls.report['results']}

  def test_every_row_has_the_documented_fields(self):
    self.assertTrue(self.report['quick'])
    for row in self.report['results']:
      for field in _FIELDS:
        self.assertIn(field, row, msg=f'{row["case"]}/{row["impl"]}')
      self.assertGreater(row['seconds'], 0.0)
      self.assertGreater(row['peak_rss_mb'], 0.0)

  def test_every_case_ran_against_the_baseline(self):
    for case in ('vanilla_epoch', 'vanilla_full_pass', 'aux_epoch'):
      self.assertEqual(self.rows[(case, 'torch_eager')]['ratio_to_baseline'], 1.0)
      self.assertGreater(self.rows[(case, 'quine_zoo')]['ratio_to_baseline'], 0.0)

  def test_full_passes_report_their_fraction_of_the_matmul_peak(self):
    passes = [r for r in self.report['results'] if 'full_pass' in r['case']]
    self.assertNotEmpty(passes)
    for row in passes:
      self.assertGreater(row['fraction_of_matmul_peak'], 0.0, msg=row['impl'])

  def test_library_before_and_after_and_scaling_fits_are_reported(self):
    impls = {impl for _, impl in self.rows}
    for impl in ('quine_zoo_graph', 'quine_zoo_chunk65536'):
      self.assertIn(impl, impls)
    for case in ('vanilla_epoch', 'vanilla_full_pass', 'aux_epoch'):
      self.assertIn((case, 'quine_zoo_graph'), self.rows)
    for impl in ('quine_zoo', 'quine_zoo_graph'):
      fit = self.report['scaling'][impl]
      self.assertLen(fit['points'], 2)
      self.assertIn('full_pass_s_exponent', fit)
      self.assertIn('epoch_s_exponent', fit)
    self.assertIn('| vanilla_epoch |', self.stdout)

  def test_quine_zoo_is_the_library_defaults_and_graph_the_previous_path(self):
    for (case, impl), row in self.rows.items():
      if impl == 'quine_zoo':
        self.assertTrue(row['jit_compile'], msg=case)
      elif impl == 'quine_zoo_graph':
        self.assertFalse(row['jit_compile'], msg=case)



class CasesTest(absltest.TestCase):

  def test_the_timed_layer_shapes_follow_the_library_default_chunk(self):
    # run.py times tf.matmul at each full pass's [chunk, d] x [d, d] shape; a stale chunk size
    # would leave the full passes' fraction_of_same_shape_peak empty.
    defaults = {f.name: f.default for f in dataclasses.fields(configs.TrainConfig)}
    self.assertEqual(cases.LIBRARY_EVAL_CHUNK, defaults['eval_chunk_size'])


if __name__ == '__main__':
  absltest.main()
