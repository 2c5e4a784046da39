"""A training workdir: its config.json, metrics.jsonl, TensorBoard logs, plots and checkpoints.

Rerunning a command in the same workdir resumes it; a workdir holding a different run is refused
unless the caller asks to overwrite it, and even then the old run is moved aside, not deleted.
A run killed at any moment (SIGKILL included) resumes from its last checkpoint, and what it had
written past that checkpoint is dropped from metrics.jsonl and TensorBoard, so that no phase is
ever recorded twice.
"""

import json
import os
import re
import time

from absl import logging
import tensorflow as tf
from tensorflow.core.util import event_pb2

import formats

CONFIG_FILE = formats.CONFIG_FILE
METRICS_FILE = formats.METRICS_FILE
TENSORBOARD_DIR = formats.TENSORBOARD_DIR
STABILITY_FILE = formats.STABILITY_FILE
_REWRITE_PREFIX = '.truncating-'  # no 'tfevents' in the name: TensorBoard never reads it


class WorkdirError(ValueError):
  """The workdir cannot be used for this run."""


def _differences(old, new, ignore, prefix=''):
  diffs = []
  for key in sorted(set(old) | set(new)):
    if key in ignore:
      continue
    a, b = old.get(key), new.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      diffs += _differences(a, b, ignore, f'{prefix}{key}.')
    elif a != b:
      diffs.append(f'{prefix}{key}: {a!r} -> {b!r}')
  return diffs


def prepare(workdir, config_dict, overwrite=False, resumable_fields=()):
  """Makes `workdir` ready for a run described by `config_dict`, which is written to config.json.

  Args:
    workdir: the run's folder (created if missing).
    config_dict: the resolved configuration, JSON-serialisable.
    overwrite: move a run with a different configuration aside instead of refusing.
    resumable_fields: keys that may differ from the stored run (a longer schedule).

  Returns:
    The path of the moved-aside old run, or None.

  Raises:
    WorkdirError: the workdir holds a different run and overwrite is False, or is not a folder.
  """
  if tf.io.gfile.exists(workdir) and not tf.io.gfile.isdir(workdir):
    raise WorkdirError(f'--workdir={workdir} exists and is not a directory')
  path = os.path.join(workdir, CONFIG_FILE)
  moved = None
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      old = json.load(f)
    diffs = _differences(old, config_dict, set(resumable_fields))
    # A schedule may be extended, not cut short: phases already run cannot be taken back.
    diffs += [f'{k}: {old[k]!r} -> {config_dict[k]!r} (a run can be extended, not shortened)'
              for k in resumable_fields
              if isinstance(old.get(k), int) and isinstance(config_dict.get(k), int)
              and config_dict[k] < old[k]]
    if diffs:
      if not overwrite:
        raise WorkdirError(
            f'--workdir={workdir} holds a run with a different configuration '
            f'({"; ".join(diffs[:3])}{"; ..." if len(diffs) > 3 else ""}); '
            'use another --workdir or pass --overwrite to move it aside')
      stem = f'{workdir.rstrip("/")}.old-{time.strftime("%Y%m%d-%H%M%S")}'
      moved, n = stem, 1
      while tf.io.gfile.exists(moved):  # two overwrites within one second keep both old runs
        moved, n = f'{stem}-{n}', n + 1
      tf.io.gfile.rename(workdir, moved)
  tf.io.gfile.makedirs(workdir)
  formats.write_json_atomic(path, config_dict, sort_keys=True)
  return moved


def read_config(workdir):
  path = os.path.join(workdir, CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    raise WorkdirError(f'{workdir} has no {CONFIG_FILE}: not a training workdir')
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def read_metrics(workdir):
  """All metrics lines of a run, as dicts.

  A last line that is not valid JSON (a write torn by a kill) is dropped with a warning.

  Raises:
    WorkdirError: a line before the last one is not valid JSON (the file was damaged).
  """
  path = os.path.join(workdir, METRICS_FILE)
  if not tf.io.gfile.exists(path):
    return []
  with tf.io.gfile.GFile(path) as f:
    lines = [(i + 1, line) for i, line in enumerate(f) if line.strip()]
  records = []
  for k, (number, line) in enumerate(lines):
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as e:
      if k < len(lines) - 1:
        raise WorkdirError(f'{path}: line {number} is not valid JSON ({e}); the file was damaged '
                           'after it was written') from e
      logging.warning('%s: dropped its last line %d, torn by an interrupted write (%s)', path,
                      number, e)
  return records


class MetricsLog:
  """metrics.jsonl: one JSON object per line, each with the `phase` it ends.

  On resume, lines written after the restored checkpoint (by a run that was killed before it
  could checkpoint) are dropped, so the log of a resumed run equals an uninterrupted one's.
  """

  def __init__(self, workdir, restored_phase):
    """Opens the log of `workdir`, keeping the lines of phases up to `restored_phase`.

    Args:
      workdir: the run's folder.
      restored_phase: the phase of the restored checkpoint; -1 when there is none (every line
        then belongs to a run killed before its first checkpoint, and is dropped).
    """
    self._path = os.path.join(workdir, METRICS_FILE)
    kept = [m for m in read_metrics(workdir) if m.get('phase', 0) <= restored_phase
            and m.get('status') != 'diverged']
    tmp = self._path + '.tmp'
    with tf.io.gfile.GFile(tmp, 'w') as f:
      f.write(''.join(json.dumps(m) + '\n' for m in kept))
    tf.io.gfile.rename(tmp, self._path, overwrite=True)
    self.lines = kept

  def write(self, record):
    """Appends a record; non-finite numbers become null, so every line stays valid JSON."""
    record = formats.finite_or_none(record)
    with tf.io.gfile.GFile(self._path, 'a') as f:
      f.write(json.dumps(record, allow_nan=False) + '\n')
    self.lines.append(record)


def _events(path):
  """The Event protos of one TensorBoard events file, up to a record torn by a kill."""
  events = []
  try:
    for record in tf.data.TFRecordDataset(path):
      events.append(event_pb2.Event.FromString(record.numpy()))
  except tf.errors.DataLossError:
    logging.warning('%s: dropped a last event torn by an interrupted write', path)
  return events


def truncate_tensorboard(workdir, last_phase):
  """Drops the TensorBoard summaries of phases after `last_phase` (the restored checkpoint's).

  Summaries are written with step = phase before the phase's checkpoint; a run killed in between
  would otherwise record that phase (and, in the first phase, step 0) twice once it resumes. Each
  events file holding such steps is rewritten without them, through a temporary file renamed
  over it, so that a kill during the rewrite leaves either version (the next resume redoes it).
  Every reader (TensorBoard, `summary_iterator`) then sees each step once.

  Args:
    workdir: the run's folder; its summaries are in `<workdir>/tensorboard`.
    last_phase: the last phase to keep (-1: keep no summary, for a run without a checkpoint).
  """
  directory = os.path.join(workdir, TENSORBOARD_DIR)
  if not tf.io.gfile.isdir(directory):
    return
  names = sorted(tf.io.gfile.listdir(directory))
  _wait_past_the_newest_events_file(names)
  for name in names:
    path = os.path.join(directory, name)
    if name.startswith(_REWRITE_PREFIX):  # left by a kill during an earlier rewrite
      tf.io.gfile.remove(path)
      continue
    if 'tfevents' not in name or tf.io.gfile.isdir(path):
      continue
    events = _events(path)
    kept = [e for e in events if e.step <= last_phase or not e.HasField('summary')]
    if len(kept) == len(events) and tf.io.gfile.stat(path).length == _framed_size(events):
      continue
    tmp = os.path.join(directory, f'{_REWRITE_PREFIX}{name}')
    with tf.io.TFRecordWriter(tmp) as writer:
      for event in kept:
        writer.write(event.SerializeToString())
    tf.io.gfile.rename(tmp, path, overwrite=True)
    logging.info('%s: dropped %d summaries past phase %d (not checkpointed)', path,
                 len(events) - len(kept), last_phase)


def _wait_past_the_newest_events_file(names):
  """Returns once the clock is past the creation second of every events file in `names`.

  TensorBoard reads a run's events files in name order, and a name begins with the second it was
  created in, then the host and the process id: a run resumed within the second its killed
  predecessor started could open a file that sorts first (a lower pid), and TensorBoard would read
  its steps 1, 2, 3 before the old file's step 0. Waiting (at most a second, and only then) makes
  the new file's name sort last.
  """
  stamps = [int(m.group(1)) for m in (re.search(r'tfevents\.(\d+)\.', n) for n in names) if m]
  if stamps:
    while time.time() < max(stamps) + 1:
      time.sleep(0.05)


def _framed_size(events):
  # A TFRecord is an 8-byte length, 4-byte CRC, the data and a 4-byte CRC: a file longer than
  # its events ends in a torn record.
  return sum(16 + e.ByteSize() for e in events)


