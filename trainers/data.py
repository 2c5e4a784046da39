"""MNIST for the auxiliary quine, through tensorflow-datasets, failing fast when it is missing.

Offline, `tfds.load` on a missing dataset tries to download and hangs for minutes before failing.
`load_mnist` therefore looks for the prepared dataset first and, when it is absent, either fails at
once (downloads forbidden) or checks in a few seconds that the download host answers.
"""

import dataclasses
import os
import socket

import numpy as np

MNIST_VERSION = '3.0.1'
MNIST_IMAGE_SIZE = 28 * 28
MNIST_NUM_CLASSES = 10
_DOWNLOAD_HOST = ('storage.googleapis.com', 443)


class DataError(RuntimeError):
  """The dataset cannot be loaded; the message says where it looked and what to do."""


@dataclasses.dataclass(frozen=True)
class Mnist:
  """MNIST as flat float32 images in [0, 1] and int32 labels."""
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray


def default_data_dir():
  """tfds's own default, which honours TFDS_DATA_DIR."""
  return os.environ.get('TFDS_DATA_DIR') or os.path.join(os.path.expanduser('~'),
                                                           'tensorflow_datasets')


def _prepared(data_dir):
  return os.path.exists(os.path.join(data_dir, 'mnist', MNIST_VERSION, 'dataset_info.json'))


def _host_answers(timeout_s=5.0):
  try:
    with socket.create_connection(_DOWNLOAD_HOST, timeout=timeout_s):
      return True
  except OSError:
    return False


def check_fits_mnist(model_config, preset):
  """Raises ValueError unless a quine of `model_config` (from --preset=`preset`) can take MNIST.

  Called before the data is loaded, so that a preset made for fake test data fails at once.
  """
  if (model_config.image_size, model_config.num_classes) != (MNIST_IMAGE_SIZE, MNIST_NUM_CLASSES):
    raise ValueError(f'--preset={preset} cannot run on MNIST: its quine takes '
                     f'{model_config.image_size}-pixel images in {model_config.num_classes} '
                     f'classes, MNIST has {MNIST_IMAGE_SIZE} pixels and {MNIST_NUM_CLASSES} '
                     'classes')


def _as_arrays(ds):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  images, labels = tfds.as_numpy(ds)
  return (images.reshape(len(images), -1).astype(np.float32) / 255.0, labels.astype(np.int32))


def load_mnist(data_dir=None, download=False):
  """Loads MNIST's train and test splits with tfds.

  Args:
    data_dir: a tfds data dir; None means tfds's default (TFDS_DATA_DIR or ~/tensorflow_datasets).
    download: allow tfds to download and prepare the dataset if it is not in data_dir.

  Returns:
    An Mnist.

  Raises:
    DataError: the prepared dataset is not in data_dir and cannot be downloaded.
  """
  data_dir = os.path.abspath(os.path.expanduser(data_dir or default_data_dir()))
  if not _prepared(data_dir):
    where = os.path.join(data_dir, 'mnist', MNIST_VERSION)
    if not download:
      raise DataError(
          f'MNIST is not prepared in {where} and downloads are forbidden: point --data_dir '
          '(or TFDS_DATA_DIR) at a tfds data dir holding mnist/3.0.1, or drop --nodownload')
    if not _host_answers():
      raise DataError(
          f'MNIST is not prepared in {where} and {_DOWNLOAD_HOST[0]} does not answer: point '
          '--data_dir (or TFDS_DATA_DIR) at a tfds data dir holding mnist/3.0.1')
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  train, test = tfds.load('mnist', split=['train', 'test'], data_dir=data_dir, batch_size=-1,
                          as_supervised=True, download=download)
  return Mnist(*_as_arrays(train), *_as_arrays(test))
