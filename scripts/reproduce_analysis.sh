#!/usr/bin/env bash
# Real runs of the analysis family (XGrad-CAM axioms/faithfulness, unit ablation, before/after compression).
# CPU cost here: about 5-8 minutes on 2 shared cores. Outputs: results/runs/{xgradcam,unit_ablation}.csv,
# results/analysis/<dataset>_<model>_vs_<compressed>/ (CSV, PNG, markdown).
# LENET5_CKPT: final.pt of `python train.py experiment=backbones/mnist_lenet5` (trained here if absent).
set -euo pipefail
cd "$(dirname "$0")/.."
export RESULTS_DIR=${RESULTS_DIR:-results/runs}   # tracked rows (ad-hoc runs default to outputs/results)
PY=${PYTHON:-python}
LOCK=${LOCK:-/tmp/cpu-heavy.lock}
export DATA_ROOT=${DATA_ROOT:-../shared/data}
EXTRA=("$@")   # e.g. paths.cache_dir=... logger=none

# Each step takes the shared CPU lock; NO_LOCK=1 when the whole script already runs under it
# (flock /tmp/cpu-heavy.lock env NO_LOCK=1 scripts/reproduce_analysis.sh).
locked() { if [ "${NO_LOCK:-0}" = 1 ]; then "$@"; else flock "$LOCK" "$@"; fi; }
run() { locked "$PY" scripts/analyze.py "$@" logger=none "${EXTRA[@]}"; }

run experiment=xgradcam/cifar10_jpeg_resnet20
run experiment=unit_ablation/cifar10_jpeg_resnet20
run experiment=unit_ablation/cifar10_jpeg_resnet56
run experiment=xgradcam/cifar10_jpeg_resnet56

LENET5_CKPT=${LENET5_CKPT:-$(ls outputs/mnist_lenet5/*/final.pt 2>/dev/null | head -1 || true)}
if [ -z "$LENET5_CKPT" ]; then
  locked "$PY" train.py experiment=backbones/mnist_lenet5
  LENET5_CKPT=$(ls outputs/mnist_lenet5/*/final.pt | head -1)
fi
run experiment=xgradcam/mnist_lenet5 method.checkpoint="$LENET5_CKPT"
run experiment=unit_ablation/mnist_lenet5 method.checkpoint="$LENET5_CKPT"
