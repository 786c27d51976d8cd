#!/usr/bin/env bash
# Set up FineRouter on a fresh machine: a virtual environment in .venv with the CPU build of PyTorch
# (pinned: a looser pin pulls several GB of CUDA packages) and the package with its test extras and Ray
# (finerouter[ray], so the Ray engine's tests run too; it pulls no CUDA package and keeps this torch).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[dev,ray]"
echo "FineRouter installed in .venv (activate with: source .venv/bin/activate)"
