"""Smoke test of the benchmarks, and of the variants they time against the library.

Benchmarks are not tests: `QuickRunTest` only checks that `benchmarks/run.py --quick` still executes
end to end (tiny sizes, random MNIST-shaped data, all implementations packed into two worker
processes) and that each result row carries the fields the README's table is built from; no timing
is asserted. `VariantsTest` checks that each prototype in benchmarks/variants.py computes what the
library computes (same minibatches, same updates up to float rounding, the projection's exact
bits), so that a speed-up is not work left out.
"""

import json
import os
import subprocess
import sys

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from conftest import REPO_ROOT
from conftest import tiny_aux_config
from conftest import tiny_train_config
from models import projection as projection_lib
from trainers import aux_lib
from trainers import data as data_lib
from trainers import train_lib

if REPO_ROOT not in sys.path:  # `benchmarks` is not an installed package
  sys.path.insert(0, REPO_ROOT)
from benchmarks import variants  # pylint: disable=g-import-not-at-top

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

  def test_variants_and_scaling_fit_are_reported(self):
    impls = {impl for _, impl in self.rows}
    for impl in ('variant_jit_block', 'variant_fused_loop', 'variant_jit_aux',
                 'variant_jit_predict', 'variant_jit_hash', 'variant_fast_pass_chunk4'):
      self.assertIn(impl, impls)
    fit = self.report['scaling']['quine_zoo']
    self.assertLen(fit['points'], 2)
    self.assertIn('full_pass_s_exponent', fit)
    self.assertIn('| vanilla_epoch |', self.stdout)


def _random_mnist(config, num_train=40, num_test=8):
  rng = np.random.default_rng(0)
  size, k = config.model.image_size, config.model.num_classes
  return data_lib.Mnist(rng.random((num_train, size), dtype=np.float32),
                        rng.integers(0, k, num_train).astype(np.int32),
                        rng.random((num_test, size), dtype=np.float32),
                        rng.integers(0, k, num_test).astype(np.int32))


class VariantsTest(tf.test.TestCase):
  """Each variant against the library, from the same initial weights, over the same phases."""

  def _assert_same_training(self, reference, variant, phases=(1, 2)):
    for phase in phases:
      expected = reference.run_epoch('optimize', phase)
      got = variant.run_epoch('optimize', phase)
      self.assertAllClose(expected['train_loss'], got['train_loss'], rtol=1e-5)
    for v_ref, v_var in zip(reference.model.quine_variables, variant.model.quine_variables):
      self.assertAllClose(v_ref, v_var, atol=1e-6, rtol=1e-5)
    self.assertEqual(int(reference.step), int(variant.step))
    self.assertEqual(int(reference.optimizer.iterations), int(variant.optimizer.iterations))

  def test_jit_block_trains_like_the_library(self):
    config = tiny_train_config(steps_per_loop=5)  # N = 36, B = 2: blocks of 5, 5, 5, 3 steps
    self._assert_same_training(train_lib.QuineTrainer(config),
                               variants.JitBlockTrainer(config))

  def test_fused_loop_trains_like_the_library(self):
    config = tiny_train_config(optimizer='adamax')
    self._assert_same_training(train_lib.QuineTrainer(config),
                               variants.FusedLoopTrainer(config))

  def test_jit_aux_draws_the_same_minibatches_as_the_dataset(self):
    config = tiny_train_config(model=tiny_aux_config(), batch_size=4)  # N = 96: 24 steps
    data = _random_mnist(config)
    self._assert_same_training(aux_lib.AuxTrainer(config, data),
                               variants.JitAuxTrainer(config, data))

  def test_jit_predict_predicts_like_the_library(self):
    config = tiny_train_config(eval_chunk_size=10)  # N = 36: chunks of 10, 10, 10, 6
    reference, variant = train_lib.QuineTrainer(config), variants.JitPredictTrainer(config)
    self.assertAllClose(reference.predict_all(), variant.predict_all(), atol=1e-7)

  def test_fast_pass_replicates_like_the_library(self):
    config = tiny_train_config(eval_chunk_size=8)
    reference, variant = train_lib.QuineTrainer(config), variants.FastPassTrainer(config)
    theta, predictions, metrics = variant.replication()
    ref_theta, ref_predictions, ref_metrics = reference.replication()
    self.assertAllEqual(ref_theta, theta)
    self.assertAllClose(ref_predictions, predictions, atol=1e-7)
    self.assertEqual(sorted(ref_metrics), sorted(metrics))
    for key, value in ref_metrics.items():
      self.assertAllClose(value, metrics[key], rtol=1e-6, msg=key)

  def test_jit_hash_reproduces_the_reference_bits(self):
    # A table of 0 entries at most: the projection is hashed on the fly.
    projection = projection_lib.Projection(7, 1000, 33, 0.05, max_table_entries=0)
    self.assertFalse(projection.materialised)
    rows = variants.jit_compiled_hash(projection)
    indices = np.arange(1000, dtype=np.int32)
    expected = projection_lib.numpy_projection(7, indices, 33, 0.05)
    self.assertAllEqual(rows(tf.constant(indices)).numpy().view(np.uint32),
                        expected.view(np.uint32))


if __name__ == '__main__':
  absltest.main()
