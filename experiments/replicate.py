r"""Replicates an exported quine in TensorFlow, ONNX Runtime, PyTorch and NumPy; grows a lineage.

Reads a dump (manifest.json + weights.safetensors + model.onnx, as export_model.py writes), reports
L_SR, rho, R^2 and the weight RMS computed in each framework and the largest differences from
TensorFlow's numbers, then builds G generations (child = the parent's predictions) in one framework,
re-imports each in the others, and writes tables, report.json and lineage.png.

Examples (from the repository root):

  python experiments/replicate.py --dump=exports/vanilla            # newest version, 5 generations
  python experiments/replicate.py --dump=exports/aux/1 --data_dir=../shared/tfds --generations=3
  python experiments/replicate.py --dump=exports/vanilla/1 --frameworks=numpy,torch \
      --lineage_framework=numpy --output_dir=/tmp/lineage
  python experiments/replicate.py --pretrained=exact_w5 --generations=300  # -> exact_w5.replication

A pretrained quine (--pretrained=NAME, models.list_pretrained()) is exported into a temporary folder
first (SavedModel and ONNX rebuilt from its weights); its report goes to --output_dir, by default
<NAME>.replication in the current folder.

Exit status: 0 when every framework agrees, 1 when some disagree, 2 on a bad dump or data.
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # keep TensorFlow's C++ start-up notes out

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

import formats
from export import dump as dump_lib
from export import frameworks
from export import replication
from experiments import replication_report as report
from models import zoo

_DUMP = flags.DEFINE_string('dump', None, 'A dump folder, or an exported model folder (newest '
                            'version).')
_PRETRAINED = flags.DEFINE_string('pretrained', None, 'Name of a pretrained quine; instead of '
                                  '--dump.')
flags.register_multi_flags_validator(
    ['dump', 'pretrained'], lambda f: (f['dump'] is None) != (f['pretrained'] is None),
    message='give exactly one of --dump and --pretrained')
_FRAMEWORKS = flags.DEFINE_multi_enum('frameworks', list(frameworks.FRAMEWORKS),
                                      frameworks.FRAMEWORKS, 'Frameworks to replicate in.')
_GENERATIONS = flags.DEFINE_integer('generations', 5, 'Children to build (0: no lineage).',
                                    lower_bound=0)
_LINEAGE_FRAMEWORK = flags.DEFINE_enum('lineage_framework', 'torch', frameworks.FRAMEWORKS,
                                       'Framework that builds the children.')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', None, 'Report and generations folder '
                                  '(default: <dump>.replication).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'tfds data dir holding mnist/3.0.1, for an '
                                'auxiliary quine (default: TFDS_DATA_DIR).')
_STABILITY = flags.DEFINE_bool('stability', True, 'Add the spectrum of J, the fertile '
                               'generations and the noise test (experiments/fertility.py).')
_NUM_TEST_IMAGES = flags.DEFINE_integer('num_test_images', 0, 'MNIST test images to classify '
                                        '(0: all 10,000).', lower_bound=0)


def _fail(message):
  print(f'replicate.py: error: {message}', file=sys.stderr)
  sys.exit(2)


def main(argv):
  logging.set_verbosity(logging.WARNING)  # tfds's INFO lines while it reads MNIST
  if len(argv) > 1:
    _fail(f'unexpected arguments {argv[1:]}')
  names = list(dict.fromkeys(','.join(_FRAMEWORKS.value).split(',')))
  try:
    # The inputs (the quine, and MNIST for an auxiliary one) are checked before any work.
    if _PRETRAINED.value:
      config = zoo.load_config(_PRETRAINED.value).to_dict()
    else:
      path = dump_lib.find_dump(_DUMP.value)
      config = dump_lib.read_dump(path).config
    images, labels = replication.test_data_for(config, _DATA_DIR.value, _NUM_TEST_IMAGES.value)
    stability_config = None
    if _STABILITY.value:
      from models import stability  # pylint: disable=g-import-not-at-top
      stability_config = stability.StabilityConfig()

    output_dir = _OUTPUT_DIR.value or (
        f'{_PRETRAINED.value}.replication' if _PRETRAINED.value else None)
    if output_dir:  # the default, <dump>.replication, is beside a dump that was just read
      try:
        formats.check_writable(output_dir)
      except formats.FormatError as e:
        _fail(f'--output_dir={output_dir}: {str(e).partition(": ")[2]}')

    def replicate(dump_path, output_dir, source=None):
      return report.run(dump_path, names, _GENERATIONS.value, _LINEAGE_FRAMEWORK.value,
                        output_dir, images, labels, stability_config=stability_config,
                        source=source)

    if _PRETRAINED.value:
      from export import exporter  # pylint: disable=g-import-not-at-top  (TensorFlow)
      from export import saved_model  # pylint: disable=g-import-not-at-top
      saved_model.quiet_logs()
      try:
        with exporter.temporary_pretrained_export([_PRETRAINED.value]) as exported:
          result = replicate(exported[_PRETRAINED.value], output_dir,
                             source=f'pretrained quine {_PRETRAINED.value}')
      except exporter.ExportError as e:
        _fail(e)
    else:
      result = replicate(path, output_dir)
  except (dump_lib.DumpError, replication.DataError, zoo.PretrainedError) as e:
    _fail(e)
  sys.exit(0 if result['agrees'] else 1)


if __name__ == '__main__':
  app.run(main)
