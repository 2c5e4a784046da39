"""Tests of formats: safetensors in canonical order, strict JSON, atomic writes, writable checks."""

import json
import os

from absl.testing import absltest
import numpy as np
import safetensors.numpy

import formats


def _strict(text):
  """json.loads that refuses NaN and Infinity, as JSON.parse and jq do."""
  def refuse(token):
    raise ValueError(f'not JSON: {token}')
  return json.loads(text, parse_constant=refuse)


class SafetensorsTest(absltest.TestCase):

  def test_tensors_keep_their_order_and_the_library_reads_them(self):
    tensors = {'b': np.arange(6, dtype=np.float32).reshape(2, 3), 'a': np.arange(3.0)}
    data = formats.encode_safetensors(tensors, {'format': 'x'})
    ours, metadata = formats.decode_safetensors(data)
    self.assertEqual(list(ours), ['b', 'a'])  # the library would sort them: a, b
    self.assertEqual(metadata, {'format': 'x'})
    np.testing.assert_array_equal(safetensors.numpy.load(data)['b'], tensors['b'])

  def test_truncated_and_foreign_bytes_name_the_file(self):
    data = formats.encode_safetensors({'w': np.ones(4, np.float32)})
    for broken, why in ((data[:-4], 'truncated'), (data[:5], 'truncated'),
                        (b'\x08' + b'\x00' * 7 + b'not json', 'not a safetensors file')):
      with self.assertRaisesRegex(formats.FormatError, rf'^w\.safetensors: .*{why}'):
        formats.decode_safetensors(broken, 'w.safetensors')


class JsonTest(absltest.TestCase):

  def test_non_finite_numbers_are_written_as_null(self):
    # Python's json writes Infinity, which JSON.parse refuses and jq 1.6 reads as 1.797e308.
    value = {'radius': float('inf'), 'distances': [1.0, float('nan'), np.float32('-inf')],
             'nested': {'x': (float('inf'), 2)}}
    path = os.path.join(self.create_tempdir().full_path, 'stability.json')
    formats.write_json_atomic(path, value)
    with open(path) as f:
      self.assertEqual(_strict(f.read()), {'radius': None, 'distances': [1.0, None, None],
                                           'nested': {'x': [None, 2]}})
    self.assertEqual(_strict(formats.to_json(value))['radius'], None)


class AtomicTest(absltest.TestCase):

  def test_write_atomic_leaves_the_old_file_when_it_fails(self):
    path = os.path.join(self.create_tempdir().full_path, 'f')
    formats.write_atomic(path, 'old')
    with self.assertRaises(TypeError):
      formats.write_atomic(path, object())
    with open(path) as f:
      self.assertEqual(f.read(), 'old')
    self.assertEqual(os.listdir(os.path.dirname(path)), ['f'])

  def test_atomic_directory_appears_whole_or_not_at_all(self):
    path = os.path.join(self.create_tempdir().full_path, 'd')
    with self.assertRaises(RuntimeError):
      with formats.atomic_directory(path) as tmp:
        formats.write_atomic(os.path.join(tmp, 'a'), 'x')
        raise RuntimeError('killed half-way')
    self.assertFalse(os.path.exists(path))
    self.assertEqual(os.listdir(os.path.dirname(path)), [])
    with formats.atomic_directory(path) as tmp:
      formats.write_atomic(os.path.join(tmp, 'a'), 'x')
    self.assertEqual(os.listdir(path), ['a'])


class CheckWritableTest(absltest.TestCase):

  def test_a_new_folder_under_a_writable_one_passes_and_nothing_is_written(self):
    root = self.create_tempdir().full_path
    formats.check_writable(os.path.join(root, 'a', 'b'))
    self.assertEqual(os.listdir(root), [])

  def test_a_file_and_a_file_system_that_refuses_writes_are_named(self):
    root = self.create_tempdir().full_path
    with open(os.path.join(root, 'file'), 'w') as f:
      f.write('x')
    with self.assertRaisesRegex(formats.FormatError, f'{root}/file is not a directory'):
      formats.check_writable(os.path.join(root, 'file', 'out'))
    if os.path.isdir('/proc/self'):  # Linux: /proc takes no new folders, even from root
      with self.assertRaisesRegex(formats.FormatError, '/proc is not writable'):
        formats.check_writable('/proc/x')


if __name__ == '__main__':
  absltest.main()
