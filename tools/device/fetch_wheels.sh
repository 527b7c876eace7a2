#!/usr/bin/env bash
# Run here (with network), before tools/device/gpu_checks.sh on a lent GPU machine, which cannot reach
# PyPI. Downloads into .whl/ (git-ignored) the wheels that machine's image lacks, for its Python 3.12:
# open_clip (not installed there) and transformers 5.24 (the image's 5.17 has a broken Janus image
# `generate`, the eager baseline of the generation benchmark), diffusers (the Stable Diffusion
# baselines; peft is in the image) with importlib_metadata, which it imports, and setuptools 80 (this
# tree's build needs >= 77; gpu_checks.sh installs the tree with --no-build-isolation, offline).
# --no-deps: everything else they need is in the image (the device tool's notes on the machine kinds).
# About 23 MB, carried as carry=[".whl"] (the device tool carries 64 MiB at most).
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .whl && mkdir -p .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl transformers==5.24.0 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 diffusers==0.42.1 \
  importlib_metadata==8.7.0 setuptools==80.9.0
du -sh .whl
