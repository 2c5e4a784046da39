"""Quine models: the networks, their one architecture description, and their canonical weight order.

Nothing about training. The NumPy-only modules (`models.config`, `models.activations`,
`models.generator`, `models.architecture`, `models.backends`) import without TensorFlow; the Keras
models (`VanillaQuine`, `AuxiliaryQuine`, `build_quine`) import it when first used.

The zoo's pretrained quines (`models.zoo`): `list_pretrained()` names them, `load_pretrained(name)`
returns one as a built Keras model with its weights.
"""

from models.config import ModelConfig

__all__ = ['ModelConfig', 'VanillaQuine', 'AuxiliaryQuine', 'build_quine', 'list_pretrained',
           'load_pretrained']


def __getattr__(name):  # PEP 562: the Keras models (and TensorFlow) only when asked for
  if name in ('VanillaQuine', 'AuxiliaryQuine', 'build_quine'):
    from models import quine  # pylint: disable=g-import-not-at-top
    return getattr(quine, name)
  if name in ('list_pretrained', 'load_pretrained'):
    from models import zoo  # pylint: disable=g-import-not-at-top
    return getattr(zoo, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
