"""Tests of the house's layout: imports run one way, and the quine kinds differ in one place.

Read from the source with `ast`, nothing imported: formats.py is the ground floor, then models/,
export/, trainers/, and experiments/ on top (STYLE.md section 1); scripts/ and benchmarks/ may
import any wing, and nothing imports them or experiments/.
"""

import ast
import glob
import os

from absl.testing import absltest
from absl.testing import parameterized

from conftest import REPO_ROOT

# What each wing may import of the project's own wings.
_ALLOWED = {
    'formats': set(),
    'models': {'formats', 'models'},
    'export': {'formats', 'models', 'export'},
    'trainers': {'formats', 'models', 'export', 'trainers'},
    'experiments': {'formats', 'models', 'export', 'trainers', 'experiments'},
    'scripts': {'formats', 'models', 'export', 'trainers', 'experiments'},
    'benchmarks': {'formats', 'models', 'export', 'trainers', 'experiments', 'benchmarks'},
}
_WINGS = set(_ALLOWED)


def _sources(wing):
  if wing == 'formats':
    return [os.path.join(REPO_ROOT, 'formats.py')]
  return sorted(glob.glob(os.path.join(REPO_ROOT, wing, '*.py')))


def _imported_wings(path):
  wings = set()
  for node in ast.walk(ast.parse(open(path).read(), path)):
    names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
             [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
    wings |= {n.split('.')[0] for n in names} & _WINGS
  return wings


class LayoutTest(parameterized.TestCase):

  @parameterized.parameters(*sorted(_ALLOWED))
  def test_imports_run_downwards(self, wing):
    for path in _sources(wing):
      upward = _imported_wings(path) - _ALLOWED[wing]
      self.assertEmpty(upward, f'{os.path.relpath(path, REPO_ROOT)} imports {sorted(upward)}')

  def test_only_models_config_tells_the_quine_kinds_apart(self):
    # Code asks what a quine can do (config.classifies, models.config.KIND_REGISTRY), so that a
    # new kind is one registry entry; comparing `kind` with a kind's name is left to the registry.
    kinds = {'vanilla', 'auxiliary'}
    for wing in sorted(_ALLOWED):
      for path in _sources(wing):
        if path.endswith(os.path.join('models', 'config.py')):
          continue
        for node in ast.walk(ast.parse(open(path).read(), path)):
          if not isinstance(node, ast.Compare):
            continue
          values = {c.value for c in [node.left, *node.comparators]
                    if isinstance(c, ast.Constant)}
          self.assertFalse(values & kinds and 'kind' in ast.unparse(node),
                           f'{os.path.relpath(path, REPO_ROOT)}:{node.lineno}: '
                           f'{ast.unparse(node)}')


if __name__ == '__main__':
  absltest.main()
