"""Smoke test of the benchmarks.

Benchmarks are not tests: `QuickRunTest` (marked slow) only checks that `benchmarks/run.py
--quick` still executes end to end (tiny sizes, random MNIST-shaped data, all implementations
packed into two worker processes) and that each result row carries the fields the README's table
is built from; no timing is asserted. Without timing anything, `PlanTest` checks what run.py plans
to time and how it fits the scaling, `HarnessTest` how a worker's failure comes back, and
`TorchBaselineTest` that the PyTorch baseline is the same quine as the library's. The speed-ups
the library adopted are tested with the library (tests/test_train_lib.py, tests/test_aux_lib.py,
tests/test_projection.py).
"""

import dataclasses
import json
import os
import subprocess
import sys
from unittest import mock

from absl.testing import absltest
import numpy as np
import pytest
import torch

from conftest import REPO_ROOT
from conftest import command_line
from conftest import import_binary
from conftest import numpy_predict_weights
from conftest import tiny_model_config
from trainers import configs

if REPO_ROOT not in sys.path:  # `benchmarks` is not an installed package
  sys.path.insert(0, REPO_ROOT)
from benchmarks import cases  # pylint: disable=g-import-not-at-top
from benchmarks import harness  # pylint: disable=g-import-not-at-top
from benchmarks import torch_baseline  # pylint: disable=g-import-not-at-top

run = import_binary('benchmarks.run')
slim_export = import_binary('benchmarks.slim_export')
evolve_generation = import_binary('benchmarks.evolve_generation')

_FIELDS = ('case', 'impl', 'seconds', 'ratio_to_baseline', 'fraction_of_matmul_peak',
           'peak_rss_mb', 'throughput', 'gflops', 'repeats_s')


@pytest.mark.slow  # run.py --quick as a process, its workers processes too
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


class PlanTest(absltest.TestCase):
  """What run.py measures and how it fits the scaling, without running a worker."""

  def test_quick_plan_packs_the_benches_into_one_worker_per_framework(self):
    groups = run.benches(run.Sizes(quick=True), threads=2, data_path=None)
    [(name, workers)] = run.plan(groups, quick=True, threads=2)
    self.assertEqual(name, 'quick')
    torch_worker, tf_worker = workers
    self.assertTrue(all('torch' in b.factory for b in torch_worker.benches))
    self.assertFalse(any('torch' in b.factory for b in tf_worker.benches))
    self.assertEqual([w.threads for w in workers], [2, 2])
    # Only the default-thread benches, and the matmul shapes once (the groups repeat them).
    planned = [b for w in workers for b in w.benches]
    self.assertFalse(any(b.impl.endswith('_1thread') for b in planned))
    self.assertLen([b for b in tf_worker.benches if b.factory.endswith('make_tf_matmul')], 1)
    every_case = {c for _, items in groups for t, b in items if t == 2 for c in b.cases}
    self.assertEqual({c for b in planned for c in b.cases}, every_case)
    # The full run: one worker per bench, thread counts as the groups give them.
    full = run.plan(groups, quick=False, threads=2)
    self.assertEqual([len(w) for _, w in full], [len(items) for _, items in groups])

  def test_scaling_fits_the_exponent_of_each_implementation(self):
    rows = []
    for width in (8, 16, 32):
      n = 2 * width * width + width
      for case, seconds in ((f'full_pass_w{width}', 1e-6 * n), (f'train_w{width}', 1e-9 * n**2)):
        rows.append(dict(impl='quine_zoo', group=f'scale_w{width}', case=case, num_weights=n,
                         width=width, seconds=seconds, cpu_seconds=2 * seconds,
                         peak_rss_mb=100.0))
    fit = run.scaling(rows, ['quine_zoo', 'absent'])
    self.assertEqual(list(fit), ['quine_zoo'])  # fewer than two widths: no fit
    self.assertLen(fit['quine_zoo']['points'], 3)
    self.assertAlmostEqual(fit['quine_zoo']['full_pass_s_exponent'], 1.0)
    self.assertAlmostEqual(fit['quine_zoo']['epoch_s_exponent'], 2.0)
    self.assertAlmostEqual(fit['quine_zoo']['peak_rss_mb_exponent'], 0.0)


class HarnessTest(absltest.TestCase):

  def test_a_failure_in_the_fresh_process_comes_back_with_its_traceback(self):
    with self.assertRaisesRegex(harness.WorkerError,
                                r"(?s)Traceback.*ValueError: invalid literal .*'x'"):
      harness.run_in_process(int, 'x')


class TorchBaselineTest(absltest.TestCase):

  def test_baseline_predicts_what_the_librarys_quine_would_from_the_same_weights(self):
    config = tiny_model_config()  # width 4: N = 2 * 4 * 4 + 4 = 36
    model = torch_baseline.VanillaQuine(width=4, projection_seed=config.projection_seed,
                                        projection_std=config.projection_std)
    self.assertEqual(model.num_weights, 36)
    # A Keras kernel [in, out] is a torch Linear's weight transposed.
    kernels = [p.detach().numpy().T.astype(np.float64) for p in model.quine_parameters()]
    np.testing.assert_allclose(model.flatten().detach().numpy(),
                               np.concatenate([k.reshape(-1) for k in kernels]))
    coordinates = np.arange(36)
    predictions, metrics = torch_baseline.replication(model)
    np.testing.assert_allclose(predictions.numpy(),
                               numpy_predict_weights(config, kernels, coordinates),
                               rtol=1e-5, atol=1e-6)
    theta = np.concatenate([k.reshape(-1) for k in kernels])
    self.assertAlmostEqual(metrics['rho'],
                           np.sum((predictions.numpy() - theta)**2) / np.sum(theta**2), places=6)

  def test_an_epoch_visits_every_coordinate_in_minibatches(self):
    model = torch_baseline.VanillaQuine(width=4)
    optimizer = torch.optim.Adamax(model.parameters(), lr=0.002)
    before = model.flatten().detach().clone()
    loss = torch_baseline.train_epoch(model, optimizer, batch_size=10)
    self.assertGreater(loss, 0.0)
    self.assertTrue(np.isfinite(loss))
    self.assertFalse(torch.equal(model.flatten(), before))  # 4 steps of Adamax moved it



class SlimExportTest(absltest.TestCase):

  def test_each_layout_exports_and_times_both_graphs_at_three_batch_sizes(self):
    from models import build_quine  # pylint: disable=g-import-not-at-top
    model = build_quine(tiny_model_config())
    base = self.create_tempdir().full_path
    rows = []
    for layout in slim_export.LAYOUTS:
      rows += slim_export.measure(layout, model, base, repeats=1, threads=1)
    self.assertEqual([(r['layout'], r['batch']) for r in rows],
                     [(layout, b) for layout in slim_export.LAYOUTS for b in (1, 100, 36)])
    for row in rows:
      self.assertGreater(row['saved_model.pb'], 0)
      self.assertGreater(row['weights.safetensors'], 0)
      self.assertGreater(row['saved_model_seconds'], 0)
      self.assertGreater(row['onnxruntime_seconds'], 0)


class EvolveGenerationTest(absltest.TestCase):

  def test_a_generation_of_tiny_quines_is_timed_against_the_matmul(self):
    output = os.path.join(self.create_tempdir().full_path, 'generation.json')
    with command_line(evolve_generation, '--preset=tiny', '--population=4', '--repeats=1',
                      '--num_validation=20', f'--output={output}') as argv, \
         mock.patch('builtins.print'):
      evolve_generation.main(argv)
    with open(output) as f:
      result = json.load(f)
    self.assertEqual((result['population'], result['num_weights']), (4, 160))
    self.assertGreater(result['seconds_per_generation'], 0)
    self.assertGreater(result['fraction_of_matmul_rate'], 0)


if __name__ == '__main__':
  absltest.main()
