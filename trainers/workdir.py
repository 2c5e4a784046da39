"""A training workdir: its config.json, metrics.jsonl, TensorBoard logs, plots and checkpoints.

Rerunning a command in the same workdir resumes it; a workdir holding a different run is refused
unless the caller asks to overwrite it, and even then the old run is moved aside, not deleted.
"""

import json
import math
import os
import time

import tensorflow as tf

CONFIG_FILE = 'config.json'
METRICS_FILE = 'metrics.jsonl'


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
  tmp = path + '.tmp'
  with tf.io.gfile.GFile(tmp, 'w') as f:
    json.dump(config_dict, f, indent=2, sort_keys=True)
  tf.io.gfile.rename(tmp, path, overwrite=True)
  return moved


def read_config(workdir):
  path = os.path.join(workdir, CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    raise WorkdirError(f'{workdir} has no {CONFIG_FILE}: not a training workdir')
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def read_metrics(workdir):
  """All metrics lines of a run, as dicts."""
  path = os.path.join(workdir, METRICS_FILE)
  if not tf.io.gfile.exists(path):
    return []
  with tf.io.gfile.GFile(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class MetricsLog:
  """metrics.jsonl: one JSON object per line, each with the `phase` it ends.

  On resume, lines written after the restored checkpoint (by a run that was killed before it
  could checkpoint) are dropped, so the log of a resumed run equals an uninterrupted one's.
  """

  def __init__(self, workdir, restored_phase):
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
    record = finite_or_none(record)
    with tf.io.gfile.GFile(self._path, 'a') as f:
      f.write(json.dumps(record, allow_nan=False) + '\n')
    self.lines.append(record)


def finite_or_none(record):
  """A copy of `record` with NaN and infinite floats replaced by None."""
  return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
          for k, v in record.items()}
