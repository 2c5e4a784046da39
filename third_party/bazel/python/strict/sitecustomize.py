"""Under Bazel, this repository's modules are imported from the runfiles and nowhere else.

venv_python3.sh puts this folder on PYTHONPATH, so Python imports this module at start-up, after
the venv's .pth files, in the test or binary and in every Python subprocess it starts. The venv's
editable install of the project (`pip install -e .`) adds an import finder that loads `models`,
`trainers` and `export` modules from the source tree whenever they are missing from sys.path:
under Bazel that would hide a missing `deps` entry. Removing the finder makes a module missing
from the runfiles fail to import, as it would in a packaged binary.
"""

import sys

sys.meta_path[:] = [
    finder for finder in sys.meta_path
    if not getattr(finder, '__module__', '').startswith('__editable__')
]
