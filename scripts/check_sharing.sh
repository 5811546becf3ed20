#!/usr/bin/env bash
# The sharing and deployment checks that need environments of their own (minutes each; not in the test suite):
# export both trained bundles, verify them as the model zoo does in a fresh environment with only their metadata's
# packages, then the MONAI Deploy app and the MONAI Label server against `monai.bundle run`.
#   bash scripts/check_sharing.sh [WORK]        (default WORK: /tmp/mimmx_sharing)
# Needs trained and evaluated bundles (bundles/*/models/model.pt, bundles/*/eval/metrics.json) and the metadata
# schema copy (SCHEMA, default ../shared/monai/meta_schema_20240725.json). Each stage prints its time.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/mimmx_sharing}
SCHEMA=${SCHEMA:-../shared/monai/meta_schema_20240725.json}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$WORK"
stage() { echo "== $1"; START=$(date +%s); }
took() { echo "== took $(( $(date +%s) - START )) s"; }

stage "export"
for b in cxr mri; do .venv/bin/mimmx export-bundle "bundles/mimmx_$b" --out "$WORK/dist"; done
took
stage "zoo verification (fresh environment, no mimmx)"
.venv/bin/python scripts/verify_bundle.py "$WORK"/dist/*.zip --schema "$SCHEMA" --venv "$WORK/zoo-venv"
took
stage "MONAI Deploy app"
bash scripts/setup_extras.sh deploy "$WORK/deploy-venv"
"$WORK/deploy-venv/bin/python" scripts/check_deploy.py "$WORK"/dist/mimmx_*_classification --work "$WORK/deploy"
took
stage "MONAI Label server"
bash scripts/setup_extras.sh label "$WORK/label-venv"
"$WORK/label-venv/bin/python" scripts/check_label.py "$WORK"/dist/mimmx_*_classification \
  --reference-python "$WORK/zoo-venv/bin/python"
took
