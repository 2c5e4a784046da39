"""Lineages: the child of a quine is the network whose weights are the parent's predictions.

Generation g + 1 is built from generation g in one framework (theta_{g+1} = f_{theta_g}(c) for
every coordinate c) and written as a dump of the same format as the export, its manifest naming
the parent and the framework that built it; its model.onnx is the parent's graph with the new
weights. Every generation is then re-imported in the other frameworks, which must compute the same
predictions to float32 tolerance.

Per generation the report gives L_SR, rho, R^2, the weight RMS, the distance to the parent
(||theta_g - theta_{g-1}||, which is sqrt(L_SR) of the parent as the builder computed it, and the
same relative to ||theta_{g-1}||) and, for an auxiliary quine, the test accuracy.
"""

import io
import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import matplotlib.ticker  # pylint: disable=g-import-not-at-top
import numpy as np

from export import dump as dump_lib
from export import frameworks as frameworks_lib
from export import onnx_graph
from export import replication

LINEAGE_COLUMNS = ('generation', 'built_with', 'l_sr', 'rho', 'r2', 'weight_rms',
                   'distance_to_parent', 'relative_distance', 'test_accuracy',
                   'cross_framework_max_diff', 'agrees', 'diverged')


def generation_dir(output_dir, generation):
  return os.path.join(output_dir, f'generation_{generation}')


def write_child(parent, theta, directory, built_with):
  """Writes the child of `parent` (a Dump) with weights `theta` [N] as a dump in `directory`.

  An existing dump there (an earlier lineage) is replaced; any other existing folder is refused.

  Returns:
    The child's Dump, read back and validated.
  """
  if os.path.exists(directory) and not os.path.exists(
      os.path.join(directory, dump_lib.MANIFEST_FILE)):
    raise FileExistsError(f'{directory} exists and is not a dump: not replacing it')
  weights = parent.architecture.split(np.asarray(theta, np.float32))
  with open(parent.onnx_path, 'rb') as f:
    onnx_bytes = onnx_graph.with_weights(f.read(), weights)
  lineage = {'generation': parent.generation + 1, 'built_with': built_with,
             'parent': {'path': os.path.relpath(parent.path, os.path.abspath(directory)),
                        'generation': parent.generation,
                        'weights_sha256': parent.manifest['files'][dump_lib.WEIGHTS_FILE]
                                          ['sha256']}}
  source = {k: v for k, v in parent.manifest.get('source', {}).items()
            if k in ('workdir', 'checkpoint', 'model_name', 'version')}
  dump_lib.write_dump(directory, parent.config, weights, onnx_bytes, lineage, source,
                      overwrite=True)
  return dump_lib.read_dump(directory)


# A child whose weight RMS exceeds this (or is not finite) ends the lineage as diverged; the same
# bound as the trainers' default max_weight_rms.
DIVERGED_WEIGHT_RMS = 1e4


def build_lineage(root, framework, generations, output_dir, check_frameworks=(), images=None,
                  labels=None):
  """Builds G generations from `root` in `framework` and measures each of them.

  Args:
    root: the Dump of generation 0 (an export).
    framework: the framework that computes every child (one of frameworks.FRAMEWORKS).
    generations: G, the number of children to build.
    output_dir: generation g is written to `output_dir/generation_g`.
    check_frameworks: frameworks that re-import every generation and must agree with `framework`.
    images: optional test images (auxiliary quines).
    labels: optional test labels.

  Returns:
    A list of row dicts (see LINEAGE_COLUMNS, plus 'path'): G + 1 of them, or fewer when the
    lineage diverges: the last row then has 'diverged' True (its predictions, the next child's
    weights, are non-finite or have an RMS above DIVERGED_WEIGHT_RMS) and no child is built
    from it; its frameworks are not compared (overflowing numbers say nothing about them).
  """
  rows, parent, parent_theta = [], root, None
  for g in range(generations + 1):
    replica = frameworks_lib.make_replica(framework, parent, use_saved_model=False)
    with np.errstate(all='ignore'):
      predictions, logits, row = replication.evaluate(replica, images, labels)
    row = {'generation': parent.generation, 'built_with': parent.manifest['lineage'].get(
        'built_with', '-'), 'path': parent.path, **row}
    if parent_theta is not None:
      distance = float(np.linalg.norm(replica.theta.astype(np.float64) - parent_theta))
      row['distance_to_parent'] = distance
      row['relative_distance'] = distance / max(float(np.linalg.norm(parent_theta)), 1e-30)
    with np.errstate(all='ignore'):
      child_rms = float(np.sqrt(np.mean(np.square(predictions.astype(np.float64)))))
    if not np.isfinite(child_rms) or child_rms > DIVERGED_WEIGHT_RMS:
      row['diverged'] = True
      rows.append(row)
      break
    diffs, agrees = [], True
    for other in check_frameworks:
      if other == framework:
        continue
      other_replica = frameworks_lib.make_replica(other, parent, use_saved_model=False)
      other_pred = other_replica.predict_all()
      diffs.append(float(np.max(np.abs(other_pred.astype(np.float64) - predictions))))
      agrees = (agrees and np.array_equal(other_replica.theta, replica.theta)
                and replication.within_tolerance(
                    other_pred, predictions, replication.max_abs(predictions, replica.theta)))
      if logits is not None:
        agrees = agrees and replication.within_tolerance(
            other_replica.classify_all(images), logits, replication.logit_scale(
                logits, replica.theta, parent.config['temperature']))
    if diffs:
      row['cross_framework_max_diff'] = max(diffs)
      row['agrees'] = bool(agrees)
    rows.append(row)
    if g == generations:
      break
    parent_theta = replica.theta.astype(np.float64)
    parent = write_child(parent, predictions, generation_dir(output_dir, g + 1), framework)
  return rows


def lineage_png(rows, title=''):
  """A figure of the lineage: rho and L_SR, weight RMS, distance to the parent, test accuracy."""
  gens = [r['generation'] for r in rows]
  # log: True, False, or 'auto' (log unless the values span less than a factor of 2, where a
  # log axis repeats one tick label: a fertile lineage's weight RMS).
  panels = [('rho = L_SR / sum(theta^2)', 'rho', True), ('L_SR', 'l_sr', True),
            ('weight RMS', 'weight_rms', 'auto'),
            ('distance to parent / |parent|', 'relative_distance', True)]
  if any('test_accuracy' in r for r in rows):
    panels.append(('test accuracy', 'test_accuracy', False))
  fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0))
  for ax, (label, key, log) in zip(axes, panels):
    # Log panels leave out zeros (a lineage that has collapsed to exactly 0), and say so.
    points = [(g, r[key]) for g, r in zip(gens, rows)
              if r.get(key) is not None and (not log or r[key] > 0)]
    dropped = sum(r.get(key) is not None for r in rows) - len(points)
    if points:
      ax.plot(*zip(*points), 'o-' if len(gens) <= 30 else '-')
    values = [v for _, v in points]
    if points and (log is True or (log == 'auto' and max(values) >= 2 * min(values))):
      ax.set_yscale('log')
    ax.set_xlabel('generation')
    ax.set_title(label + (f' ({dropped} zero{"s" * (dropped > 1)} not shown)' if dropped else ''),
                 fontsize=9)
    if len(gens) <= 12:
      ax.set_xticks(gens)
    else:  # a long lineage: a few integer ticks
      ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=5, integer=True))
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=100)
  plt.close(fig)
  return buf.getvalue()
