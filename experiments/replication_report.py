"""The replication-and-lineage report of a dump, as text, JSON and a plot (what replicate.py runs).

Files written to the output folder:
  report.txt          the two tables printed by `run`
  report.json         every number of both tables, with the dump's path and the settings
  lineage.png         the lineage plot
  spectrum.png        the outer eigenvalues of J (vanilla quines, with a stability config)
  generation_<g>/     the dumps of generations 1..G
"""

import os

import formats
from experiments import lineage
from export import dump as dump_lib
from export import frameworks as frameworks_lib
from export import replication

REPORT_TEXT = 'report.txt'
REPORT_JSON = 'report.json'
LINEAGE_PNG = 'lineage.png'
SPECTRUM_PNG = 'spectrum.png'


def default_output_dir(dump_dir):
  """`<dump>.replication`, beside the version folder (TF Serving ignores non-numeric names)."""
  return os.path.abspath(dump_dir).rstrip(os.sep) + '.replication'


def fresh_directory(path):
  """`path` if it does not exist or is an empty folder, else the first free `path-2`, `path-3`...

  Reports are written beside earlier ones, never over them.
  """
  path = os.path.abspath(path).rstrip(os.sep)
  candidate, k = path, 1
  while os.path.exists(candidate) and not (os.path.isdir(candidate) and not os.listdir(candidate)):
    k += 1
    candidate = f'{path}-{k}'
  return candidate


def _describe(dump, source):
  c = dump.config
  shape = f'width {c["width"]}, {c["num_hidden"]} hidden {c["activation"]}'
  if c.get('kernel_norm', 'none') != 'none':
    shape += f' ({c["kernel_norm"]}d kernels), {c["output_activation"]} output'
  if dump.classifies:
    shape += f', {c["coordinate_units"]} coordinate units, {c["num_classes"]} classes'
  return f'{dump.kind} quine ({shape}), N = {dump.num_weights:,} weights, from {source}'


def run(dump_path, frameworks=frameworks_lib.FRAMEWORKS, generations=5,
        lineage_framework='torch', output_dir=None, images=None, labels=None, log=print,
        stability_config=None, source=None):
  """Replicates a dump in each framework, builds its lineage, writes and prints the report.

  Args:
    dump_path: a dump folder, or an exported model folder (its newest version is used).
    frameworks: frameworks to replicate in (and to re-import every generation in).
    generations: G, children to build.
    lineage_framework: the framework that builds the children.
    output_dir: where the report and the generations go; None: `<dump>.replication`. A folder
      that holds an earlier report is kept: the report goes to the first free `<output_dir>-k`.
    images: optional test images for an auxiliary quine's accuracy.
    labels: their labels.
    log: called with each block of text.
    stability_config: a `models.stability.StabilityConfig`: the report adds the spectrum of J,
      the fertile generations and the noise test (and spectrum.png; an auxiliary quine's test
      accuracy along them, given images); None: no stability section.
    source: what the report names as the quine's origin (default: the dump's folder); a
      pretrained quine exported into a temporary folder is named by its name, not by a folder
      that is gone when the report is read.

  Returns:
    The report dict (also written to report.json); report['agrees'] is False when some
    framework disagreed beyond float32 tolerance.

  Raises:
    export.dump.DumpError: the dump (or a generation written from it) is unusable.
  """
  dump = dump_lib.read_dump(dump_lib.find_dump(dump_path))
  output_dir = fresh_directory(output_dir or default_output_dir(dump.path))
  os.makedirs(output_dir, exist_ok=True)
  source = source or dump.path
  blocks = [_describe(dump, source)]
  log(blocks[-1])

  rows = replication.replicate(dump, frameworks, images, labels)
  blocks.append(f'Replication in {len(rows)} frameworks (predictions of all N coordinates; '
                f'agrees = theta identical and |diff| <= {replication.RTOL:g} x max|TF|):\n'
                + replication.format_table(rows, replication.REPLICATION_COLUMNS))
  log(blocks[-1])

  lineage_rows = lineage.build_lineage(dump, lineage_framework, generations, output_dir,
                                       check_frameworks=frameworks, images=images, labels=labels)
  diverged = [r['generation'] for r in lineage_rows if r.get('diverged')]
  blocks.append(f'Lineage: {generations} generations built with {lineage_framework}, each '
                f're-imported in {", ".join(frameworks)} (dumps in {output_dir}):\n'
                + replication.format_table(lineage_rows, lineage.LINEAGE_COLUMNS)
                + (f'\nLINEAGE DIVERGED: the child of generation {diverged[0]} has non-finite or '
                   f'overflowing weights (RMS > {lineage.DIVERGED_WEIGHT_RMS:g}); the quine\'s '
                   'descendants are not quines (no framework disagreement)' if diverged else ''))
  log(blocks[-1])

  title = f'{dump.kind} quine, N = {dump.num_weights:,}: lineage built with {lineage_framework}'
  formats.write_atomic(os.path.join(output_dir, LINEAGE_PNG),
                       lineage.lineage_png(lineage_rows, title))
  agrees = all(r['agrees'] for r in rows) and all(r.get('agrees', True) for r in lineage_rows)
  report = {'dump': source, 'frameworks': list(frameworks), 'generations': generations,
            'lineage_framework': lineage_framework,
            'num_test_images': None if images is None else len(images),
            'replication': rows, 'lineage': lineage_rows, 'agrees': agrees,
            'lineage_diverged_after': diverged[0] if diverged else None}
  if stability_config is not None:
    report['stability'] = _stability(dump, stability_config, output_dir, source, images, labels)
    from models import stability  # pylint: disable=g-import-not-at-top
    blocks.append('Stability of the fixed point (J = d f_theta(C) / d theta, TensorFlow, '
                  'float64):\n' + stability.summary_line(report['stability']))
    log(blocks[-1])
  formats.write_atomic(os.path.join(output_dir, REPORT_JSON), formats.to_json(report, indent=2))
  formats.write_atomic(os.path.join(output_dir, REPORT_TEXT), '\n\n'.join(blocks) + '\n')
  spectrum = ', spectrum.png' if 'stability' in report else ''
  log(f'Wrote {output_dir}/{{{REPORT_TEXT}, {REPORT_JSON}, {LINEAGE_PNG}{spectrum}, generation_*}}'
      + ('' if agrees else '\nSOME FRAMEWORKS DISAGREE (see the agrees column)'))
  return report


def _stability(dump, config, output_dir, source, images=None, labels=None):
  """models.stability.analyse on the quine rebuilt in TensorFlow; writes spectrum.png."""
  from models import stability  # pylint: disable=g-import-not-at-top
  from trainers import plots  # pylint: disable=g-import-not-at-top
  result = stability.analyse(frameworks_lib.keras_model(dump), config, images, labels)
  formats.write_atomic(os.path.join(output_dir, SPECTRUM_PNG),
                       plots.spectrum_png(result, title=source))
  return result

