r"""The stability-information frontier of auxiliary quines: does a lineage keep its task?

Each point is one command of the zoo's binaries: a `trainers/train_aux.py` run exported to
<runs_dir>/exports/<point> (or a pretrained quine), then `experiments/fertility.py` on the
exported files, which measures the spectral radius of J = d f_theta(C) / d theta and regenerates
300 generations, recording rho and MNIST test accuracy of every one, quines or not. The controls
are the same network trained as a plain classifier and as random features (hidden kernels left at
their initialisation, only the class head trained).

  python experiments/fertile_frontier.py --runs_dir=runs/frontier --data_dir=../shared/tfds
  python experiments/fertile_frontier.py --runs_dir=runs/frontier --points=lineage,regenerate

Writes <runs_dir>/frontier.jsonl (one row per point, with its commands), frontier.md (the table)
and frontier.png (accuracy along each lineage, and at generations 1, 5 and 300 against the
spectral radius). A point whose fertility report exists is not run again, so reruns resume.
"""

import io
import json
import os
import subprocess
import sys

from absl import app
from absl import flags

import formats

_RUNS_DIR = flags.DEFINE_string('runs_dir', 'runs/frontier', 'Where the runs, exports and '
                                'reports go.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'tfds data dir holding mnist/3.0.1 (default: '
                                'TFDS_DATA_DIR).')
_POINTS = flags.DEFINE_list('points', None, 'Points to run (default: all), by name.')

GENERATIONS_SHOWN = (0, 1, 5, 300)

# (name, what it is, ('train', train_aux.py flags) or ('pretrained', zoo name), control)
POINTS = [
    ('aux_replicate', "the zoo's replicating auxiliary quine (paper network, SELU, 40,000 steps)",
     ('pretrained', 'aux_replicate'), False),
    ('lineage', 'fertile family + image input, lambda 0.05, cross-entropy of the quine and 4 '
     'descendants', ('train', ['--preset=lineage']), False),
    ('lineage_k0', 'the same, the quine\'s cross-entropy only (K = 0)',
     ('train', ['--preset=lineage', '--descendants=0']), False),
    ('lineage_k8', 'the same, 8 descendants', ('train', ['--preset=lineage', '--descendants=8']),
     False),
    ('lineage_l0.01', 'the same, lambda 0.01', ('train', ['--preset=lineage',
                                                         '--task_weight=0.01']), False),
    ('lineage_l0.2', 'the same, lambda 0.2', ('train', ['--preset=lineage', '--task_weight=0.2']),
     False),
    ('lineage_gain0.4', "the same at the vanilla 'stable' gain 0.4",
     ('train', ['--preset=lineage', '--gain=0.4']), False),
    ('lineage_saturated', 'weight head deep in tanh saturation (projection std 1, gain 1)',
     ('train', ['--preset=lineage_saturated']), False),
    ('regenerate', 'the family\'s own attractor: 300 regenerations from the initialisation',
     ('train', ['--preset=lineage', '--method=regenerate', '--generations=300',
                '--descendants=0']), False),
    ('classifier', 'control: the same network as a plain classifier (replication weight 0)',
     ('train', ['--preset=lineage', '--replication_weight=0', '--descendants=0',
                '--task_weight=1']), True),
    ('random_features', 'control: hidden kernels at their initialisation, class head trained',
     ('train', ['--preset=lineage', '--replication_weight=0', '--descendants=0',
                '--task_weight=1', '--train_only=class_head']), True),
]


def _command(argv):
  return 'python ' + ' '.join(argv)


def _run(argv):
  """Runs `python argv...` from the repository root; exits naming it if it fails."""
  print('$', _command(argv), flush=True)
  proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, check=False)
  if proc.returncode not in (0, 3):  # 3: a training run diverged, which is a result
    sys.exit(f'fertile_frontier.py: failed: {_command(argv)}\n{proc.stderr[-2000:]}')
  return proc


def point_commands(name, source, runs_dir, data_dir):
  """(training command or None, analysis command, report folder) of one point, as argv lists."""
  data = [f'--data_dir={data_dir}'] if data_dir else []
  report_dir = os.path.join(runs_dir, 'fertility', name)
  kind, what = source
  if kind == 'pretrained':
    train, target = None, f'--pretrained={what}'
  else:
    exports = os.path.join(runs_dir, 'exports')
    train = ['trainers/train_aux.py', f'--workdir={os.path.join(runs_dir, "runs", name)}', *what,
             f'--export_dir={exports}', f'--model_name={name}', *data]
    target = f'--dump={os.path.join(exports, name)}'
  analyse = ['experiments/fertility.py', target, f'--output_dir={report_dir}', *data]
  return train, analyse, report_dir


def row(name, what, control, train, analyse, report):
  """The frontier row of one point from its fertility report."""
  traced = report['trajectory']
  accuracies, rhos = traced['accuracies'], traced['rhos']
  shown = {g: (accuracies[g] if g < len(accuracies) else None) for g in GENERATIONS_SHOWN}
  return {
      'point': name, 'what': what, 'control': control,
      'spectral_radius': report['spectral_radius'],
      'rho': report['rho'],
      'fertile_generations': report['fertile_generations'],
      'noise_returned': report['noise']['returned'],
      'num_perturbations': report['noise']['num_perturbations'],
      'accuracy': {str(g): a for g, a in shown.items()},
      'rho_at': {str(g): (rhos[g] if g < len(rhos) else None) for g in GENERATIONS_SHOWN},
      'accuracies': accuracies,
      'diverged_at': traced['diverged_at'],
      'commands': [_command(c) for c in (train, analyse) if c],
  }


def _cell(x, fmt):
  return '-' if x is None else format(x, fmt)


def table(rows):
  """The frontier as a Markdown table (rho beside every accuracy)."""
  lines = ['| point | radius | rho | fertile gens | ' + ' | '.join(
      f'gen {g}: acc / rho' for g in GENERATIONS_SHOWN) + ' |',
           '|' + '---|' * (4 + len(GENERATIONS_SHOWN))]
  for r in rows:
    cells = [f'{_cell(r["accuracy"][str(g)], ".2%")} / {_cell(r["rho_at"][str(g)], ".3g")}'
             for g in GENERATIONS_SHOWN]
    lines.append(f'| {r["point"]} | {r["spectral_radius"]:.3g} | {r["rho"]:.3g} | '
                 f'{r["fertile_generations"]}/300 | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def figure_png(rows):
  """Accuracy along every lineage, and at generations 1, 5 and 300 against the radius."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), layout='constrained')
  colours = plt.get_cmap('tab20')(range(len(rows)))
  for colour, r in zip(colours, rows):
    if r['control']:
      for axis in (left, right):
        axis.axhline(r['accuracy']['0'], color=colour, linestyle=':',
                     label=f'{r["point"]} ({r["accuracy"]["0"]:.1%})')
      continue
    generations = range(len(r['accuracies']))
    left.plot([g + 1 for g in generations], r['accuracies'], color=colour, label=r['point'])
    for g, marker in ((1, 'o'), (5, 's'), (300, '*')):
      accuracy = r['accuracy'][str(g)]
      if accuracy is not None:
        right.scatter(r['spectral_radius'], accuracy, color=colour, marker=marker, s=60)
  left.set_xscale('log')
  left.set_xlabel('generation + 1 (1 = the trained quine)')
  left.set_ylabel('MNIST test accuracy')
  left.set_title('accuracy along each lineage (quines or not)')
  left.legend(fontsize=7)
  right.set_xscale('log')
  right.axvline(1.0, color='grey', linewidth=0.8)
  right.set_xlabel('spectral radius of J (< 1: fertile)')
  right.set_ylabel('MNIST test accuracy')
  right.set_title('generation 1 (o), 5 (s), 300 (*) against the radius')
  right.legend(fontsize=7)
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=90)
  plt.close(fig)
  return buffer.getvalue()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  known = [name for name, *_ in POINTS]
  wanted = _POINTS.value or known
  unknown = [name for name in wanted if name not in known]
  if unknown:
    sys.exit(f'fertile_frontier.py: error: --points: unknown {unknown}; the points are '
             f'{", ".join(known)}')
  runs_dir = _RUNS_DIR.value
  try:
    formats.check_writable(runs_dir)
  except formats.FormatError as e:
    sys.exit(f'fertile_frontier.py: error: --runs_dir={runs_dir}: {str(e).partition(": ")[2]}')
  rows = []
  for name, what, source, control in POINTS:
    if name not in wanted:
      continue
    train, analyse, report_dir = point_commands(name, source, runs_dir, _DATA_DIR.value)
    report_path = os.path.join(report_dir, formats.STABILITY_FILE)
    if not os.path.exists(report_path):
      if train:
        _run(train)
      _run(analyse)
    with open(report_path) as f:
      rows.append(row(name, what, control, train, analyse, json.load(f)))
    print(table(rows[-1:]).splitlines()[-1], flush=True)
  formats.write_atomic(os.path.join(runs_dir, 'frontier.jsonl'),
                       ''.join(formats.to_json(r) + '\n' for r in rows))
  formats.write_atomic(os.path.join(runs_dir, 'frontier.md'), table(rows) + '\n')
  formats.write_atomic(os.path.join(runs_dir, 'frontier.png'), figure_png(rows))
  print(table(rows))
  print(f'Wrote {runs_dir}/{{frontier.jsonl, frontier.md, frontier.png}}')


if __name__ == '__main__':
  app.run(main)
