#!/usr/bin/env bash
# The main job: set up, train the chest X-ray bundle on its embedded synthetic cohort, evaluate it and print the
# metrics. Extra arguments are passed to both monai.bundle runs (for example --loss_terms '$[@loss#head_ce]' for the ERM baseline).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUNDLE=${BUNDLE:-bundles/mimmx_cxr}
export PYTHONUNBUFFERED=1
.venv/bin/python -m monai.bundle run training --bundle_root "$BUNDLE" \
  --config_file "$BUNDLE/configs/train.yaml" --logging_file "$BUNDLE/configs/logging.conf" "$@"
.venv/bin/python -m monai.bundle run evaluating --bundle_root "$BUNDLE" \
  --config_file "['$BUNDLE/configs/train.yaml','$BUNDLE/configs/evaluate.yaml']" \
  --logging_file "$BUNDLE/configs/logging.conf" "$@"
echo "metrics: $BUNDLE/eval/metrics.json"
