#!/bin/sh
echo "$0: Bazel's coverage tools are not available offline (third_party/bazel/README.md)" >&2
exit 1
