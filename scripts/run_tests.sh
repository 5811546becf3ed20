#!/usr/bin/env bash
# Sets up .venv (see setup.sh) and runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=dev,tracking bash scripts/setup.sh  # tracking: the MLflow test
.venv/bin/python -m pytest -q "$@"
