"""Benchmarks of quine-zoo against a PyTorch-eager baseline (`python benchmarks/run.py`).

Not part of the installed packages: run from the repository root. See benchmarks/README.md.
"""
