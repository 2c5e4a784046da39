"""Tests of the train_aux.py binary: bad input fails fast with one line naming the problem.

The command line is parsed and main(argv) called in this process, as app.run would
(conftest.command_line); one test, marked slow, starts the binary as a user does (a subprocess).
"""

import os
import subprocess
import sys
import time

from absl import flags
from absl.testing import absltest
from absl.testing import parameterized
import pytest

from conftest import REPO_ROOT
from conftest import command_line
from conftest import exit_line
from conftest import import_binary

train_aux = import_binary('trainers.train_aux')


def _run(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'trainers', 'train_aux.py'),
                         *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                        timeout=300, check=False)


class TrainAuxCliTest(parameterized.TestCase):

  def _error_line(self, *args):
    """The one line `python trainers/train_aux.py ARGS` exits with, run in this process."""
    return exit_line(self, train_aux, *args)

  def test_help_lists_the_flags_a_user_types_with_the_default_presets_values(self):
    # Was: --help listed its own five flags, not --workdir, --preset or --seed.
    with command_line(train_aux):
      text = ' '.join(flags.FLAGS.module_help(train_aux.__name__).split())
    for line in ('--workdir:', '--preset:', '--seed:', '--task_weight:', '--num_steps:',
                 '--data_dir:', '--width:', '--export_dir:'):
      self.assertIn(line, text)
    self.assertNotIn('--solver_steps:', text)  # train_vanilla's
    self.assertIn('(short: 0.01)', text)  # --task_weight under the default preset
    self.assertIn('--preset: <paper|replicate|lineage|lineage_saturated|short|tiny>: Named '
                  'configuration (default: short)', text)
    self.assertIn('--method: <optimize|regenerate|alternate|replicate>:', text)

  def test_missing_mnist_with_nodownload_fails_fast_naming_where_it_looked(self):
    empty = self.create_tempdir().full_path
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    start = time.monotonic()
    # --intra_op_threads=0 keeps TensorFlow's thread count, which a process whose TensorFlow
    # already runs (this one) cannot change.
    self.assertRegex(
        self._error_line(f'--workdir={workdir}', f'--data_dir={empty}', '--nodownload',
                         '--intra_op_threads=0'),
        rf'^train_aux.py: error: MNIST is not prepared in {empty}/mnist/3.0.1')
    self.assertLess(time.monotonic() - start, 60)  # not a download
    self.assertFalse(os.path.exists(workdir))  # nothing written before the failure

  @pytest.mark.slow
  def test_missing_mnist_with_nodownload_fails_fast_as_a_process(self):
    empty = self.create_tempdir().full_path
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    start = time.monotonic()
    proc = _run(f'--workdir={workdir}', f'--data_dir={empty}', '--nodownload')
    self.assertNotEqual(proc.returncode, 0)
    self.assertNotIn('Traceback', proc.stderr)
    last = proc.stderr.strip().splitlines()[-1]
    self.assertRegex(last, rf'train_aux.py: error: MNIST is not prepared in {empty}/mnist/3.0.1')
    self.assertLess(time.monotonic() - start, 60)  # the interpreter start, not a download
    self.assertFalse(os.path.exists(workdir))  # nothing written before the failure

  @parameterized.parameters('--task_weight=nan', '--replication_weight=inf')
  def test_non_finite_weights_are_refused_naming_the_flag(self, flag):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    self.assertEqual(self._error_line(f'--workdir={workdir}', flag),
                     f'train_aux.py: error: {flag} must be a finite number')
    self.assertFalse(os.path.exists(workdir))

  def test_a_preset_that_cannot_take_mnist_is_refused_before_loading_it(self):
    empty = self.create_tempdir().full_path  # no MNIST here: the check must come first
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    self.assertEqual(
        self._error_line(f'--workdir={workdir}', '--preset=tiny', f'--data_dir={empty}',
                         '--nodownload'),
        'train_aux.py: error: --preset=tiny cannot run on MNIST: its quine takes '
        '16-pixel images in 3 classes, MNIST has 784 pixels and 10 classes')
    self.assertFalse(os.path.exists(workdir))

  @parameterized.parameters(
      (['--task_weight=-1'], '--task_weight=-1.0 must be >= 0'),
      # Was a MemoryError after config.json was written (num_steps), an unnamed line (seed).
      (['--preset=replicate', '--num_steps=100000000000000000000'],
       '--num_steps=100000000000000000000 must be below 2**31'),
      (['--preset=replicate', '--num_steps=2000000000'],
       '--method=replicate with these counts is 2,000,000 phases, more than a run may have '
       '(1,000,000): lower --num_epochs, --generations, --solver_steps or --num_steps, or raise '
       '--steps_per_loop'),
      (['--seed=99999999999999999999'], '--seed=99999999999999999999 must be in [0, 2147483)'),
  )
  def test_bad_flag_is_refused_before_any_work(self, args, message):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    self.assertEqual(self._error_line(f'--workdir={workdir}', *args),
                     f'train_aux.py: error: {message}')
    self.assertFalse(os.path.exists(workdir))


if __name__ == '__main__':
  absltest.main()
