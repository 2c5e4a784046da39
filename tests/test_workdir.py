"""Tests of the workdir: config.json checks, moving old runs aside, metrics.jsonl on resume."""

import json
import os
import re
import time

import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from trainers import workdir as workdir_lib

_CONFIG = {'method': 'optimize', 'num_epochs': 2, 'model': {'width': 4, 'kind': 'vanilla'}}


def _with(config, **changes):
  d = json.loads(json.dumps(config))
  for key, value in changes.items():
    if key.startswith('model_'):
      d['model'][key[len('model_'):]] = value
    else:
      d[key] = value
  return d


class PrepareTest(tf.test.TestCase):

  def test_new_workdir_gets_config_json(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    self.assertIsNone(workdir_lib.prepare(workdir, _CONFIG))
    self.assertEqual(workdir_lib.read_config(workdir), _CONFIG)
    self.assertFalse(os.path.exists(os.path.join(workdir, 'config.json.tmp')))

  def test_same_config_is_accepted(self):
    workdir = self.create_tempdir().full_path
    workdir_lib.prepare(workdir, _CONFIG)
    self.assertIsNone(workdir_lib.prepare(workdir, _with(_CONFIG)))
    self.assertEqual(workdir_lib.read_config(workdir), _CONFIG)

  def test_resumable_field_may_change_and_is_recorded(self):
    workdir = self.create_tempdir().full_path
    workdir_lib.prepare(workdir, _CONFIG, resumable_fields=('num_epochs',))
    longer = _with(_CONFIG, num_epochs=5)
    self.assertIsNone(workdir_lib.prepare(workdir, longer, resumable_fields=('num_epochs',)))
    self.assertEqual(workdir_lib.read_config(workdir)['num_epochs'], 5)

  def test_resumable_field_may_not_shrink(self):
    workdir = self.create_tempdir().full_path
    workdir_lib.prepare(workdir, _with(_CONFIG, num_epochs=5), resumable_fields=('num_epochs',))
    with self.assertRaisesRegex(workdir_lib.WorkdirError, 'num_epochs: 5 -> 2 .*not shortened'):
      workdir_lib.prepare(workdir, _CONFIG, resumable_fields=('num_epochs',))
    self.assertEqual(workdir_lib.read_config(workdir)['num_epochs'], 5)

  def test_different_config_is_refused_and_nothing_is_overwritten(self):
    workdir = self.create_tempdir().full_path
    workdir_lib.prepare(workdir, _CONFIG)
    with open(os.path.join(workdir, 'config.json')) as f:
      before = f.read()
    with self.assertRaisesRegex(workdir_lib.WorkdirError, r'model\.width: 4 -> 8'):
      workdir_lib.prepare(workdir, _with(_CONFIG, model_width=8))
    with open(os.path.join(workdir, 'config.json')) as f:
      self.assertEqual(f.read(), before)

  def test_non_resumable_change_is_refused_even_with_resumable_fields(self):
    workdir = self.create_tempdir().full_path
    workdir_lib.prepare(workdir, _CONFIG, resumable_fields=('num_epochs',))
    with self.assertRaisesRegex(workdir_lib.WorkdirError, 'method'):
      workdir_lib.prepare(workdir, _with(_CONFIG, method='regenerate', num_epochs=9),
                          resumable_fields=('num_epochs',))

  def test_overwrite_moves_the_old_run_aside(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    workdir_lib.prepare(workdir, _CONFIG)
    with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
      f.write('{"phase": 0}\n')
    new = _with(_CONFIG, model_width=8)
    moved = workdir_lib.prepare(workdir, new, overwrite=True)
    self.assertIsNotNone(moved)
    self.assertStartsWith(os.path.basename(moved), 'run.old-')
    self.assertEqual(workdir_lib.read_config(moved), _CONFIG)
    self.assertTrue(os.path.exists(os.path.join(moved, 'metrics.jsonl')))
    self.assertEqual(workdir_lib.read_config(workdir), new)
    self.assertEqual(workdir_lib.read_metrics(workdir), [])

  def test_overwriting_twice_in_a_row_keeps_both_old_runs(self):
    # Two overwrites within the same second must not collide on the '.old-<timestamp>' name.
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    workdir_lib.prepare(workdir, _CONFIG)
    first = workdir_lib.prepare(workdir, _with(_CONFIG, model_width=8), overwrite=True)
    second = workdir_lib.prepare(workdir, _with(_CONFIG, model_width=16), overwrite=True)
    self.assertNotEqual(first, second)
    self.assertEqual(workdir_lib.read_config(first)['model']['width'], 4)
    self.assertEqual(workdir_lib.read_config(second)['model']['width'], 8)
    self.assertEqual(workdir_lib.read_config(workdir)['model']['width'], 16)

  def test_a_file_is_not_a_workdir(self):
    path = self.create_tempfile('not_a_dir').full_path
    with self.assertRaisesRegex(workdir_lib.WorkdirError, 'not a directory'):
      workdir_lib.prepare(path, _CONFIG)

  def test_read_config_of_a_folder_without_one(self):
    with self.assertRaises(workdir_lib.WorkdirError):
      workdir_lib.read_config(self.create_tempdir().full_path)


class MetricsLogTest(tf.test.TestCase):

  def _write_lines(self, workdir, records):
    with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
      f.write(''.join(json.dumps(r) + '\n' for r in records))

  def test_lines_beyond_the_restored_phase_are_dropped(self):
    workdir = self.create_tempdir().full_path
    self._write_lines(workdir, [{'phase': p} for p in range(5)])
    log = workdir_lib.MetricsLog(workdir, restored_phase=2)
    self.assertEqual(log.lines, [{'phase': 0}, {'phase': 1}, {'phase': 2}])
    self.assertEqual(workdir_lib.read_metrics(workdir), log.lines)

  def test_diverged_line_is_dropped(self):
    workdir = self.create_tempdir().full_path
    self._write_lines(workdir, [{'phase': 0}, {'phase': 1, 'status': 'diverged'}])
    log = workdir_lib.MetricsLog(workdir, restored_phase=1)
    self.assertEqual(log.lines, [{'phase': 0}])

  def test_a_torn_last_line_is_dropped_with_a_warning(self):
    workdir = self.create_tempdir().full_path
    with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
      f.write('{"phase": 0}\n{"phase": 1}\n{"phase": 2, "l_s')
    with self.assertLogs(level='WARNING') as logs:
      log = workdir_lib.MetricsLog(workdir, restored_phase=2)
    self.assertIn('torn', logs.output[0])
    self.assertEqual(log.lines, [{'phase': 0}, {'phase': 1}])
    self.assertEqual(workdir_lib.read_metrics(workdir), log.lines)  # and the file is clean again

  def test_a_damaged_line_before_the_last_is_an_error_naming_it(self):
    workdir = self.create_tempdir().full_path
    with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
      f.write('{"phase": 0}\n{"pha\n{"phase": 2}\n')
    with self.assertRaisesRegex(workdir_lib.WorkdirError, r'metrics.jsonl: line 2 is not valid'):
      workdir_lib.read_metrics(workdir)

  def test_no_checkpoint_keeps_no_line(self):
    workdir = self.create_tempdir().full_path
    self._write_lines(workdir, [{'phase': 0}])
    self.assertEqual(workdir_lib.MetricsLog(workdir, restored_phase=-1).lines, [])

  def test_write_appends_a_line(self):
    workdir = self.create_tempdir().full_path
    log = workdir_lib.MetricsLog(workdir, restored_phase=0)
    self.assertEqual(log.lines, [])
    log.write({'phase': 0, 'l_sr': 1.5})
    log.write({'phase': 1, 'l_sr': 1.25})
    self.assertEqual(workdir_lib.read_metrics(workdir),
                     [{'phase': 0, 'l_sr': 1.5}, {'phase': 1, 'l_sr': 1.25}])


class TruncateTensorboardTest(tf.test.TestCase):

  def _steps(self, workdir):
    accumulator = event_accumulator.EventAccumulator(
        os.path.join(workdir, 'tensorboard'), size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    if 'x' not in accumulator.Tags()['tensors']:
      return []
    return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors('x')]

  def _write(self, workdir, steps):
    writer = tf.summary.create_file_writer(os.path.join(workdir, 'tensorboard'))
    with writer.as_default():
      for step in steps:
        tf.summary.scalar('x', float(step), step=step)
    writer.close()

  def test_steps_past_the_restored_phase_are_dropped(self):
    workdir = self.create_tempdir().full_path
    self._write(workdir, range(5))
    workdir_lib.truncate_tensorboard(workdir, 2)
    self.assertEqual(self._steps(workdir), [(0, 0.0), (1, 1.0), (2, 2.0)])
    self._write(workdir, range(3, 5))  # what the resumed run writes next
    self.assertEqual([step for step, _ in self._steps(workdir)], [0, 1, 2, 3, 4])
    workdir_lib.truncate_tensorboard(workdir, -1)
    self.assertEqual(self._steps(workdir), [])

  def test_a_resumed_runs_events_sort_after_the_killed_runs_in_the_same_second(self):
    # TensorBoard reads events files in name order: creation second, host, pid. A killed run's
    # file with a higher pid, created this second, used to sort after the resumed run's.
    workdir = self.create_tempdir().full_path
    self._write(workdir, range(3))
    directory = os.path.join(workdir, 'tensorboard')
    (name,) = os.listdir(directory)
    stamp, host = re.match(r'events\.out\.tfevents\.(\d+)\.(.*)\.\d+\.\d+\.v2$', name).groups()
    killed = f'events.out.tfevents.{stamp}.{host}.99999999.0.v2'
    os.rename(os.path.join(directory, name), os.path.join(directory, killed))
    workdir_lib.truncate_tensorboard(workdir, 2)
    self.assertGreater(time.time(), int(stamp) + 1)
    self._write(workdir, range(3, 5))  # the resumed run's steps
    self.assertEqual([step for step, _ in self._steps(workdir)], [0, 1, 2, 3, 4])

  def test_a_torn_last_event_and_a_stale_rewrite_are_removed(self):
    workdir = self.create_tempdir().full_path
    self._write(workdir, range(3))
    directory = os.path.join(workdir, 'tensorboard')
    (name,) = os.listdir(directory)
    with open(os.path.join(directory, name), 'ab') as f:
      f.write(b'\x30\x00\x00\x00\x00\x00\x00\x00torn')
    with open(os.path.join(directory, '.truncating-' + name), 'wb') as f:
      f.write(b'half a rewrite')
    with self.assertLogs(level='WARNING'):
      workdir_lib.truncate_tensorboard(workdir, 5)
    self.assertEqual(os.listdir(directory), [name])
    self.assertEqual([step for step, _ in self._steps(workdir)], [0, 1, 2])
    size = os.path.getsize(os.path.join(directory, name))
    workdir_lib.truncate_tensorboard(workdir, 5)  # nothing to drop: the file is left alone
    self.assertEqual(os.path.getsize(os.path.join(directory, name)), size)


if __name__ == '__main__':
  tf.test.main()
