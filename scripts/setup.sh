#!/usr/bin/env bash
# Creates .venv and installs mimmx with its pinned dependencies. torch goes first, pinned: an unpinned torch
# pulled in by another package would fetch a multi-GB CUDA build. EXTRAS picks the optional extras (default: dev).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -e ".[${EXTRAS:-dev}]"
echo "mimmx installed in $(pwd)/.venv"
