#!/usr/bin/env bash
# Creates the optional deployment environments, each apart from .venv (their pins conflict with it):
#   bash scripts/setup_extras.sh deploy /path/to/deploy-venv   # MONAI Deploy App SDK 4.0 (large: ~1.5 GB)
#   bash scripts/setup_extras.sh label  /path/to/label-venv    # MONAI Label 0.8.5
# torch goes first, pinned, in both: an unpinned torch pulled in by another package is a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
KIND=${1:?deploy or label}
VENV=${2:?folder for the environment}
PYTHON=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" torch==2.13.0
case "$KIND" in
  deploy)
    # the SDK's operators import highdicom; mimmx with its own pins (monai, pydicom 3, itk, ...)
    "${PIP[@]}" torch==2.13.0 -e ".[deploy]"
    ;;
  label)
    # monailabel 0.8.5 reads DICOM SEG through pydicom-seg, which needs pydicom < 3 (and so do the dicomweb-client
    # and pynetdicom releases below); mimmx goes in without its dependencies: the infer task needs only torch,
    # monai and the exported bundle's own code
    "${PIP[@]}" torch==2.13.0 monailabel==0.8.5 "pydicom<3" "pynetdicom<3" dicomweb-client==0.59.3
    "${PIP[@]}" --no-deps -e .
    ;;
  *) echo "unknown kind $KIND: deploy or label" >&2; exit 2 ;;
esac
echo "$KIND environment ready: $VENV"
