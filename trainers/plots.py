"""Figures people would rather look at than read: weights against their predictions, and curves.

Each figure is rendered once to PNG bytes, which go both to a file and to TensorBoard.
"""

import io

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import matplotlib.ticker  # pylint: disable=g-import-not-at-top
import numpy as np
import tensorflow as tf

from models import stability

_MAX_POINTS = 20000


def _to_png(fig):
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=100, bbox_inches='tight')
  plt.close(fig)
  return buf.getvalue()


def weights_vs_predictions_png(theta, predictions, title=''):
  """Scatter of every weight theta_c (x) against the network's prediction f(c) (y)."""
  theta = np.asarray(theta)
  predictions = np.asarray(predictions)
  if theta.size > _MAX_POINTS:  # a fixed subsample keeps huge quines readable and fast
    idx = np.random.default_rng(0).choice(theta.size, _MAX_POINTS, replace=False)
    theta, predictions = theta[idx], predictions[idx]
  fig, ax = plt.subplots(figsize=(5, 5))
  ax.scatter(theta, predictions, s=2, alpha=0.4)
  lo = float(min(theta.min(), predictions.min()))
  hi = float(max(theta.max(), predictions.max()))
  ax.plot([lo, hi], [lo, hi], 'k--', lw=0.8, label='perfect copy')
  ax.axhline(0.0, color='r', lw=0.8, label='prints zeros')
  ax.set_xlabel('weight theta_c')
  ax.set_ylabel('prediction f(c)')
  ax.set_title(title, fontsize=9)
  ax.legend(loc='upper left', fontsize=8)
  return _to_png(fig)


_CURVE_KEYS = ('l_sr', 'rho', 'weight_rms', 'test_accuracy')
_LOG_KEYS = ('l_sr', 'rho', 'weight_rms')  # a quine's rho goes from ~1 to 1e-15


def curves_figure(records, x='phase', title=''):
  """One panel per metric the records hold (test accuracy for an auxiliary quine) against `x`.

  L_SR, rho and the weight RMS are on log axes (their positive values; zeros are left out and the
  panel says how many), so that a quine at rho 5e-15 does not draw a flat zero.
  """
  keys = [k for k in _CURVE_KEYS if any(r.get(k) is not None for r in records)] or ['rho']
  fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.4), layout='constrained')
  for ax, key in zip(np.atleast_1d(axes), keys):
    pts = [(r[x], r[key]) for r in records if r.get(key) is not None]
    label = key
    if key in _LOG_KEYS:
      dropped = sum(int(v <= 0) for _, v in pts)
      pts = [(a, v) for a, v in pts if v > 0]
      if pts:
        ax.set_yscale('log')
      if dropped:
        label += f' ({dropped} zero{"s" if dropped > 1 else ""} not shown)'
    if pts:
      ax.plot(*zip(*pts), '.-' if len(pts) <= 60 else '-')
    if key == 'rho':
      ax.axhline(1.0, color='r', lw=0.8, ls='--')
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=5, integer=True))
    ax.set_xlabel(x)
    ax.set_title(label, fontsize=9)
  if title:
    fig.suptitle(title, fontsize=9)
  return fig


def curves_png(records, x='phase', title=''):
  """`curves_figure` as PNG bytes."""
  return _to_png(curves_figure(records, x, title))


def png_to_summary_image(png):
  """A PNG as a [1, H, W, 4] uint8 tensor for tf.summary.image."""
  return tf.image.decode_png(png, channels=4)[tf.newaxis]


def write_png(path, png):
  with tf.io.gfile.GFile(path, 'wb') as f:
    f.write(png)


def confusion_png(confusion, title='test confusion matrix'):
  """Heat map of a [classes, classes] confusion matrix (rows: true, columns: predicted)."""
  confusion = np.asarray(confusion)
  fig, ax = plt.subplots(figsize=(4.5, 4))
  im = ax.imshow(confusion, cmap='Blues')
  fig.colorbar(im, ax=ax)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  ax.set_title(title, fontsize=9)
  if confusion.shape[0] <= 10:
    for (i, j), v in np.ndenumerate(confusion):
      ax.text(j, i, str(v), ha='center', va='center', fontsize=6)
  return _to_png(fig)


def spectrum_png(report, title=''):
  """PNG bytes: the outer eigenvalues against the unit circle, and the lineage's rho."""
  fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4.5))
  values = np.array(report['outer_eigenvalues'])
  circle = np.exp(1j * np.linspace(0, 2 * np.pi, 200))
  ax.plot(circle.real, circle.imag, 'k--', lw=0.8, label='|lambda| = 1')
  ax.scatter(values[:, 0], values[:, 1], c='C3', zorder=3, label='outer eigenvalues of J')
  ax.set_aspect('equal')
  limit = max(1.2, 1.1 * report['spectral_radius'])
  ax.set_xlim(-limit, limit)
  ax.set_ylim(-limit, limit)
  ax.set_xlabel('Re')
  ax.set_ylabel('Im')
  ax.set_title(f'spectral radius {report["spectral_radius"]:.3g}, '
               f'theta.J theta / |theta|^2 = {report["rayleigh_theta"]:.3g}', fontsize=9)
  ax.legend(fontsize=8, loc='lower left')
  rhos = np.maximum(np.array(report['lineage_rhos'], np.float64), 1e-30)
  bx.semilogy(np.arange(len(rhos)), rhos, 'o-', ms=3)
  bx.axhline(stability.QUINE_RHO, color='k', ls='--', lw=0.8,
             label=f'rho = {stability.QUINE_RHO:g}')
  bx.set_xlabel('generation')
  bx.set_ylabel('rho')
  noise = report['noise']
  bx.set_title(f'{report["fertile_generations"]} fertile generations; {noise["returned"]}/'
               f'{noise["num_perturbations"]} returned from {noise["noise"]:.0%} noise',
               fontsize=9)
  bx.legend(fontsize=8)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=110)
  plt.close(fig)
  return buffer.getvalue()
