r"""Regenerates the zoo's pretrained quines (models/pretrained/) and their catalogue; a dry run by default.

For every entry of ENTRIES: run its one command (a trainer, or the fixed-point solver's script)
into `--runs_dir/<name>` (a trainer resumes a finished run at once), write the result as a
weights-only dump (manifest.json + weights.safetensors; no timestamps, no paths of this machine),
and measure it from those files: L_SR, rho, R^2, weight RMS (TensorFlow, float32), MNIST test
accuracy for auxiliary quines, and for vanilla ones the spectral radius of regeneration and how
many of 300 generations stay quines (`models.stability`). Then compare with what is shipped.

Without --write nothing in the repository changes: the script prints, per entry, whether the
files are identical and which numbers differ. With --write it replaces the entries' folders, the
catalogue (models/pretrained/catalogue.json), the table in docs/PRETRAINED.md and each entry's plot
of weights against predictions (docs/img/pretrained/<name>.png).

  TFDS_DATA_DIR=../shared/tfds python scripts/pretrained.py                  # dry run, all
  python scripts/pretrained.py --only=exact_w5,exact_w10                     # two, dry run
  TFDS_DATA_DIR=../shared/tfds python scripts/pretrained.py --write          # regenerate
  python scripts/pretrained.py --write --notrain --only=paper_adamax         # from runs_dir
"""

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np

import formats
from export import dump as dump_lib
from export import frameworks
from export import replication
from models import zoo
from models.config import ModelConfig

_RUNS_DIR = flags.DEFINE_string('runs_dir', 'runs/pretrained', 'Where the commands run.')
_ONLY = flags.DEFINE_list('only', None, 'Entries to regenerate (default: all).')
_WRITE = flags.DEFINE_bool('write', False, 'Replace the shipped files, catalogue and docs table '
                           '(default: a dry run that reports what differs).')
_TRAIN = flags.DEFINE_bool('train', True, 'Run the commands (--notrain: use what --runs_dir '
                           'already holds).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'tfds data dir with mnist/3.0.1 (default: '
                                'TFDS_DATA_DIR).')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, 'docs', 'PRETRAINED.md')
PLOTS = os.path.join(REPO, 'docs', 'img', 'pretrained')  # <name>.png: weights vs predictions
STABILITY_GENERATIONS = 300
# What the catalogue's numbers are checked against (tests/test_zoo.py): TensorFlow recomputes them
# to float32 round-off; NumPy and the float64 spectrum agree to these.
TOLERANCES = {'rtol': 1e-3, 'rho_atol': 1e-9, 'accuracy_atol': 2e-4,
              'spectral_radius_rtol': 1e-2, 'fertile_generations_atol': 2}

_FIND_QUINE = 'experiments/find_quine.py'


@dataclasses.dataclass(frozen=True)
class Entry:
  """One pretrained quine: its name, what it is, and the command that makes it.

  `command` is run from the repository root with {workdir} replaced by the run's folder; a
  experiments/find_quine.py command leaves theta_<run>.npy and config_<run>.json in it, a trainer a
  workdir with checkpoints.
  """
  name: str
  summary: str
  command: str
  method: str
  run: str = ''  # find_quine's file stem

  def argv(self, workdir):
    return [sys.executable] + shlex.split(self.command.format(workdir=workdir))[1:]


_EXACT_W5 = ('python experiments/find_quine.py --width=5 --seeds=0 --schedule=0.3,0.1,0.03,0.01,'
             '0.003,0 --search_steps=40 --stage_steps=10 --cg_iterations=60 --max_steps=160 '
             '--log_every=0 --out_dir={workdir} --img_dir={workdir}')
# Width 10 does better with the default (width-100) smoothing schedule than with width 5's (rho
# 8e-10 against 1e-4 after 200 steps).
_EXACT_W10 = ('python experiments/find_quine.py --width=10 --seeds=0 --search_steps=40 '
              '--stage_steps=15 --max_steps=200 --log_every=0 --out_dir={workdir} '
              '--img_dir={workdir}')

ENTRIES = (
    Entry('paper_adamax', 'The paper\'s vanilla quine as the paper trains it (Adamax, 30 epochs '
          'of minibatches of 10 against frozen targets): the loss falls because the weights '
          'shrink; it does not replicate (rho ~1).',
          'python trainers/train_vanilla.py --workdir={workdir} --preset=paper',
          'optimize, Adamax 2e-3, 30 epochs'),
    Entry('paper_alternate', 'The paper\'s best vanilla method: one Adamax epoch, then one '
          'regeneration, 10 times (T = 1, G = 10). Regeneration shrinks the weights to a tenth: '
          'rho = 1.',
          'python trainers/train_vanilla.py --workdir={workdir} --preset=paper_alternate',
          'alternate, T = 1, G = 10, Adamax'),
    *(Entry(f'fixed_point_w100_s{seed}', f'A non-trivial quine of the paper\'s size and '
            f'architecture (SELU, linear output, no biases), seed {seed}: the fixed-point '
            'solver (Levenberg-Marquardt with smoothing continuation). An unstable fixed point '
            'of regeneration: its child is not a quine.',
            f'python trainers/train_vanilla.py --workdir={{workdir}} --method=fixed_point '
            f'--seed={seed}', 'fixed_point, 80 LM iterations')
      for seed in (0, 1, 2)),
    Entry('exact_w5', 'An exact fixed point at width 5 (N = 55): rho at float32 round-off; its '
          'descendants stay quines until round-off, amplified by regeneration (spectral radius '
          '> 1), grows past rho = 1e-3.', _EXACT_W5,
          'fixed_point (float64), 160 LM steps, wide smoothing', run='fixed_point_w5_s0'),
    Entry('exact_w10', 'A near-exact fixed point at width 10 (N = 210).', _EXACT_W10,
          'fixed_point (float64), 200 LM steps', run='fixed_point_w10_s0'),
    Entry('stable_w4', 'A fertile quine (N = 36): weight-standardised tanh hidden layers and a '
          'tanh output (--preset=stable_w4), a contracting fixed point of regeneration (spectral '
          'radius < 1): all 300 descendants are quines and perturbed copies return.',
          'python trainers/train_vanilla.py --workdir={workdir} --preset=stable_w4',
          'fixed_point, 80 LM iterations'),
    Entry('stable_w142', 'A fertile quine of the paper\'s size (N = 20,306): one '
          'weight-standardised ReLU hidden layer of 142 and a tanh output (--preset=stable). The '
          'paper\'s regeneration finds it from the initial weights: an attracting fixed point '
          '(spectral radius 0.67), so all 300 descendants are quines and perturbed copies return.',
          'python trainers/train_vanilla.py --workdir={workdir} --preset=stable',
          'regenerate, 100 generations'),
    Entry('aux_paper', 'The paper\'s auxiliary quine (classifies MNIST and predicts its weights), '
          'trained as the paper trains it: 30 Adamax epochs, lambda = 0.01. It classifies; it '
          'does not replicate (rho ~1).',
          'python trainers/train_aux.py --workdir={workdir} --preset=paper',
          'optimize, Adamax 2e-3, 30 epochs, lambda 0.01'),
    Entry('aux_replicate', 'The same auxiliary network trained to replicate and classify: rho + '
          'cross-entropy with live targets, lambda = 1.',
          'python trainers/train_aux.py --workdir={workdir} --preset=replicate',
          'replicate, Adam 3e-3 cosine, 40,000 steps, lambda 1'),
)


# --------------------------------------------------------------------------- making and measuring


def run_command(entry, workdir):
  """Runs the entry's command from the repository root; its output goes to <workdir>.log."""
  argv = entry.argv(workdir)
  log = workdir.rstrip(os.sep) + '.log'
  print(f'[{entry.name}] {shlex.join(argv[1:])}  (log: {log})', flush=True)
  start = time.time()
  with open(log, 'w') as f:
    status = subprocess.call(argv, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
  if status:
    sys.exit(f'pretrained.py: error: {entry.name}: the command exited with {status}; see {log}')
  print(f'[{entry.name}] done in {time.time() - start:.0f} s', flush=True)


def trained_weights(entry, workdir):
  """(ModelConfig, theta float32 [N]) that the entry's command left in `workdir`."""
  if entry.run:
    with open(os.path.join(workdir, f'config_{entry.run}.json')) as f:
      config = ModelConfig.from_dict(json.load(f))
    return config, np.load(os.path.join(workdir, f'theta_{entry.run}.npy')).astype(np.float32)
  from export import exporter  # pylint: disable=g-import-not-at-top
  model, _ = exporter.load_model(workdir)
  return model.config, model.flatten().numpy()


def write_entry_dump(entry, config, theta, directory):
  """The weights-only dump of a pretrained quine (bit-for-bit a function of config and theta)."""
  dump_lib.write_dump(directory, config.to_dict(), theta, None,
                      lineage={'generation': 0, 'parent': None, 'built_with': 'tensorflow'},
                      source={'pretrained': entry.name, 'command': entry.command})
  return dump_lib.read_dump(directory, require_onnx=False)


def measure(dump, images=None, labels=None):
  """(The catalogue's numbers of a dump, from its files, in TensorFlow (float32); its plot.)"""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from models import build_quine  # pylint: disable=g-import-not-at-top
  model = frameworks.keras_model(dump)
  predictions = model.predict_weights(tf.range(dump.num_weights, dtype=tf.int64)).numpy()
  row = replication.metrics(dump.theta, predictions)
  numbers = {k: row[k] for k in ('l_sr', 'rho', 'r2', 'weight_rms')}
  initial = build_quine(model.config).flatten().numpy()
  numbers['initial_weight_rms'] = float(np.sqrt(np.mean(initial.astype(np.float64) ** 2)))
  if images is not None and dump.classifies:
    numbers['test_accuracy'] = replication.accuracy(model.classify(images).numpy(), labels)
  if not dump.classifies:
    numbers.update(stability_numbers(model))
  from trainers import plots  # pylint: disable=g-import-not-at-top
  name = dump.manifest['source']['pretrained']
  png = plots.weights_vs_predictions_png(
      dump.theta, predictions, f'{name}: N = {dump.num_weights:,}, rho = {numbers["rho"]:.3g}, '
      f'weight RMS {numbers["weight_rms"]:.3g}')
  return numbers, png


def stability_numbers(model):
  """Spectral radius of regeneration (ARPACK, float64) and fertile generations (of 300)."""
  from models import stability  # pylint: disable=g-import-not-at-top
  values = stability.outer_eigenvalues(stability.Jacobian(model), k=6)
  line = stability.lineage(stability.regeneration_pass(model), model.flatten().numpy(),
                           STABILITY_GENERATIONS)
  return {'spectral_radius': float(np.abs(values[0])),
          'fertile_generations': int(line['fertile_generations']),
          'lineage_generations_tried': STABILITY_GENERATIONS}


def catalogue_entry(entry, dump, numbers):
  config = dump.architecture.config
  files = {name: dump.manifest['files'][name] if name != dump_lib.MANIFEST_FILE else
           {'bytes': os.path.getsize(os.path.join(dump.path, name)),
            'sha256': dump_lib.sha256_file(os.path.join(dump.path, name))}
           for name in (dump_lib.MANIFEST_FILE, dump_lib.WEIGHTS_FILE)}
  return {
      'name': entry.name, 'kind': config.kind, 'summary': entry.summary,
      'architecture': {'width': config.width, 'num_hidden': config.num_hidden,
                       'activation': config.activation,
                       'output_activation': config.output_activation,
                       'num_weights': config.num_weights,
                       **({'kernel_norm': config.kernel_norm}
                          if config.kernel_norm != 'none' else {})},
      'method': entry.method, 'command': entry.command.format(
          workdir=f'runs/pretrained/{entry.name}'),
      'metrics': numbers, 'files': files}


# --------------------------------------------------------------------------- comparing, writing


def differences(old, new):
  """Lines saying how catalogue entry `new` differs from the shipped `old` (None: not shipped)."""
  if old is None:
    return ['not shipped yet']
  lines = []
  for key in sorted(set(old['metrics']) | set(new['metrics'])):
    a, b = old['metrics'].get(key), new['metrics'].get(key)
    if a != b:
      lines.append(f'{key}: shipped {a!r}, now {b!r}')
  for name, info in new['files'].items():
    if old['files'].get(name) != info:
      lines.append(f'{name}: sha256 {old["files"].get(name, {}).get("sha256", "-")[:12]}... -> '
                   f'{info["sha256"][:12]}...')
  for key in ('summary', 'command', 'method', 'architecture'):
    if old.get(key) != new.get(key):
      lines.append(f'{key} changed')
  return lines


def _fmt(value, digits=3):
  if value is None:
    return '-'
  if isinstance(value, int):
    return str(value)
  return f'{value:.{digits}g}'


def markdown_table(entries):
  """The catalogue as the table docs/PRETRAINED.md shows."""
  rows = ['| name | kind | width x layers, activation | N | L_SR | rho | R^2 | weight RMS '
          '(initial) | MNIST test acc. | spectral radius | fertile generations |',
          '|---|---|---|---|---|---|---|---|---|---|---|']
  for e in entries:
    a, m = e['architecture'], e['metrics']
    fertile = (f'{m["fertile_generations"]} / {m["lineage_generations_tried"]}'
               if 'fertile_generations' in m else '-')
    accuracy = f'{100 * m["test_accuracy"]:.2f}%' if 'test_accuracy' in m else '-'
    rows.append(
        f'| `{e["name"]}` | {e["kind"]} | {a["width"]} x {a["num_hidden"]}, {a["activation"]}'
        f'{" (" + a["kernel_norm"] + "d)" if "kernel_norm" in a else ""} '
        f'({a["output_activation"]} out) | {a["num_weights"]:,} | {_fmt(m["l_sr"])} | '
        f'{_fmt(m["rho"])} | {_fmt(m["r2"], 4)} | {_fmt(m["weight_rms"])} '
        f'({_fmt(m["initial_weight_rms"])}) | {accuracy} | {_fmt(m.get("spectral_radius"))} | '
        f'{fertile} |')
  rows.append('')
  rows.append('| name (its plot) | method | command |')
  rows.append('|---|---|---|')
  for e in entries:
    rows.append(f'| [`{e["name"]}`](img/pretrained/{e["name"]}.png) | {e["method"]} | '
                f'`{e["command"]}` |')
  return '\n'.join(rows)


_BEGIN = '<!-- catalogue table: generated by scripts/pretrained.py --write -->'
_END = '<!-- end of the generated table -->'


def write_doc_table(entries, path=DOC):
  with open(path) as f:
    text = f.read()
  if _BEGIN not in text or _END not in text:
    sys.exit(f'pretrained.py: error: {path} lacks the markers {_BEGIN!r} ... {_END!r}')
  head, rest = text.split(_BEGIN, 1)
  _, tail = rest.split(_END, 1)
  with open(path, 'w') as f:
    f.write(f'{head}{_BEGIN}\n{markdown_table(entries)}\n{_END}{tail}')


def write_catalogue(entries, directory=zoo.PRETRAINED_DIR):
  path = os.path.join(directory, zoo.CATALOGUE_FILE)
  formats.write_atomic(path, formats.to_json(
      {'format': zoo.CATALOGUE_FORMAT, 'tolerances': TOLERANCES, 'entries': entries},
      indent=2) + '\n')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'stray arguments: {argv[1:]}')
  names = [e.name for e in ENTRIES]
  unknown = sorted(set(_ONLY.value or []) - set(names))
  if unknown:
    sys.exit(f'pretrained.py: error: --only names {unknown}; the entries are {names}')
  chosen = [e for e in ENTRIES if not _ONLY.value or e.name in _ONLY.value]
  images = labels = None
  if any('train_aux' in e.command for e in chosen):
    try:
      images, labels = replication.load_mnist_test(_DATA_DIR.value)
    except replication.DataError as e:
      sys.exit(f'pretrained.py: error: {e}')
  try:
    shipped = zoo.catalogue()
  except zoo.PretrainedError:
    shipped = {}
  runs_dir = os.path.abspath(_RUNS_DIR.value)
  os.makedirs(runs_dir, exist_ok=True)
  staging = tempfile.mkdtemp(prefix='.pretrained-', dir=runs_dir)
  made, pngs, changed = {}, {}, []
  try:
    for entry in chosen:
      workdir = os.path.join(runs_dir, entry.name)
      if _TRAIN.value:
        run_command(entry, workdir)
      config, theta = trained_weights(entry, workdir)
      dump = write_entry_dump(entry, config, theta, os.path.join(staging, entry.name))
      numbers, pngs[entry.name] = measure(dump, images, labels)
      made[entry.name] = catalogue_entry(entry, dump, numbers)
      lines = differences(shipped.get(entry.name), made[entry.name])
      m = made[entry.name]['metrics']
      print(f'[{entry.name}] L_SR {m["l_sr"]:.6g}, rho {m["rho"]:.4g}, R^2 {m["r2"]:.4g}, '
            f'weight RMS {m["weight_rms"]:.4g}: '
            + ('identical to the shipped files' if not lines else '; '.join(lines)), flush=True)
      if lines:
        changed.append(entry.name)
    if not _WRITE.value:
      print(f'Dry run: {len(changed)} of {len(chosen)} entries differ from models/pretrained/ '
            f'({", ".join(changed) or "none"}); --write replaces them.')
      return
    for name in made:
      target = zoo.pretrained_dir(name) if name in shipped else os.path.join(
          zoo.PRETRAINED_DIR, name)
      with dump_lib.atomic_directory(target, overwrite=True) as tmp:
        for filename in (dump_lib.MANIFEST_FILE, dump_lib.WEIGHTS_FILE):
          shutil.copy(os.path.join(staging, name, filename), tmp)
      os.makedirs(PLOTS, exist_ok=True)
      with open(os.path.join(PLOTS, f'{name}.png'), 'wb') as f:
        f.write(pngs[name])
    entries = [made.get(n) or shipped[n] for n in names if n in made or n in shipped]
    write_catalogue(entries)
    write_doc_table(entries)
    print(f'Wrote {len(made)} entries into {zoo.PRETRAINED_DIR}, its catalogue and {DOC}')
  finally:
    shutil.rmtree(staging, ignore_errors=True)


if __name__ == '__main__':
  app.run(main)
