"""Tests of the MNIST loader: the real prepared data, and failing fast when it is missing."""

import os
import time

from absl.testing import absltest
import numpy as np

from trainers import data as data_lib


class LoadMnistTest(absltest.TestCase):

  def test_missing_dataset_with_downloads_forbidden_fails_within_seconds(self):
    empty = self.create_tempdir().full_path
    start = time.monotonic()
    with self.assertRaisesRegex(data_lib.DataError, f'{empty}/mnist/3.0.1.*downloads are '
                                'forbidden.*--data_dir'):
      data_lib.load_mnist(empty, download=False)
    self.assertLess(time.monotonic() - start, 5.0)

  def test_default_data_dir_honours_tfds_data_dir(self):
    old = os.environ.get('TFDS_DATA_DIR')
    os.environ['TFDS_DATA_DIR'] = '/some/where'
    try:
      self.assertEqual(data_lib.default_data_dir(), '/some/where')
    finally:
      if old is None:
        del os.environ['TFDS_DATA_DIR']
      else:
        os.environ['TFDS_DATA_DIR'] = old

  def test_real_mnist_from_tfds_data_dir(self):
    # CI sets TFDS_DATA_DIR to ../shared/tfds. Missing data is a failure with the loader's own
    # message, never a silent skip.
    data_dir = os.environ.get('TFDS_DATA_DIR')
    self.assertTrue(data_dir, 'TFDS_DATA_DIR is not set: point it at a tfds data dir with MNIST '
                    '(CI uses ../shared/tfds)')
    mnist = data_lib.load_mnist(data_dir, download=False)
    self.assertEqual(mnist.train_images.shape, (60000, 784))
    self.assertEqual(mnist.test_images.shape, (10000, 784))
    self.assertEqual(mnist.train_images.dtype, np.float32)
    self.assertBetween(float(mnist.train_images.min()), 0.0, 0.0)
    self.assertBetween(float(mnist.train_images.max()), 1.0, 1.0)
    np.testing.assert_array_equal(
        np.bincount(mnist.test_labels, minlength=10),
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    np.testing.assert_array_equal(
        np.bincount(mnist.train_labels, minlength=10),
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])


if __name__ == '__main__':
  absltest.main()
