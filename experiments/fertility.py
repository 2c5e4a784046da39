r"""Measures whether an exported quine is fertile: the spectrum of its regeneration map.

A quine's lineage stays a lineage of quines for ever only at a contracting fixed point: every
eigenvalue of J = d f_theta(C) / d theta inside the unit circle. Reads a dump, rebuilds the quine
in TensorFlow and reports J's outer eigenvalues (ARPACK on Jacobian-vector products, no N x N
matrix), its largest singular value, the stretch along theta, how many generations stay quines
(rho <= 1e-3), and how many of K perturbed copies return; writes stability.json and spectrum.png.
An auxiliary quine's J is taken over the whole of theta (its class head predicts nothing: zero
columns); with MNIST's test split (--data_dir) the report adds the test accuracy of every
generation of the lineage and of each perturbed copy after its generations.

Examples (from the repository root):

  python experiments/fertility.py --dump=exports/vanilla
  python experiments/fertility.py --dump=exports/fixed_point/1 --generations=300 --noise=0.02
  # writes fixed_point_w100_s0.stability/:
  python experiments/fertility.py --pretrained=fixed_point_w100_s0
  python experiments/fertility.py --pretrained=aux_replicate --data_dir=../shared/tfds

Exit status: 0 when the analysis ran (a quine that is not contracting too, so that the command
chains with && and runs under set -e; --require_contracting makes that 1), 2 on a bad input.
"""

import math
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # keep TensorFlow's C++ start-up notes out

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

import formats
from export import dump as dump_lib
from export import replication
from experiments import replication_report as report_lib
from models import zoo

_DUMP = flags.DEFINE_string('dump', None, 'A dump folder, or an exported model folder (newest '
                            'version).')
_PRETRAINED = flags.DEFINE_string('pretrained', None, 'Name of a pretrained quine; instead of '
                                  '--dump (the output goes to <NAME>.stability by default).')
flags.register_multi_flags_validator(
    ['dump', 'pretrained'], lambda f: (f['dump'] is None) != (f['pretrained'] is None),
    message='give exactly one of --dump and --pretrained')
_GENERATIONS = flags.DEFINE_integer('generations', 300, 'Longest lineage to regenerate.',
                                    lower_bound=0)
_NUM_PERTURBATIONS = flags.DEFINE_integer('num_perturbations', 10, 'Perturbed copies (K).',
                                          lower_bound=0)
_NOISE = flags.DEFINE_float('noise', 0.02, 'Relative size ||delta|| / ||theta|| of each '
                            'perturbation.', lower_bound=0.0)
_NOISE_GENERATIONS = flags.DEFINE_integer('noise_generations', 100, 'Regenerations of each '
                                          'perturbed copy.', lower_bound=1)
flags.register_validator('noise', math.isfinite, message='--noise must be a finite number')
_NUM_EIGENVALUES = flags.DEFINE_integer('num_eigenvalues', 6, 'Outer eigenvalues to find.',
                                        lower_bound=1)
_REQUIRE_CONTRACTING = flags.DEFINE_bool(
    'require_contracting', False, 'Exit with status 1 when the quine is not contracting (for '
    'scripts that check fertility).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'tfds data dir holding mnist/3.0.1, for an '
                                'auxiliary quine\'s test accuracy (default: TFDS_DATA_DIR).')
_NUM_TEST_IMAGES = flags.DEFINE_integer('num_test_images', 0, 'MNIST test images to classify '
                                        '(0: all 10,000).', lower_bound=0)
_OUTPUT_DIR = flags.DEFINE_string('output_dir', None, 'Where stability.json and spectrum.png go '
                                  '(default: <dump>.stability, or a numbered sibling if taken).')


def _fail(message):
  print(f'fertility.py: error: {message}', file=sys.stderr)
  sys.exit(2)


def main(argv):
  logging.set_verbosity(logging.WARNING)  # tfds's INFO lines while it reads MNIST
  if len(argv) > 1:
    _fail(f'unexpected arguments {argv[1:]}')
  try:
    if _PRETRAINED.value:
      # A pretrained quine is a weights-only dump; its report goes beside the caller, not into
      # the repository's models/pretrained/.
      dump = dump_lib.read_dump(zoo.pretrained_dir(_PRETRAINED.value), require_onnx=False)
      default_output = f'{_PRETRAINED.value}.stability'
    else:
      dump = dump_lib.read_dump(dump_lib.find_dump(_DUMP.value), require_onnx=False)
      default_output = dump.path + '.stability'
    # An auxiliary quine's test accuracy is measured along its lineage and after the noise.
    images, labels = replication.test_data_for(dump.config, _DATA_DIR.value,
                                               _NUM_TEST_IMAGES.value)
  except (dump_lib.DumpError, zoo.PretrainedError, replication.DataError) as e:
    _fail(e)
  output_dir = report_lib.fresh_directory(_OUTPUT_DIR.value or default_output)
  try:  # before the analysis (a minute at the paper's size), not after it
    formats.check_writable(output_dir)
  except formats.FormatError as e:
    _fail(f'--output_dir={_OUTPUT_DIR.value or default_output}: {str(e).partition(": ")[2]}')
  # TensorFlow and scipy only now that the input is known to be good.
  from export import frameworks  # pylint: disable=g-import-not-at-top
  from models import stability  # pylint: disable=g-import-not-at-top
  from trainers import plots  # pylint: disable=g-import-not-at-top
  model = frameworks.keras_model(dump)
  config = stability.StabilityConfig(
      num_eigenvalues=_NUM_EIGENVALUES.value, generations=_GENERATIONS.value,
      num_perturbations=_NUM_PERTURBATIONS.value, noise=_NOISE.value,
      noise_generations=_NOISE_GENERATIONS.value)
  result = stability.analyse(model, config, images, labels)
  os.makedirs(output_dir)
  formats.write_atomic(os.path.join(output_dir, formats.STABILITY_FILE),
                       formats.to_json(dict(result, dump=dump.path), indent=2) + '\n')
  formats.write_atomic(os.path.join(output_dir, 'spectrum.png'),
                       plots.spectrum_png(result, title=dump.path))
  print(f'{dump.path}: {stability.summary_line(result)}')
  print(f'Wrote {output_dir}/{{stability.json, spectrum.png}}')
  sys.exit(1 if _REQUIRE_CONTRACTING.value and not result['contracting'] else 0)


if __name__ == '__main__':
  app.run(main)
