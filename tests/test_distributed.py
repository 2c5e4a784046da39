"""tf.distribute on a CPU: mirrored over 2 logical devices, 2 workers on 127.0.0.1, TPU wiring.

The mirrored and multi-worker runs are processes of their own (marked slow).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from unittest import mock

from absl.testing import absltest
import numpy as np
import pytest
import tensorflow as tf

from trainers import strategies

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in a fresh process: the CPU can only be split before TensorFlow initialises its devices.
_MIRRORED_SCRIPT = r'''
import json, tempfile
import numpy as np
from trainers import strategies
mirrored = strategies.make_strategy('mirrored', cpu_devices=2)
from trainers import aux_lib, configs, data
out = {'replicas': mirrored.num_replicas_in_sync}
rng = np.random.default_rng(0)
fake = data.Mnist(rng.random((64, 16), dtype=np.float32), rng.integers(0, 3, 64).astype(np.int32),
                  rng.random((32, 16), dtype=np.float32), rng.integers(0, 3, 32).astype(np.int32))
for name, strategy in (('default', None), ('mirrored', mirrored)):
  d = tempfile.mkdtemp()
  aux_lib.run(configs.AUX_PRESETS['tiny'], d, fake, strategy)
  out[name] = [json.loads(l) for l in open(f'{d}/metrics.jsonl')]
print('RESULT ' + json.dumps(out))
'''

_KEYS = ('l_sr', 'rho', 'r2', 'weight_rms', 'train_loss', 'test_accuracy')


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _env(**extra):
  env = dict(os.environ, PYTHONPATH=_ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
             TF_CPP_MIN_LOG_LEVEL='2')
  env.update(extra)
  return env


@pytest.mark.slow  # a process of its own, whose CPU it splits
class MirroredTest(absltest.TestCase):

  def test_auxiliary_quine_on_two_cpu_replicas_matches_the_default_strategy(self):
    # The vanilla quine's counterpart is in test_train_lib; the auxiliary quine splits images too.
    proc = subprocess.run([sys.executable, '-c', _MIRRORED_SCRIPT], cwd=_ROOT, env=_env(),
                          capture_output=True, text=True, timeout=600, check=False)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    result = json.loads(proc.stdout.split('RESULT ', 1)[1])
    self.assertEqual(result['replicas'], 2)
    default, mirrored = result['default'], result['mirrored']
    self.assertLen(mirrored, len(default))
    for a, b in zip(default, mirrored):
      for key in _KEYS:
        if key in a:
          np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-6,
                                     err_msg=f'phase {a["phase"]} {key}')


@pytest.mark.slow  # two worker processes, then the binary
class MultiWorkerTest(absltest.TestCase):

  def _start_workers(self, workdir, num_epochs, tag):
    ports = [_free_port(), _free_port()]
    cluster = {'worker': [f'127.0.0.1:{p}' for p in ports]}
    procs = []
    for i in range(2):
      tf_config = json.dumps({'cluster': cluster, 'task': {'type': 'worker', 'index': i}})
      log = open(os.path.join(self.tmp, f'{tag}_worker{i}.log'), 'w')
      self.addCleanup(log.close)
      procs.append(subprocess.Popen(
          [sys.executable, os.path.join(_ROOT, 'tests', 'multi_worker_main.py'), workdir,
           str(num_epochs), os.path.join(self.tmp, f'{tag}_weights{i}.npy')],
          cwd=_ROOT, env=_env(TF_CONFIG=tf_config), stdout=log, stderr=subprocess.STDOUT))
    for p in procs:
      self.addCleanup(p.kill)
    return procs

  def _wait(self, procs, timeout_s=300):
    deadline = time.time() + timeout_s
    for p in procs:
      p.wait(timeout=max(1, deadline - time.time()))
    logs = ''.join(open(os.path.join(self.tmp, f)).read()[-2000:]
                   for f in sorted(os.listdir(self.tmp)) if f.endswith('.log'))
    self.assertEqual([p.returncode for p in procs], [0, 0], logs)

  def test_two_workers_train_identically_and_resume_after_being_killed(self):
    self.tmp = self.create_tempdir().full_path
    workdir = os.path.join(self.tmp, 'run')
    num_epochs = 16
    procs = self._start_workers(workdir, num_epochs, 'first')
    checkpoints = os.path.join(workdir, 'checkpoints')
    deadline = time.time() + 300
    while not (tf.train.latest_checkpoint(checkpoints) or '').endswith('ckpt-3'):
      self.assertLess(time.time(), deadline, 'no checkpoint 3 within 300 s')
      self.assertTrue(all(p.poll() is None for p in procs), 'a worker ended early')
      time.sleep(0.2)
    for p in procs:
      p.send_signal(signal.SIGKILL)
      p.wait()
    interrupted_at = tf.train.latest_checkpoint(checkpoints)

    self._wait(self._start_workers(workdir, num_epochs, 'resumed'))
    w0, w1 = (np.load(os.path.join(self.tmp, f'resumed_weights{i}.npy')) for i in range(2))
    np.testing.assert_array_equal(w0, w1)
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      records = [json.loads(line) for line in f]
    self.assertEqual([r['phase'] for r in records], list(range(num_epochs + 1)))
    self.assertNotEqual(interrupted_at, tf.train.latest_checkpoint(checkpoints))
    # Only the chief writes: nothing but the chief's files in the workdir.
    self.assertCountEqual(os.listdir(workdir),
                          ['checkpoints', 'config.json', 'metrics.jsonl', 'plots', 'stability.json',
                           'tensorboard'])

    # The same run on one device gives the same numbers up to float32 round-off: summing the
    # replicas' gradients associates differently, and ~3,000 steps let that drift to ~1e-4.
    single = os.path.join(self.tmp, 'single')
    proc = subprocess.run(
        [sys.executable, os.path.join(_ROOT, 'trainers', 'train_vanilla.py'),
         f'--workdir={single}', '--preset=small', f'--num_epochs={num_epochs}'],
        cwd=_ROOT, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    with open(os.path.join(single, 'metrics.jsonl')) as f:
      expected = [json.loads(line) for line in f]
    for a, b in zip(expected, records):
      np.testing.assert_allclose(b['l_sr'], a['l_sr'], rtol=1e-3, err_msg=f'phase {a["phase"]}')


class StrategyFlagsTest(absltest.TestCase):

  def test_unknown_strategy_is_refused(self):
    with self.assertRaisesRegex(ValueError, '--strategy=.nope. is not one of'):
      strategies.make_strategy('nope')

  def test_tpu_address_needs_the_tpu_strategy(self):
    with self.assertRaisesRegex(ValueError, '--tpu=grpc://x:8470 needs --strategy=tpu'):
      strategies.make_strategy('mirrored', tpu='grpc://x:8470')

  def test_default_and_one_device(self):
    self.assertIs(strategies.make_strategy('default'), tf.distribute.get_strategy())
    one = strategies.make_strategy('one_device', device='/cpu:0')
    self.assertIsInstance(one, tf.distribute.OneDeviceStrategy)

  def test_tpu_resolver_is_built_only_when_asked(self):
    with mock.patch.object(tf.distribute.cluster_resolver, 'TPUClusterResolver') as resolver, \
        mock.patch.object(tf.config, 'experimental_connect_to_cluster') as connect, \
        mock.patch.object(tf.tpu.experimental, 'initialize_tpu_system') as init, \
        mock.patch.object(tf.distribute, 'TPUStrategy') as tpu_strategy:
      strategies.make_strategy('default')
      resolver.assert_not_called()
      strategy = strategies.make_strategy('tpu', tpu='my-tpu')
    resolver.assert_called_once_with(tpu='my-tpu')
    connect.assert_called_once_with(resolver.return_value)
    init.assert_called_once_with(resolver.return_value)
    self.assertIs(strategy, tpu_strategy.return_value)


if __name__ == '__main__':
  absltest.main()
