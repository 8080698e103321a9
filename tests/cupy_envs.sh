#!/usr/bin/env bash
# Real CuPy without a GPU, for tests/test_cupy_conformance.py: one environment for each CuPy
# release line the `gpu` extra allows, each with the NumPy it meets in the field (CuPy 13 is
# what a user on numpy<2 gets). Each holds mlpcli too, and the cuBLAS stub of cupy_replay.py.
set -euo pipefail
cd "$(dirname "$0")/.."

make_env() {
  local venv=$1
  shift
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "$@" -e .
  "$venv/bin/python" tests/cupy_replay.py stub "$venv/cuda-stub" >/dev/null
  "$venv/bin/python" -c 'import cupy, numpy; print("cupy", cupy.__version__, "numpy", numpy.__version__)'
}

# side by side: the time goes mostly to downloading the wheels
make_env .venv-cupy13 "cupy-cuda12x==13.*" "numpy==1.26.*" &
first=$!
make_env .venv-cupy14 "cupy-cuda12x==14.*" "numpy>=2,<2.6"
wait "$first"
