#!/bin/sh
# The interpreter of every py_binary and py_test: the repository's .venv/bin/python3, which holds
# TensorFlow and the rest of requirements*.txt (made by the README's setup command, or .ci/run).
#
# Bazel runs this file through runfiles symlinks; the real file is third_party/bazel/python/ in the
# source tree, so the .venv is found relative to it and a fresh clone needs no absolute path.
here=$(dirname "$(readlink -f "$0")")
python=${here%/third_party/bazel/python}/.venv/bin/python3
if [ ! -x "$python" ]; then
  echo "$0: no $python: set up .venv first (the README's setup command, or .ci/run)" >&2
  exit 1
fi
# strict/sitecustomize.py: the repository's own modules come from the runfiles only (its docstring).
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$here/strict"
# -P: Python would put the symlink-resolved directory of the main script (the source tree) first on
# sys.path, so `from conftest import ...` would bypass the runfiles. Without it, imports come only
# from the runfiles (the stub's PYTHONPATH, `imports = [...]`) and the venv.
exec "$python" -P "$@"
