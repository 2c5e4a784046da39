"""The replication / classification trade-off: auxiliary quines over a grid of task weights.

Each point is an ordinary auxiliary-quine run in its own workdir (so a sweep resumes like a run);
the classifier-only baseline (replication_weight = 0) is one more point. The results are written
as sweep.json and sweep.csv, a PNG of test accuracy against rho and L_SR, and TensorBoard's HParams
dashboard (each run's tensorboard/ folder gets its hyper-parameters, the sweep folder the config).
"""

import csv
import dataclasses
import json
import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

import formats
from trainers import aux_lib
from trainers import plots

_FIELDS = ('name', 'task_weight', 'replication_weight', 'status', 'test_accuracy', 'l_sr', 'rho',
           'r2', 'weight_rms', 'l_task', 'l_aux', 'train_seconds')


def point_name(task_weight, replication_weight):
  if replication_weight == 0:
    return 'baseline'
  return f'lambda_{task_weight:g}'


def points(task_weights, include_baseline, baseline_task_weight):
  """(task_weight, replication_weight) pairs of a sweep."""
  grid = [(float(w), 1.0) for w in task_weights]
  if include_baseline:
    grid.append((float(baseline_task_weight), 0.0))
  return grid


def _tradeoff_png(results):
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  quines = [r for r in results if r['replication_weight'] > 0]
  for ax, key, label in ((axes[0], 'rho', 'rho = L_SR / sum(theta^2)  (1 = prints zeros)'),
                         (axes[1], 'l_sr', 'L_SR')):
    ax.plot([r[key] for r in quines], [100 * r['test_accuracy'] for r in quines], 'o-')
    for r in results:
      ax.annotate(r['name'], (r[key], 100 * r['test_accuracy']), fontsize=7,
                  textcoords='offset points', xytext=(3, 3))
    for r in results:
      if r['replication_weight'] == 0:
        ax.plot([r[key]], [100 * r['test_accuracy']], 'r*', ms=10, label='classifier only')
    if key == 'rho':
      ax.axvline(1.0, color='r', lw=0.8, ls='--')
    values = [r[key] for r in results if r[key] and r[key] > 0]
    if values and max(values) > 10 * min(values):  # log axes only for wide ranges
      ax.set_xscale('log')
    ax.set_xlabel(label)
    ax.set_ylabel('test accuracy (%)')
    ax.legend(fontsize=8)
  fig.suptitle('auxiliary quine: classification vs self-replication', fontsize=10)
  return plots._to_png(fig)  # pylint: disable=protected-access


def run_sweep(base_config, sweep_dir, data, task_weights, include_baseline=True):
  """Trains every point (resuming finished ones) and writes the sweep's tables and plots.

  Args:
    base_config: the TrainConfig of every point but its task and replication weights.
    sweep_dir: the folder of the sweep; point workdirs go under it.
    data: an Mnist.
    task_weights: the lambdas of the quine points.
    include_baseline: add the classifier-only point (replication weight 0).

  Returns:
    A list of result dicts, one per point.
  """
  tf.io.gfile.makedirs(sweep_dir)
  hparams = [hp.HParam('task_weight', hp.RealInterval(0.0, 1e6)),
             hp.HParam('replication_weight', hp.RealInterval(0.0, 1e6))]
  with tf.summary.create_file_writer(sweep_dir).as_default():
    hp.hparams_config(hparams=hparams, metrics=[
        hp.Metric('test_accuracy'), hp.Metric('rho'), hp.Metric('l_sr'), hp.Metric('weight_rms')])
  results = []
  grid = points(task_weights, include_baseline, base_config.task_weight)
  for i, (task_weight, replication_weight) in enumerate(grid):
    name = point_name(task_weight, replication_weight)
    print(f'[{i + 1}/{len(grid)}] {name}', flush=True)
    config = dataclasses.replace(base_config, task_weight=task_weight,
                                 replication_weight=replication_weight)
    workdir = os.path.join(sweep_dir, name)
    record = aux_lib.run(config, workdir, data)
    with tf.summary.create_file_writer(os.path.join(workdir, formats.TENSORBOARD_DIR)).as_default():
      hp.hparams({'task_weight': task_weight, 'replication_weight': replication_weight},
                 trial_id=name)
    results.append({'name': name, 'task_weight': task_weight,
                    'replication_weight': replication_weight,
                    **{k: record.get(k) for k in _FIELDS if k in record},
                    'train_seconds': sum(r['seconds'] for r in _metrics(workdir))})
  _write(sweep_dir, results)
  return results


def _metrics(workdir):
  with tf.io.gfile.GFile(os.path.join(workdir, formats.METRICS_FILE)) as f:
    return [json.loads(line) for line in f if line.strip()]


def _write(sweep_dir, results):
  with tf.io.gfile.GFile(os.path.join(sweep_dir, 'sweep.json'), 'w') as f:
    f.write(formats.to_json(results, indent=2))
  with tf.io.gfile.GFile(os.path.join(sweep_dir, 'sweep.csv'), 'w') as f:
    writer = csv.DictWriter(f, fieldnames=_FIELDS, extrasaction='ignore')
    writer.writeheader()
    writer.writerows(results)
  png = _tradeoff_png(results)
  plots.write_png(os.path.join(sweep_dir, 'tradeoff.png'), png)
  with tf.summary.create_file_writer(sweep_dir).as_default():
    tf.summary.image('tradeoff', plots.png_to_summary_image(png), step=0)
