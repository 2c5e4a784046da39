"""Tests of the replication report (export.replication, experiments.replication_report) and the
binaries export/export_model.py, experiments/replicate.py and experiments/fertility.py.

The binaries' refusals run in this process (conftest.command_line); their runs, a process each as
a user starts them, are marked slow.
"""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from unittest import mock

from absl import flags
from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT
from conftest import command_line
from conftest import import_binary
from experiments import replication_report as report
from export import dump as dump_lib
from export import frameworks
from export import replication
from export import exporter
from export import testing
from models import stability
from models import zoo

_BINARIES = {'export_model.py': import_binary('export.export_model'),
             'replicate.py': import_binary('experiments.replicate'),
             'fertility.py': import_binary('experiments.fertility')}


def _run_in_process(script, *args):
  """(exit status, stderr) of `python <script> ARGS`, run in this process as app.run would.

  A SystemExit's message goes to stderr with status 1, as Python does; any other exception (what
  would be a traceback) propagates.
  """
  binary = _BINARIES[script]
  stderr = io.StringIO()
  status = 0
  with contextlib.redirect_stderr(stderr):
    try:
      with command_line(binary, *args) as argv:
        binary.main(argv)
    except SystemExit as e:
      if e.code is None or isinstance(e.code, int):
        status = e.code or 0
      else:
        print(e.code, file=sys.stderr)
        status = 1
  return status, stderr.getvalue()


class MetricsTest(tf.test.TestCase):

  def test_metrics_match_the_trainers(self):
    from trainers import metrics as trainer_metrics  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(0)
    theta = rng.normal(size=50).astype(np.float32)
    predictions = (theta * 0.9 + rng.normal(size=50) * 0.01).astype(np.float32)
    ours = replication.metrics(theta, predictions)
    theirs = trainer_metrics.replication_metrics(theta, predictions)
    for key in ('l_sr', 'rho', 'r2', 'weight_rms', 'prediction_rms'):
      self.assertAllClose(ours[key], float(theirs[key]), rtol=1e-12)

  def test_copy_and_zero_predictions(self):
    theta = np.array([1.0, -2.0, 3.0], np.float32)
    self.assertEqual(replication.metrics(theta, theta)['rho'], 0.0)
    self.assertEqual(replication.metrics(theta, np.zeros(3))['rho'], 1.0)
    self.assertEqual(replication.metrics(theta, np.zeros(3))['l_sr'], 14.0)

  def test_constant_weights_score_r2_like_the_trainers(self):
    # Was 1.0 for any prediction of constant weights (trainers.metrics gives 0 unless exact).
    from trainers import metrics as trainer_metrics  # pylint: disable=g-import-not-at-top
    theta = np.full(4, 0.5, np.float32)
    for predictions in (theta, np.zeros(4, np.float32)):
      self.assertEqual(replication.metrics(theta, predictions)['r2'],
                       float(trainer_metrics.replication_metrics(theta, predictions)['r2']))
    self.assertEqual(replication.metrics(theta, np.zeros(4))['r2'], 0.0)

  def test_table_has_a_header_and_a_row_each(self):
    text = replication.format_table(
        [{'framework': 'numpy', 'l_sr': 0.5, 'agrees': True},
         {'framework': 'torch', 'l_sr': 1e-9, 'agrees': False}], ('framework', 'l_sr', 'agrees'))
    lines = text.splitlines()
    self.assertLen(lines, 4)
    self.assertIn('L_SR', lines[0])
    self.assertIn('1e-09', lines[3])
    self.assertIn('NO', lines[3])


class MnistTest(tf.test.TestCase):

  def test_missing_data_fails_fast_and_clearly(self):
    with self.assertRaisesRegex(replication.DataError, 'mnist/3.0.1.*--data_dir'):
      replication.load_mnist_test(self.create_tempdir().full_path)

  def test_reads_prepared_mnist_when_present(self):
    data_dir = os.environ.get('TFDS_DATA_DIR') or os.path.join(REPO_ROOT, '..', 'shared', 'tfds')
    if not os.path.exists(os.path.join(data_dir, 'mnist', '3.0.1')):
      self.skipTest(f'no prepared MNIST in {data_dir}')
    images, labels = replication.load_mnist_test(data_dir, limit=5)
    self.assertEqual(images.shape, (5, 784))
    self.assertEqual(images.dtype, np.float32)
    self.assertBetween(float(images.max()), 0.5, 1.0)
    self.assertEqual(labels.shape, (5,))


class ReportTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    for kind, config in testing.CONFIGS.items():
      testing.make_workdir(os.path.join(cls.root, kind), config, scale=2.0)
      exporter.export_workdir(os.path.join(cls.root, kind), os.path.join(cls.root, 'x'), kind)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def test_auxiliary_report_agrees_and_writes_its_files(self):
    images, labels = testing.fake_images(8, 16, 3)
    out = self.create_tempdir().full_path
    logged = []
    result = report.run(os.path.join(self.root, 'x', 'auxiliary'), frameworks.FRAMEWORKS, 2,
                        'torch', out, images, labels, log=logged.append)
    self.assertTrue(result['agrees'], result)
    self.assertEqual([r['framework'] for r in result['replication']],
                     ['tensorflow[saved_model]', 'onnxruntime', 'torch', 'numpy'])
    accuracies = {r['test_accuracy'] for r in result['replication']}
    self.assertLen(accuracies, 1)  # every framework classifies the same
    self.assertLen(result['lineage'], 3)
    self.assertContainsSubset(['report.txt', 'report.json', 'lineage.png', 'generation_1',
                               'generation_2'], os.listdir(out))
    with open(os.path.join(out, 'report.json')) as f:
      self.assertEqual(json.load(f)['lineage'][2]['generation'], 2)
    self.assertIn('max|dpred| vs TF', logged[1])
    self.assertIn('test acc', logged[2])

  def test_default_output_dir_is_beside_the_version(self):
    version_dir = os.path.join(self.root, 'x', 'vanilla', '1')
    self.assertEqual(report.default_output_dir(version_dir), version_dir + '.replication')

  def test_a_second_report_goes_beside_the_first(self):
    # Was: the second run wrote over the first report.
    out = os.path.join(self.create_tempdir().full_path, 'r')
    first = report.run(os.path.join(self.root, 'x', 'vanilla'), ['numpy'], 0, 'numpy', out,
                       log=lambda *a: None)
    with open(os.path.join(out, 'report.json')) as f:
      before = f.read()
    report.run(os.path.join(self.root, 'x', 'vanilla'), ['numpy'], 1, 'numpy', out,
               log=lambda *a: None)
    with open(os.path.join(out, 'report.json')) as f:
      self.assertEqual(f.read(), before)
    with open(os.path.join(out + '-2', 'report.json')) as f:
      self.assertEqual(json.load(f)['generations'], 1)
    self.assertEqual(first['generations'], 0)

  def test_a_diverging_lineage_is_reported_as_such_not_as_a_disagreement(self):
    # Was: children with weights ~1e10 and then inf ended in SOME FRAMEWORKS DISAGREE, exit 1.
    root = self.create_tempdir().full_path
    testing.make_workdir(os.path.join(root, 'wd'), testing.VANILLA, scale=300.0)
    exporter.export_workdir(os.path.join(root, 'wd'), os.path.join(root, 'x'), 'big')
    logged = []
    result = report.run(os.path.join(root, 'x', 'big'), frameworks.FRAMEWORKS, 8, 'torch',
                        os.path.join(root, 'r'), log=logged.append)
    self.assertTrue(result['agrees'], result['lineage'])
    self.assertIsNotNone(result['lineage_diverged_after'])
    self.assertLess(len(result['lineage']), 9)
    self.assertTrue(result['lineage'][-1]['diverged'])
    self.assertIn('LINEAGE DIVERGED', logged[2])

  def test_vanilla_report_measures_stability(self):
    from models import stability  # pylint: disable=g-import-not-at-top
    out = self.create_tempdir().full_path
    logged = []
    result = report.run(os.path.join(self.root, 'x', 'vanilla'), ['numpy', 'torch'], 1, 'numpy',
                        out, log=logged.append, stability_config=stability.StabilityConfig(
                            generations=5, num_perturbations=2, noise_generations=3))
    self.assertIn('spectral_radius', result['stability'])
    self.assertLen(result['stability']['outer_eigenvalues'], 6)
    self.assertIn('spectral radius', logged[3])
    self.assertTrue(os.path.exists(os.path.join(out, 'spectrum.png')))


class BinariesTest(tf.test.TestCase):
  """export_model.py, replicate.py and fertility.py run as a user runs them: a process each."""

  def _run(self, script, *args):
    wing = 'export' if script == 'export_model.py' else 'experiments'
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, wing, script), *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)

  @pytest.mark.slow
  def test_export_then_replicate_from_the_command_line(self):
    root = self.create_tempdir().full_path
    testing.make_workdir(os.path.join(root, 'wd'), testing.VANILLA, scale=2.0)
    exported = self._run('export_model.py', f'--workdir={root}/wd', f'--export_dir={root}/x')
    self.assertEqual(exported.returncode, 0, exported.stderr)
    self.assertIn(f'Exported {root}/x/vanilla/1', exported.stdout)
    replicated = self._run('replicate.py', f'--dump={root}/x/vanilla', '--generations=1')
    self.assertEqual(replicated.returncode, 0, replicated.stderr)
    for name in ('tensorflow[saved_model]', 'onnxruntime', 'torch', 'numpy', 'Lineage'):
      self.assertIn(name, replicated.stdout)
    self.assertTrue(os.path.exists(f'{root}/x/vanilla/1.replication/lineage.png'))

  @pytest.mark.slow
  def test_stability_of_an_export_from_the_command_line(self):
    root = self.create_tempdir().full_path
    testing.make_workdir(os.path.join(root, 'wd'), testing.VANILLA, scale=2.0)
    exporter.export_workdir(os.path.join(root, 'wd'), os.path.join(root, 'x'), 'vanilla')
    measured = self._run('fertility.py', f'--dump={root}/x/vanilla', '--generations=3',
                         '--num_perturbations=2', '--noise_generations=2')
    # A measurement that ran exits 0, contracting or not (it chains with && in the README).
    self.assertEqual(measured.returncode, 0, measured.stderr)
    self.assertIn('spectral radius', measured.stdout)
    with open(f'{root}/x/vanilla/1.stability/stability.json') as f:
      json.loads(f.read(), parse_constant=lambda token: self.fail(f'not JSON: {token}'))
    self.assertTrue(os.path.exists(f'{root}/x/vanilla/1.stability/spectrum.png'))
    again = self._run('fertility.py', f'--dump={root}/x/vanilla', '--generations=1',
                      '--num_perturbations=0')
    self.assertIn(f'{root}/x/vanilla/1.stability-2', again.stdout)

  @pytest.mark.slow
  def test_pretrained_quines_from_the_command_line(self):
    root = self.create_tempdir().full_path
    # Export: SavedModel and ONNX rebuilt from the shipped weights, run by saved_model_cli.
    exported = self._run('export_model.py', '--pretrained=aux_replicate', f'--export_dir={root}/x')
    self.assertEqual(exported.returncode, 0, exported.stderr)
    version = f'{root}/x/aux_replicate/1'
    self.assertIn(f'Exported {version}', exported.stdout)
    cli = os.path.join(os.path.dirname(sys.executable), 'saved_model_cli')
    ran = subprocess.run([cli, 'run', '--dir', version, '--tag_set', 'serve', '--signature_def',
                          'predict_weights', '--input_exprs', 'coordinates=[0,1,21099]'],
                         capture_output=True, text=True, timeout=300)
    self.assertEqual(ran.returncode, 0, ran.stderr)
    want = zoo.load_pretrained('aux_replicate').predict_weights(tf.constant([0, 1, 21099]))
    got = np.array(ran.stdout.split('predicted_weights:')[1].replace('[', ' ').replace(
        ']', ' ').split(), np.float32)
    self.assertAllClose(got, want, rtol=1e-5, atol=1e-6)
    self.assertEqual(dump_lib.read_dump(version).manifest['source']['pretrained'],
                     'aux_replicate')
    # Slim: the weights are stored three times (variables/, model.onnx, weights.safetensors);
    # besides them the paper-size export holds graphs and the 784 x 50 image projection, and no
    # 21,100 x 50 coordinate table (4 MB).
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(version) for f in fs)
    weights = os.path.getsize(os.path.join(version, 'weights.safetensors'))
    self.assertLess(total - 3 * weights, 512 << 10)
    # Replicate and stability take the name too; their reports go to --output_dir.
    replicated = self._run('replicate.py', '--pretrained=exact_w5', '--generations=3',
                           f'--output_dir={root}/r', '--nostability')
    self.assertEqual(replicated.returncode, 0, replicated.stderr)
    self.assertTrue(os.path.exists(f'{root}/r/lineage.png'))
    with open(f'{root}/r/report.json') as f:  # not the temporary export, gone by now
      self.assertEqual(json.load(f)['dump'], 'pretrained quine exact_w5')
    measured = self._run('fertility.py', '--pretrained=exact_w5', '--generations=50',
                         '--num_perturbations=0', f'--output_dir={root}/s',
                         '--require_contracting')
    self.assertEqual(measured.returncode, 1, measured.stderr)  # not contracting
    self.assertIn('spectral radius 2.73', measured.stdout)
    self.assertEqual(os.listdir(zoo.pretrained_dir('exact_w5')),
                     list(zoo.catalogue()['exact_w5']['files']))  # nothing written there


class BinaryErrorsTest(parameterized.TestCase):
  """What the binaries refuse, in one line: their command lines run in this process."""

  def test_bad_dump_is_reported_in_one_line(self):
    root = self.create_tempdir().full_path
    status, stderr = _run_in_process('replicate.py', f'--dump={root}')
    self.assertEqual(status, 2)
    self.assertIn('replicate.py: error:', stderr)
    self.assertIn('manifest.json', stderr)

  def test_damaged_saved_model_is_exit_2_in_one_line_naming_the_file(self):
    # Was: a 41-64 line traceback and exit 1 (the code for "frameworks disagree").
    root = self.create_tempdir().full_path
    testing.make_workdir(os.path.join(root, 'wd'), testing.VANILLA, scale=2.0)
    version = exporter.export_workdir(os.path.join(root, 'wd'), os.path.join(root, 'x'), 'v')
    shutil.rmtree(os.path.join(version, 'variables'))
    status, stderr = _run_in_process('replicate.py', f'--dump={version}', '--generations=0')
    self.assertEqual(status, 2, stderr)
    self.assertLen(stderr.strip().splitlines(), 1)
    self.assertRegex(stderr, r'variables/variables\.\S+: missing')

  def test_missing_dump_is_exit_2_in_one_line_for_the_stability(self):
    root = self.create_tempdir().full_path
    status, stderr = _run_in_process('fertility.py', f'--dump={root}/nowhere')
    self.assertEqual(status, 2)
    self.assertEqual(len(stderr.strip().splitlines()), 1, stderr)

  @parameterized.parameters('replicate.py', 'fertility.py')
  def test_an_unwritable_output_dir_is_refused_before_any_work(self, script):
    # Was: the whole analysis (a minute at the paper's size), then a FileNotFoundError traceback.
    root = self.create_tempdir().full_path
    with open(os.path.join(root, 'file'), 'w') as f:
      f.write('not a folder')
    for output_dir, why in (('/proc/x', '/proc is not writable'),
                            (f'{root}/file/out', f'{root}/file is not a directory')):
      with mock.patch.object(stability, 'analyse', side_effect=AssertionError('work was done')):
        status, stderr = _run_in_process(script, '--pretrained=exact_w5',
                                         f'--output_dir={output_dir}')
      self.assertEqual(status, 2, stderr)
      self.assertEqual(stderr.strip(), f'{script}: error: --output_dir={output_dir}: {why}'
                       + (' (No such file or directory)' if output_dir == '/proc/x' else ''))

  def test_a_non_finite_noise_is_refused_by_absl(self):
    with self.assertRaisesRegex(flags.Error, '--noise must be a finite number'):
      _run_in_process('fertility.py', '--pretrained=exact_w5', '--noise=nan')

  @parameterized.parameters('export_model.py', 'replicate.py', 'fertility.py')
  def test_unknown_pretrained_name_is_refused(self, script):
    root = self.create_tempdir().full_path
    args = [f'--export_dir={root}/y'] if script == 'export_model.py' else []
    status, stderr = _run_in_process(script, '--pretrained=nope', *args)
    self.assertNotEqual(status, 0)
    self.assertIn("no pretrained quine named 'nope'", stderr)
    self.assertFalse(os.path.exists(f'{root}/y'))


if __name__ == '__main__':
  tf.test.main()
