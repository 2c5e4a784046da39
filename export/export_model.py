r"""Exports a trained quine for serving and for other frameworks, in one version folder.

From the latest checkpoint of a training workdir, or a pretrained quine of the zoo by name,
writes `<export_dir>/<model_name>/<version>/`: a SavedModel (signatures serving_default,
predict_weights, weights; classify for an auxiliary quine), model.onnx, weights.safetensors and
manifest.json. Atomic; an existing version is kept unless --overwrite.

Examples (from the repository root):

  python export/export_model.py --workdir=runs/alternate --export_dir=exports --model_name=vanilla
  python export/export_model.py --workdir=runs/aux --export_dir=exports --model_name=aux --version=3
  python export/export_model.py --pretrained=aux_replicate --export_dir=exports
  saved_model_cli show --all --dir exports/vanilla/1
  python experiments/replicate.py --dump=exports/vanilla
  python export/serve.py --model_base_path=exports/vanilla
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # keep TensorFlow's C++ start-up notes out

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from export import exporter
from export import saved_model

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir (config.json, checkpoints/).')
_PRETRAINED = flags.DEFINE_string('pretrained', None, 'Name of a pretrained quine '
                                  '(models.list_pretrained()); instead of --workdir.')
_EXPORT_DIR = flags.DEFINE_string('export_dir', None, 'Export base folder.', required=True)
_MODEL_NAME = flags.DEFINE_string('model_name', None, 'Model folder name (default: the '
                                  'pretrained name, or the model kind, vanilla or auxiliary).')
flags.register_multi_flags_validator(
    ['workdir', 'pretrained'], lambda f: (f['workdir'] is None) != (f['pretrained'] is None),
    message='give exactly one of --workdir and --pretrained')
# TF Serving's versions are int64.
_VERSION = flags.DEFINE_integer('version', None, 'Version number (default: newest + 1).',
                                lower_bound=1, upper_bound=2**63 - 1)
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace an existing version.')
_FORCE_NEW_VERSION = flags.DEFINE_bool(
    'force_new_version', False, 'Export a new version even when the newest one already holds '
    'this checkpoint (otherwise nothing is exported and that version is named).')


def main(argv):
  saved_model.quiet_logs()
  if len(argv) > 1:
    sys.exit(f'export_model.py: error: unexpected arguments {argv[1:]}')
  try:
    if _PRETRAINED.value:
      name = _MODEL_NAME.value or _PRETRAINED.value
      before = exporter.versions(os.path.join(_EXPORT_DIR.value, name))
      path = exporter.export_pretrained(_PRETRAINED.value, _EXPORT_DIR.value, name,
                                           _VERSION.value, _OVERWRITE.value,
                                           _FORCE_NEW_VERSION.value)
    else:
      name = _MODEL_NAME.value or exporter.read_workdir_config(_WORKDIR.value).kind
      before = exporter.versions(os.path.join(_EXPORT_DIR.value, name))
      path = exporter.export_workdir(_WORKDIR.value, _EXPORT_DIR.value, name, _VERSION.value,
                                        _OVERWRITE.value, _FORCE_NEW_VERSION.value)
  except exporter.ExportError as e:
    sys.exit(f'export_model.py: error: {e}')
  if _VERSION.value is None and int(os.path.basename(path)) in before:
    print(f'Already exported: {path} holds these weights (--force_new_version exports another '
          'version)')
  else:
    print(f'Exported {path}: {", ".join(sorted(os.listdir(path)))}')
  print(f'  saved_model_cli show --all --dir {path}')
  print(f'  python experiments/replicate.py --dump={path}')
  print(f'  python export/serve.py --model_base_path={os.path.dirname(path)} --model_name={name}')


if __name__ == '__main__':
  app.run(main)
