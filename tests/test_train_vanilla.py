"""Tests of the train_vanilla.py binary.

Its command line is parsed and its main(argv) called in this process, as app.run would
(conftest.command_line): a bad flag is refused with one error line before anything is written.
The runs are as a user makes them, a subprocess each (importing TensorFlow takes seconds, training
longer), and marked slow: one tiny run that writes every artifact, and the stable presets'.
"""

import glob
import json
import os
import subprocess
import sys
from unittest import mock

from absl import flags
from absl.testing import parameterized
import numpy as np
import pytest
import safetensors.numpy
import tensorflow as tf

from conftest import REPO_ROOT
from conftest import command_line
from conftest import exit_line
from conftest import import_binary
from models import zoo
from trainers import train_lib

train_vanilla = import_binary('trainers.train_vanilla')

_BINARY = os.path.join(REPO_ROOT, 'trainers', 'train_vanilla.py')
_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _run_binary(*args):
  env = dict(os.environ)
  # Import this checkout's packages, whatever the virtualenv's editable install points at.
  env['PYTHONPATH'] = os.pathsep.join(p for p in (REPO_ROOT, env.get('PYTHONPATH')) if p)
  return subprocess.run([sys.executable, _BINARY, *args], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=300, check=False)


def _main(*args):
  """`python trainers/train_vanilla.py ARGS` in this process; absl's refusals raise flags.Error."""
  with command_line(train_vanilla, *args) as argv:
    train_vanilla.main(argv)


def _lines(text):
  return [line for line in text.splitlines() if line.strip()]


class TrainVanillaTest(tf.test.TestCase, parameterized.TestCase):

  def _error_line(self, *args):
    """The one line the binary exits with: Python prints it on stderr and exits with status 1."""
    line = exit_line(self, train_vanilla, *args)
    self.assertStartsWith(line, 'train_vanilla.py: error: ')
    return line

  @parameterized.named_parameters(
      ('batch_size_above_n', ['--preset=tiny', '--batch_size=100000'],
       r'--batch_size=100000 exceeds the number of weights N=36'),
      ('zero_width', ['--preset=tiny', '--width=0'], r'error: --width=0 must be positive'),
      ('zero_gain', ['--preset=stable', '--gain=0'],
       r'error: --gain=0.0 must be a positive finite number'),
      ('nan_learning_rate', ['--preset=tiny', '--learning_rate=nan'],
       r'--learning_rate=nan must be a finite number'),
      ('infinite_learning_rate', ['--preset=tiny', '--learning_rate=inf'],
       r'--learning_rate=inf must be a finite number'),
      ('nan_noise', ['--preset=tiny', '--method=hill_climb', '--noise_stddev=nan'],
       r'--noise_stddev=nan must be a finite number'),
      ('bad_model_name', ['--preset=tiny', '--export_dir=/tmp', '--model_name=../up'],
       r'--model_name=../up: model name'),
      ('stray_argument', ['--preset=tiny', 'extra'], r'unexpected arguments'),
      ('init_from_unknown', ['--init_from=nope'],
       r"--init_from=nope: no pretrained quine named 'nope'; the zoo has paper_adamax"),
      ('init_from_other_kind', ['--init_from=aux_paper'],
       r'--init_from=aux_paper is an auxiliary quine; this binary trains vanilla ones'),
      ('init_from_other_width', ['--init_from=exact_w5', '--width=7'],
       r'--width=7 contradicts --init_from=exact_w5, whose width is 5'),
      # Was: trained at width 142 under --preset=tiny.
      ('init_from_with_another_preset', ['--init_from=stable_w142', '--preset=tiny'],
       r'--preset=tiny describes another quine than --init_from=stable_w142 \(its architecture '
       r'comes from the pretrained quine\): drop --preset or use --preset=stable$'),
      # Was a MemoryError after config.json was written, which then refused the fixed command.
      ('huge_num_epochs', ['--preset=tiny', '--num_epochs=100000000000'],
       r'--method=optimize with these counts is 100,000,000,000 phases, more than a run may '
       r'have \(1,000,000\)'),
      ('huge_generations', ['--preset=tiny', '--method=alternate', '--generations=10000000'],
       r'--method=alternate with these counts is 20,000,000 phases'),
      ('huge_solver_steps', ['--preset=tiny', '--method=fixed_point', '--solver_steps=2000000'],
       r'is 2,000,000 phases'),
      ('huge_seed', ['--preset=tiny', '--seed=99999999999999999999'],
       r'--seed=99999999999999999999 must be in \[0, 2147483\)'),
      ('negative_seed', ['--preset=tiny', '--seed=-1'], r'--seed=-1 must be in \[0, 2147483\)'),
      ('huge_steps_per_loop', ['--preset=tiny', '--steps_per_loop=99999999999'],
       r'--steps_per_loop=99999999999 must be below 2\*\*31'),
  )
  def test_bad_config_exits_with_one_error_line(self, args, message):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    self.assertRegex(self._error_line(f'--workdir={workdir}', *args), message)
    self.assertFalse(os.path.exists(workdir))  # refused before touching the file system

  def test_help_lists_the_flags_a_user_types_with_the_default_presets_values(self):
    # Was: --help listed no flag at all (they were the key flags of trainers/cli.py).
    with command_line(train_vanilla):
      text = ' '.join(flags.FLAGS.module_help(train_vanilla.__name__).split())
    for line in ('--workdir:', '--preset:', '--method:', '--num_epochs:', '--width:', '--seed:',
                 '--export_dir:', '--solver_steps:'):
      self.assertIn(line, text)
    self.assertNotIn('--task_weight:', text)  # train_aux's
    self.assertIn("(paper: 'adamax')", text)  # --optimizer under the default preset
    self.assertIn('(paper: 30)', text)  # --num_epochs
    # Its own presets only (--preset was shared with train_aux's).
    self.assertIn('--preset: <paper|paper_alternate|tiny|small|stable|stable_w4>: Named '
                  'configuration (default: paper).', text)
    self.assertIn('--method: <optimize|hill_climb|regenerate|alternate|fixed_point>:', text)

  def test_ctrl_c_during_training_says_how_to_resume(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    with mock.patch.object(train_lib, 'run', side_effect=KeyboardInterrupt):
      # --intra_op_threads=0: this process's TensorFlow already runs and keeps its thread count.
      line = self._error_line(f'--workdir={workdir}', '--preset=tiny', '--intra_op_threads=0')
    self.assertEqual(line, 'train_vanilla.py: error: interrupted; rerun the same command to '
                     'resume from the last checkpoint')

  def test_a_damaged_pretrained_weights_file_is_one_line(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    damaged = zoo.PretrainedError('models/pretrained/exact_w5/weights.safetensors: 100 bytes, '
                                  'sha256 0123...; the catalogue says 516 bytes')
    with mock.patch.object(zoo, 'load_theta', side_effect=damaged):
      line = self._error_line(f'--workdir={workdir}', '--init_from=exact_w5')
    self.assertEqual(line, f'train_vanilla.py: error: --init_from=exact_w5: {damaged}')
    self.assertFalse(os.path.exists(workdir))

  def test_export_dir_on_a_file_system_that_refuses_writes_is_refused_before_training(self):
    # /sys passes os.access for root; it was refused only after training.
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    self.assertEqual(self._error_line(f'--workdir={workdir}', '--preset=tiny',
                                      '--export_dir=/sys/x'),
                     'train_vanilla.py: error: --export_dir=/sys/x: /sys is not writable '
                     '(Operation not permitted)')
    self.assertFalse(os.path.exists(workdir))

  def test_export_dir_that_cannot_be_written_is_refused_before_training(self):
    root = self.create_tempdir().full_path
    with open(os.path.join(root, 'file'), 'w') as f:
      f.write('not a folder')
    workdir = os.path.join(root, 'run')
    self.assertEqual(
        self._error_line(f'--workdir={workdir}', '--preset=tiny',
                         f'--export_dir={root}/file/exports'),
        f'train_vanilla.py: error: --export_dir={root}/file/exports: {root}/file '
        'is not a directory')
    self.assertFalse(os.path.exists(workdir))

  @parameterized.named_parameters(
      ('tpu_strategy_without_a_tpu', ['--strategy=tpu'], r'--strategy=tpu needs --tpu=NAME'),
      ('enum_value', ['--optimizer=nope'], r'--optimizer=nope: value should be one of'),
      ('negative_thread_count', ['--intra_op_threads=-1'], r'--intra_op_threads must be >= 0'),
  )
  def test_bad_flag_value_is_rejected_by_absl(self, args, message):
    # app.run prints absl's message (no traceback) and exits 1.
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    with self.assertRaisesRegex(flags.Error, message):
      _main(f'--workdir={workdir}', '--preset=tiny', *args)
    self.assertFalse(os.path.exists(workdir))

  def test_unknown_preset_is_rejected(self):
    # Whether --preset is an enum (absl rejects it) or checked by the config, the user is told.
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    with self.assertRaisesRegex((flags.Error, SystemExit), r"--preset='?nope"):
      _main(f'--workdir={workdir}', '--preset=nope')
    self.assertFalse(os.path.exists(workdir))

  def test_missing_workdir_is_rejected(self):
    # By absl (a required flag) or by the binary (one error line), naming the flag.
    with self.assertRaisesRegex((flags.Error, SystemExit), r'--workdir'):
      _main('--preset=tiny')

  @pytest.mark.slow
  def test_tiny_run_writes_every_artifact_and_refuses_another_config(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    result = _run_binary(f'--workdir={workdir}', '--preset=tiny', '--num_epochs=1',
                         '--intra_op_threads=1', '--nojit_compile')
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn('finished', result.stdout)

    with open(os.path.join(workdir, 'config.json')) as f:
      config = json.load(f)
    self.assertEqual(config['num_weights'], 36)  # 2 * 4 * 4 + 4
    self.assertEqual(config['num_epochs'], 1)
    self.assertFalse(config['jit_compile'])
    self.assertEqual(config['model']['width'], 4)

    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      lines = [json.loads(line) for line in f]
    self.assertEqual([(m['phase'], m['epoch']) for m in lines], [(0, 0), (1, 1)])

    pngs = glob.glob(os.path.join(workdir, 'plots', '*.png'))
    self.assertNotEmpty(pngs)
    for png in pngs:
      with open(png, 'rb') as f:
        self.assertEqual(f.read(8), _PNG_MAGIC)
    self.assertIsNotNone(tf.train.latest_checkpoint(os.path.join(workdir, 'checkpoints')))
    self.assertNotEmpty(glob.glob(os.path.join(workdir, 'tensorboard', 'events.out.tfevents.*')))

    # Rerunning the finished command with --export_dir exports once, then names that version.
    exports = os.path.join(self.create_tempdir().full_path, 'exports')
    for want in ('exported: ', 'already exported: '):
      again = _run_binary(f'--workdir={workdir}', '--preset=tiny', '--num_epochs=1',
                          '--intra_op_threads=1', '--nojit_compile', f'--export_dir={exports}')
      self.assertEqual(again.returncode, 0, again.stderr)
      self.assertIn(f'{want}{exports}/vanilla/1', again.stdout)
    self.assertEqual(os.listdir(os.path.join(exports, 'vanilla')), ['1'])

    refused = _run_binary(f'--workdir={workdir}', '--preset=tiny', '--num_epochs=1',
                          '--nojit_compile', '--width=3')
    self.assertNotEqual(refused.returncode, 0)
    self.assertNotIn('Traceback', refused.stderr)
    self.assertRegex(_lines(refused.stderr)[-1],
                     r'^train_vanilla.py: error: .*different configuration')
    with open(os.path.join(workdir, 'config.json')) as f:
      self.assertEqual(json.load(f), config)

  def _assert_fertile(self, workdir, max_rho=1e-12):
    """The run's stability report: a contracting quine, 300 fertile generations, 10/10 returns,
    and weights that neither shrank (RMS above half the initial) nor sit at tanh's bounds."""
    with open(os.path.join(workdir, 'stability.json')) as f:
      report = json.load(f)
    self.assertLess(report['spectral_radius'], 1.0)
    self.assertLess(report['rho'], max_rho)
    self.assertEqual(report['fertile_generations'], 300)
    self.assertEqual(report['noise']['returned'], 10)
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      records = [json.loads(line) for line in f]
    self.assertGreater(records[-1]['weight_rms'], records[0]['weight_rms'] / 2)
    return report

  @pytest.mark.slow
  def test_stable_preset_trains_a_fertile_quine_of_the_papers_size(self):
    # The target: N >= 20,000, found by the paper's own regeneration from the initial
    # weights, a contracting fixed point whose exported descendants are quines in every framework.
    base = self.create_tempdir().full_path
    workdir, exports = os.path.join(base, 'run'), os.path.join(base, 'exports')
    result = _run_binary(f'--workdir={workdir}', '--preset=stable', f'--export_dir={exports}',
                         '--model_name=stable')
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn('(contracting)', result.stdout)
    self.assertIn('300/300 fertile generations, 10/10 returned', result.stdout)
    report = self._assert_fertile(workdir)
    self.assertLess(report['frobenius_radius'], 0.5)  # the bulk; the outliers are the radius
    with open(os.path.join(exports, 'stable', '1', 'manifest.json')) as f:
      config = json.load(f)['model']['config']
    self.assertEqual((config['kernel_norm'], config['activation']), ('standardise', 'relu'))
    theta = np.concatenate([v.reshape(-1) for v in safetensors.numpy.load_file(
        os.path.join(exports, 'stable', '1', 'weights.safetensors')).values()])
    self.assertLen(theta, 20306)  # 142 * 142 hidden + 142 head
    self.assertLessEqual(np.mean(np.abs(theta) >= 0.99), 0.1)  # not saturated at tanh's bounds
    self.assertGreater(np.std(theta), 0.1)  # spread over the range, not one value
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    replicated = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, 'experiments', 'replicate.py'),
         f'--dump={exports}/stable', '--generations=3', '--nostability',
         f'--output_dir={base}/lineage'],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    self.assertEqual(replicated.returncode, 0, replicated.stdout + replicated.stderr)
    with open(os.path.join(base, 'lineage', 'report.json')) as f:
      lineage = json.load(f)['lineage']
    self.assertLen(lineage, 4)
    self.assertTrue(all(row['agrees'] and row['rho'] < 1e-12 for row in lineage), lineage)

  @pytest.mark.slow
  def test_regeneration_finds_a_contracting_quine_at_width_8(self):
    # The tiny-size test of the method: the stable preset's architecture at width 8
    # (N = 72; the gain rescaled to the width) is reached from the initial weights.
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    result = _run_binary(f'--workdir={workdir}', '--preset=stable', '--width=8', '--gain=6')
    self.assertEqual(result.returncode, 0, result.stderr)
    self._assert_fertile(workdir)

  @pytest.mark.slow
  def test_stable_w4_preset_solves_a_contracting_quine(self):
    # The zoo's fixed-point solver finds a contracting fixed point at width 4.
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    result = _run_binary(f'--workdir={workdir}', '--preset=stable_w4')
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn('(contracting)', result.stdout)
    self._assert_fertile(workdir)


if __name__ == '__main__':
  tf.test.main()
