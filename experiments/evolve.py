r"""Natural selection among quines: a population that reproduces by regeneration, with a control.

  python experiments/evolve.py --workdir=runs/evolve --data_dir=../shared/tfds
  python experiments/evolve.py --workdir=runs/evolve_aux --ancestor=aux_replicate --mutation=0.01
  tensorboard --logdir=runs/evolve

Every generation, in both arms (`selection`: tournament on validation accuracy; `control`: the
same tournaments' first entrants, i.e. random parents), each parent's offspring is its own
prediction of its weights plus a mutation, developed by `--development` regenerations into an
adult; adults that are not quines (rho > 1e-3) leave no offspring (experiments/evolve_lib.py).

Writes into --workdir: config.json; metrics.jsonl (a line per generation and arm: fitness mean,
best and spread, share of quines, diversity, attractors, heritability); tensorboard/;
checkpoint.npz (the populations, fitness and phylogeny after the last finished generation: a
killed run loses at most the generation in flight, and rerunning the command resumes);
plots/{fitness,heritability,phylogeny}.png; exports/<arm>-g<generation>-<k>/1 (SavedModel + dump,
what the zoo's replication command reads) for generation 0 and the last, k = 0..num_exports-1
adults drawn at random and k = best; population.safetensors with population.json, the final
populations stacked ([P, N] per arm) with their architecture.

--strategy=mirrored shards each arm's population over the local GPUs (or --cpu_devices logical
CPUs): every replica develops and assesses P / replicas individuals.
"""

import dataclasses
import io
import json
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np

import formats

_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder of the run (resumed when it holds one).')
_POPULATION = flags.DEFINE_integer('population', 32, 'P, individuals per arm.')
_GENERATIONS = flags.DEFINE_integer('generations', 20, 'Generations to run.')
_MUTATION = flags.DEFINE_float('mutation', 0.05, 'Relative size of a mutation, '
                               '||delta|| / ||f_theta(C)||.')
_DEVELOPMENT = flags.DEFINE_integer('development', 2, 'Regenerations of an offspring before it '
                                    'is an adult.')
_TOURNAMENT = flags.DEFINE_integer('tournament', 4, 'Entrants per tournament (selection arm).')
_NUM_VALIDATION = flags.DEFINE_integer('num_validation', 2000, 'Validation images (the last of '
                                       "MNIST's training split) each adult is scored on.")
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of initialisations, mutations and tournaments.')
_INITIAL_DEVELOPMENT = flags.DEFINE_integer(
    'initial_development', 100, 'Regenerations of each initial individual before generation 0.')
_PRESET = flags.DEFINE_enum('preset', 'lineage',
                            ['lineage', 'lineage_saturated', 'replicate', 'tiny'],
                            "The individuals' architecture: an auxiliary preset of "
                            'trainers/configs.py (tiny: for tests, not MNIST; ignored with '
                            '--ancestor).')
_ANCESTOR = flags.DEFINE_string('ancestor', None, 'An auxiliary quine whose mutated copies are '
                                'generation 0: a pretrained name or an export / dump folder '
                                '(default: random initialisations of --preset).')
_NUM_EXPORTS = flags.DEFINE_integer('num_exports', 8, 'Adults exported at random per arm at '
                                    'generation 0 and at the last (besides the best).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'tfds data dir holding mnist/3.0.1 (default: '
                                'TFDS_DATA_DIR).')
_STRATEGY = flags.DEFINE_enum('strategy', 'default', ['default', 'one_device', 'mirrored'],
                              'tf.distribute strategy the population is sharded over: mirrored '
                              'splits it across all local GPUs (or --cpu_devices).')
_CPU_DEVICES = flags.DEFINE_integer('cpu_devices', 0, 'Split the CPU into this many logical '
                                    'devices (to try --strategy=mirrored without GPUs).',
                                    lower_bound=0)

CHECKPOINT = 'checkpoint.npz'
PLOTS = ('fitness', 'heritability', 'phylogeny')


def _fail(message):
  sys.exit(f'evolve.py: error: {message}')


def _config():
  from experiments import evolve_lib  # pylint: disable=g-import-not-at-top
  config = evolve_lib.EvolveConfig(
      population=_POPULATION.value, generations=_GENERATIONS.value, mutation=_MUTATION.value,
      development=_DEVELOPMENT.value, tournament=_TOURNAMENT.value,
      num_validation=_NUM_VALIDATION.value, initial_development=_INITIAL_DEVELOPMENT.value,
      seed=_SEED.value)
  return config.validate()


def _model_config():
  from models import zoo  # pylint: disable=g-import-not-at-top
  from trainers import configs  # pylint: disable=g-import-not-at-top
  from trainers import data as data_lib  # pylint: disable=g-import-not-at-top
  from export import dump as dump_lib  # pylint: disable=g-import-not-at-top
  from models.config import ModelConfig  # pylint: disable=g-import-not-at-top
  if _ANCESTOR.value:
    name = _ANCESTOR.value
    if os.path.isdir(name):
      dump = dump_lib.read_dump(dump_lib.find_dump(name), require_onnx=False)
    else:
      dump = dump_lib.read_dump(zoo.pretrained_dir(name), require_onnx=False)
    config = ModelConfig.from_dict(dump.config)
    if not config.classifies:
      raise ValueError(f'--ancestor={name} does not classify: evolution scores MNIST accuracy')
    data_lib.check_fits_mnist(config, name)
    return config, np.asarray(dump.theta, np.float32)
  model_config = configs.AUX_PRESETS[_PRESET.value].model
  data_lib.check_fits_mnist(model_config, _PRESET.value)
  return model_config, None


def _resumable(run_config):
  """What must match for a workdir to be resumed: everything but the generations to run."""
  return dict(run_config, evolve=dict(run_config['evolve'], generations=None))


def _save_checkpoint(workdir, generation, state, history):
  arrays = {'generation': np.array(generation)}
  for arm, (adults, predictions, rhos, fitness) in state.items():
    arrays.update({f'{arm}/adults': adults, f'{arm}/predictions': predictions,
                   f'{arm}/rho': rhos, f'{arm}/fitness': fitness})
  for key, value in history.items():
    arrays[key] = np.asarray(value)
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  formats.write_atomic(os.path.join(workdir, CHECKPOINT), buffer.getvalue())


def _load_checkpoint(workdir, arms):
  with np.load(os.path.join(workdir, CHECKPOINT)) as data:
    state = {arm: tuple(data[f'{arm}/{k}'] for k in ('adults', 'predictions', 'rho', 'fitness'))
             for arm in arms}
    history = {k: list(data[k]) for k in data.files if k.startswith('history/')}
    return int(data['generation']), state, history


def _labelled(fig, axis, xlabel, ylabel, title):
  axis.set_xlabel(xlabel)
  axis.set_ylabel(ylabel)
  axis.set_title(title)
  axis.legend()
  return fig


def _figures(records, history, arms):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  def png(fig):
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=90)
    plt.close(fig)
    return buffer.getvalue()

  out = {}
  fig, axis = plt.subplots(figsize=(7, 4.5), layout='constrained')
  for arm, colour in zip(arms, ('tab:red', 'tab:blue')):
    rows = [r for r in records if r['arm'] == arm]
    g = [r['generation'] for r in rows]
    mean = np.array([r['fitness_mean'] for r in rows])
    spread = np.array([r['fitness_std'] for r in rows])
    axis.plot(g, mean, color=colour, label=f'{arm}: mean')
    axis.fill_between(g, mean - spread, mean + spread, color=colour, alpha=0.2)
    axis.plot(g, [r['fitness_best'] for r in rows], color=colour, linestyle='--',
              label=f'{arm}: best')
  out['fitness'] = png(_labelled(fig, axis, 'generation', 'validation accuracy',
                                 'fitness (band: mean +- std)'))

  fig, axis = plt.subplots(figsize=(5.5, 5), layout='constrained')
  fitness = history['history/selection/fitness']
  parents = history['history/selection/parents']
  for g in range(1, len(fitness)):
    axis.scatter(fitness[g - 1][parents[g - 1]], fitness[g], s=8, alpha=0.5,
                 color=matplotlib.colormaps['viridis'](g / max(1, len(fitness) - 1)))
  axis.set_xlabel('parent fitness')
  axis.set_ylabel('offspring fitness')
  axis.set_title('selection arm: offspring on parent (colour: generation)')
  out['heritability'] = png(fig)

  fig, axis = plt.subplots(figsize=(7, 4.5), layout='constrained')
  for arm, colour in zip(arms, ('tab:red', 'tab:blue')):
    fitness = history[f'history/{arm}/fitness']
    parents = history[f'history/{arm}/parents']
    index = int(np.argmax(fitness[-1]))
    line = [index]
    for g in range(len(parents) - 1, -1, -1):
      index = int(parents[g][index])
      line.append(index)
    axis.plot(range(len(line) - 1, -1, -1), line, color=colour, marker='.',
              label=f'{arm}: ancestors of the final best')
  out['phylogeny'] = png(_labelled(fig, axis, 'generation', 'individual',
                                   'phylogeny of the final best'))
  return out


def _export(model_config, workdir, arm, generation, adults, fitness, count, seed):
  from export import exporter  # pylint: disable=g-import-not-at-top
  from models.quine import build_quine  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng([seed, generation, 0 if arm == 'selection' else 1])
  picks = rng.choice(len(adults), size=min(count, len(adults)), replace=False)
  chosen = [(str(k), i) for k, i in enumerate(picks)] + [('best', int(np.argmax(fitness)))]
  model = build_quine(model_config)
  for k, index in chosen:
    model.assign_flat(adults[index])
    exporter.export_model(model, os.path.join(workdir, 'exports'), f'{arm}-g{generation}-{k}',
                          version=1, overwrite=True,
                          source={'evolve': {'arm': arm, 'generation': generation,
                                             'individual': int(index),
                                             'fitness': float(fitness[index])}})


def _records_until(metrics_path, generation):
  """The metrics lines up to `generation` (a line cut by a kill comes after it: dropped)."""
  records = []
  with open(metrics_path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        pass
  return [r for r in records if r['generation'] <= generation]


def _summaries(writer, lines, generation):
  """One generation's records as TensorBoard scalars <arm>/<metric>."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with writer.as_default(step=generation):
    for record in lines:
      arm = record['arm']
      for key in ('fitness_mean', 'fitness_best', 'fitness_std', 'quine_share', 'diversity',
                  'attractors'):
        tf.summary.scalar(f'{arm}/{key}', record[key])
      if record['heritability']['slope'] is not None:
        tf.summary.scalar(f'{arm}/heritability', record['heritability']['slope'])


def _finish(workdir, model, model_config, config, data, state, history, records):
  """The last generation's exports, its test accuracy, summary.json, the population and plots."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from experiments import evolve_lib  # pylint: disable=g-import-not-at-top
  arms = evolve_lib.ARMS
  last = config.generations
  for arm in arms:
    _export(model_config, workdir, arm, last, state[arm][0], state[arm][3], _NUM_EXPORTS.value,
            config.seed)
  # The test split, never seen by selection, confirms the last generation's fitness.
  tested = evolve_lib.Population(model, data.test_images, data.test_labels,
                                 config.coordinate_chunk)
  test_accuracy = {arm: np.concatenate([
      tested.fitness(tf.constant(state[arm][0][i:i + 32])).numpy()
      for i in range(0, config.population, 32)]) for arm in arms}
  pooled = {arm: evolve_lib.heritability(
      np.concatenate([f[p] for f, p in zip(history[f'history/{arm}/fitness'][:-1],
                                           history[f'history/{arm}/parents'])] or [[]]),
      np.concatenate(history[f'history/{arm}/fitness'][1:] or [[]])) for arm in arms}
  formats.write_json_atomic(os.path.join(workdir, 'summary.json'), formats.finite_or_none({
      'generations': last, 'pooled_heritability': pooled,
      'final': {arm: records[-2 + i] for i, arm in enumerate(arms)},
      'final_test_accuracy': {arm: {'mean': float(np.mean(a)), 'best': float(np.max(a)),
                                    'of_the_validation_best': float(a[np.argmax(state[arm][3])])}
                              for arm, a in test_accuracy.items()}}))
  tensors = {f'{arm}/theta': state[arm][0] for arm in arms}
  formats.write_atomic(os.path.join(workdir, 'population.safetensors'),
                       formats.encode_safetensors(tensors))
  formats.write_json_atomic(os.path.join(workdir, 'population.json'), {
      'config': model_config.to_dict(), 'tensors': {k: list(v.shape) for k, v in tensors.items()},
      'generation': last, 'fitness': {arm: state[arm][3].tolist() for arm in arms}})
  plot_dir = os.path.join(workdir, formats.PLOTS_DIR)
  os.makedirs(plot_dir, exist_ok=True)
  for name, data_png in _figures(records, history, arms).items():
    formats.write_atomic(os.path.join(plot_dir, f'{name}.png'), data_png)
  for arm in arms:
    h = pooled[arm]
    slope = ('-' if h['slope'] is None
             else f'{h["slope"]:.3f} [{h["low"]:.3f}, {h["high"]:.3f}]')
    print(f'{arm}: final validation mean {records[-2 + arms.index(arm)]["fitness_mean"]:.2%}, '
          f'test mean {np.mean(test_accuracy[arm]):.2%}, pooled heritability {slope} '
          f'(n = {h["n"]})')
  print(f'Wrote {workdir}/{{metrics.jsonl, summary.json, plots/, exports/, '
        'population.safetensors}')

def main(argv):
  if len(argv) > 1:
    _fail(f'unexpected arguments {argv[1:]}')
  if not _WORKDIR.value:
    _fail('--workdir is required (the folder of the run)')
  try:
    config = _config()
    model_config, ancestor = _model_config()
  except ValueError as e:  # zoo.PretrainedError too
    _fail(e)
  # The populations, their predictions and the next ones, in both arms: 8 [P, N] float32 arrays.
  needed = 8 * 4 * config.population * model_config.num_weights
  available = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  if needed > available:
    _fail(f'--population={config.population} needs about {needed / 2**30:.1f} GiB for '
          f'{model_config.num_weights:,} weights per quine; this machine has '
          f'{available / 2**30:.1f} GiB')
  workdir = _WORKDIR.value
  try:
    formats.check_writable(workdir)
  except formats.FormatError as e:
    _fail(f'--workdir={workdir}: {str(e).partition(": ")[2]}')
  # TensorFlow only now that the command line is known to be good; the strategy before any op.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from trainers import strategies  # pylint: disable=g-import-not-at-top
  strategy = strategies.make_strategy(_STRATEGY.value, cpu_devices=_CPU_DEVICES.value)
  if config.population % strategy.num_replicas_in_sync:
    _fail(f'--population={config.population} must be a multiple of the '
          f'{strategy.num_replicas_in_sync} replicas of --strategy={_STRATEGY.value}')
  from experiments import evolve_lib  # pylint: disable=g-import-not-at-top
  from models.quine import build_quine  # pylint: disable=g-import-not-at-top
  from trainers import data as data_lib  # pylint: disable=g-import-not-at-top
  from trainers import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  run_config = {'evolve': dataclasses.asdict(config), 'model': model_config.to_dict(),
                'ancestor': _ANCESTOR.value}
  os.makedirs(workdir, exist_ok=True)
  config_path = os.path.join(workdir, formats.CONFIG_FILE)
  if os.path.exists(config_path):
    with open(config_path) as f:
      held = json.load(f)
    if _resumable(held) != _resumable(run_config):
      _fail(f'{workdir} holds another run (its {formats.CONFIG_FILE} differs); use another '
            '--workdir (only --generations may change)')
  try:
    data = data_lib.load_mnist(_DATA_DIR.value)
  except data_lib.DataError as e:
    _fail(e)
  if not 0 < config.num_validation < len(data.train_labels):
    _fail(f'--num_validation={config.num_validation} must be below the '
          f'{len(data.train_labels)} training images')
  formats.write_json_atomic(config_path, run_config, sort_keys=True)  # once the run can start
  images = data.train_images[-config.num_validation:]
  labels = data.train_labels[-config.num_validation:]
  model = build_quine(model_config)
  engine = evolve_lib.Engine(model, config, images, labels, strategy)
  arms = evolve_lib.ARMS

  metrics_path = os.path.join(workdir, formats.METRICS_FILE)
  if os.path.exists(os.path.join(workdir, CHECKPOINT)):
    start, state, history = _load_checkpoint(workdir, arms)
    records = _records_until(metrics_path, start)
    print(f'resuming after generation {start}', flush=True)
  else:
    if ancestor is not None:
      copies = evolve_lib.mutate(tf.constant(np.tile(ancestor, (config.population, 1))),
                                 config.mutation, tf.constant([config.seed, -1], tf.int64))
      initial = engine.develop(copies, config.initial_development).numpy()
    else:
      initial = engine.initial(model_config)
    assessed = tuple(x.numpy() for x in engine.assess(initial))
    state = {arm: (initial, *assessed) for arm in arms}
    start, records = 0, []
    history = {}
    for arm in arms:
      history[f'history/{arm}/fitness'] = [state[arm][3]]
      history[f'history/{arm}/parents'] = []
      records.append(evolve_lib.arm_record(arm, 0, state[arm], None, None, config.distinct))
      _export(model_config, workdir, arm, 0, state[arm][0], state[arm][3], _NUM_EXPORTS.value,
              config.seed)
    _save_checkpoint(workdir, 0, state, history)
  formats.write_atomic(metrics_path, ''.join(formats.to_json(r) + '\n' for r in records))

  # Scalars of generations after the checkpoint (a run killed in between) would show twice.
  workdir_lib.truncate_tensorboard(workdir, start)
  writer = tf.summary.create_file_writer(os.path.join(workdir, formats.TENSORBOARD_DIR))
  for generation in range(start, config.generations):
    began = time.perf_counter()
    previous = {arm: state[arm][3] for arm in arms}
    state, parents = engine.step(state, generation)
    seconds = time.perf_counter() - began
    lines = []
    for arm in arms:
      history[f'history/{arm}/fitness'].append(state[arm][3])
      history[f'history/{arm}/parents'].append(parents[arm])
      record = evolve_lib.arm_record(arm, generation + 1, state[arm], parents[arm],
                                     previous[arm], config.distinct)
      record['seconds'] = seconds
      lines.append(record)
    _summaries(writer, lines, generation + 1)
    records += lines
    # The lines first: a run killed before the checkpoint redoes this generation and rewrites
    # them; killed after, it resumes from here.
    with open(metrics_path, 'a') as f:
      f.writelines(formats.to_json(r) + '\n' for r in lines)
    _save_checkpoint(workdir, generation + 1, state, history)
    print(f'generation {generation + 1}/{config.generations} ({seconds:.1f}s): ' + '; '.join(
        f'{r["arm"]} mean {r["fitness_mean"]:.2%} best {r["fitness_best"]:.2%} quines '
        f'{r["quine_share"]:.0%} attractors {r["attractors"]}' for r in lines), flush=True)
  writer.flush()

  _finish(workdir, model, model_config, config, data, state, history, records)



if __name__ == '__main__':
  app.run(main)
