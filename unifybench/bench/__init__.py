"""Benchmarks of the harness's own speed (not timed tests): `python -m unifybench.bench NAME ...`.

Each benchmark measures a baseline and the project's path in the same process, over the same
weights, and ends with one JSON line holding both figures and their ratio.
"""
