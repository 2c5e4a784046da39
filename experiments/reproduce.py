r"""Reruns the paper's experiments and prints the reproduction table (paper vs ours, rho beside L_SR).

Each row is one command of the training binaries; the binaries resume their workdirs, so rerunning
the script only computes what is missing. The printed commands are the ones to copy.

  python experiments/reproduce.py --part=vanilla --runs_dir=runs/repro
  python experiments/reproduce.py --part=aux --runs_dir=runs/repro --data_dir=../shared/tfds
"""

import json
import os
import subprocess
import sys

from absl import app
from absl import flags

import formats

_PART = flags.DEFINE_enum('part', 'vanilla', ['vanilla', 'aux'], 'Which table.')
_RUNS_DIR = flags.DEFINE_string('runs_dir', 'runs/repro', 'Where the workdirs go.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'tfds data dir with MNIST (aux part).')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds of every row.')

# (workdir slug, row name, paper's number as printed, binary, flags)
VANILLA_ROWS = [
    ('init', 'initial network', 'L_SR 90.16', 'train_vanilla', ['--num_epochs=0']),
    ('sgd', '30 epochs SGD', 'plateaus near 66', 'train_vanilla', ['--optimizer=sgd']),
    ('momentum', '30 epochs SGD+momentum', '-', 'train_vanilla', ['--optimizer=momentum']),
    ('adam', '30 epochs Adam', '-', 'train_vanilla', ['--optimizer=adam']),
    ('adagrad', '30 epochs Adagrad', 'rises', 'train_vanilla', ['--optimizer=adagrad']),
    ('adamax', '30 epochs Adamax', 'lowest, ~33', 'train_vanilla', ['--optimizer=adamax']),
    ('rmsprop', '30 epochs RMSprop', 'explodes', 'train_vanilla', ['--optimizer=rmsprop']),
    ('adamax_100', '100 epochs Adamax', '32.10 (margin 0.040, quotient 6.44)', 'train_vanilla',
     ['--optimizer=adamax', '--num_epochs=100']),
    ('regenerate', 'regeneration alone, G=10', 'collapses to the zero quine', 'train_vanilla',
     ['--method=regenerate', '--generations=10']),
    ('alternate', 'alternate T=1 Adamax, G=10', '0.86 (margin 0.0065, quotient 10.06)',
     'train_vanilla',
     ['--method=alternate', '--generations=10', '--opt_epochs_per_generation=1']),
]
AUX_ROWS = [
    ('init', 'initial auxiliary quine', 'L_aux 1072.05 (L_SR ~80, lambda*L_task ~990)',
     'train_aux', ['--preset=paper', '--num_epochs=0']),
    ('quine', 'auxiliary quine, 30 epochs', '90.41% (L_SR ~80 -> ~260)', 'train_aux',
     ['--preset=paper']),
    ('baseline', 'classifier-only baseline, 30 epochs', '96.33%', 'train_aux',
     ['--preset=paper', '--replication_weight=0']),
]


def _run(binary, flag_list, workdir):
  cmd = [sys.executable, f'trainers/{binary}.py', f'--workdir={workdir}', *flag_list]
  if binary == 'train_aux' and _DATA_DIR.value:
    cmd.append(f'--data_dir={_DATA_DIR.value}')
  print('$', ' '.join(cmd[1:]), flush=True)
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if proc.returncode not in (0, 3):  # 3: the run diverged, which is a result
    sys.exit(f'failed: {" ".join(cmd)}\n{proc.stderr[-2000:]}')


def _fmt(x, digits=4):
  return '-' if x is None else f'{x:.{digits}g}'


def _row(name, paper, records):
  last = [r[-1] for r in records]
  init = records[0][0]
  cells = []
  for r in last:
    cell = f'{_fmt(r.get("l_sr"))} / {_fmt(r.get("rho"), 3)}'
    if 'test_accuracy' in r:
      cell += f' / {100 * r["test_accuracy"]:.2f}%'
    cell += f' / {_fmt(r.get("weight_rms"), 3)}'
    if 'l_aux' in r:
      cell += f' (L_aux {_fmt(r["l_aux"], 5)} = L_SR + {_fmt(r["l_aux"] - r["l_sr"], 5)})'
    if r.get('status') == 'diverged':
      cell += f' (diverged, phase {r["phase"]})'
    cells.append(cell)
  extra = ''
  if len(records[0]) > 1:
    peak = max(records[0], key=lambda r: r['l_sr'] if r['l_sr'] is not None else float('inf'))
    extra = (f' seed {_SEEDS.value[0]}: init {_fmt(init["l_sr"])}, max {_fmt(peak["l_sr"])} '
               f'at phase {peak["phase"]}')
  return f'| {name} | {paper} | ' + ' | '.join(cells) + f' |{extra} |'


def main(argv):
  del argv
  rows = VANILLA_ROWS if _PART.value == 'vanilla' else AUX_ROWS
  table = []
  for slug, name, paper, binary, flag_list in rows:
    records = []
    for seed in _SEEDS.value:
      workdir = os.path.join(_RUNS_DIR.value, _PART.value, f'{slug}_seed{seed}')
      _run(binary, [*flag_list, f'--seed={seed}'], workdir)  # a finished run only re-plots
      with open(os.path.join(workdir, formats.METRICS_FILE)) as f:
        records.append([json.loads(line) for line in f])
    table.append(_row(name, paper, records))
  header = ' | '.join(f'seed {s}: L_SR / rho / {"acc / " if _PART.value == "aux" else ""}RMS'
                      for s in _SEEDS.value)
  print(f'\n| experiment | paper | {header} | notes |')
  print('|' + '---|' * (3 + len(_SEEDS.value)))
  print('\n'.join(table))


if __name__ == '__main__':
  app.run(main)
