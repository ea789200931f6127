#!/usr/bin/env bash
# Reduced-fidelity DCFF / UCP / L1-norm runs on JPEG CIFAR-10 from the pretrained ResNet-56 (docs/pruning.md).
# Rows go to results/runs/dcff.csv and results/runs/ucp.csv. The whole sequence runs under the shared CPU lock
# (taken once, so the runs follow each other; about 15 CPU-minutes on 2 cores).
# Usage: bash scripts/reproduce_dcff.sh [seed ...]     (default: seed 0)
#        LONG=1 also runs DCFF and L1 at 10 epochs x 20 batches (the *_reduced_10ep configs) for those seeds
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
export DATA_ROOT=${DATA_ROOT:-../shared/data}
LOCK=${LOCK:-/tmp/cpu-heavy.lock}
if [ -z "${REPRODUCE_LOCKED:-}" ]; then
  exec flock "$LOCK" env REPRODUCE_LOCKED=1 bash "$0" "$@"
fi
COMMON=(logger=none trainer.progress=false)
SEEDS=("${@:-0}")

run() { "$PY" train.py "$@" "${COMMON[@]}"; }

# the unpruned pretrained ResNet-56 on the same test images (a deterministic evaluation: once)
grep -q ",cifar10_jpeg_resnet56_dense_reduced," results/runs/dcff.csv 2>/dev/null ||
  run experiment=dcff/cifar10_jpeg_resnet56_dense_reduced
for seed in "${SEEDS[@]}"; do
  # DCFF at the README's ResNet-56 rates vs L1-norm pruning at the identical widths (same FLOPs)
  run experiment=dcff/cifar10_jpeg_resnet56_reduced seed="$seed"
  run experiment=dcff/cifar10_jpeg_resnet56_l1_reduced seed="$seed"
  # UCP (MSEB scores, stage-uniform inner widths) vs L1-norm pruning at UCP's measured FLOPs reduction
  run experiment=ucp/cifar10_jpeg_resnet56_reduced seed="$seed"
  share=$("$PY" - "$seed" <<'PYEOF'
import sys
from engine.results import read_rows
rows = [r for r in read_rows("results/runs/ucp.csv")
        if r["method"] == "ucp" and r["fidelity"] == "reduced" and r["seed"] == sys.argv[1]]
print(round(rows[-1]["extra"]["flops_reduction_pct"] / 100, 4))
PYEOF
)
  run experiment=ucp/cifar10_jpeg_resnet56_l1_reduced seed="$seed" method.flops_reduction="$share"
  if [ -n "${LONG:-}" ]; then
    run experiment=dcff/cifar10_jpeg_resnet56_reduced_10ep seed="$seed"
    run experiment=dcff/cifar10_jpeg_resnet56_l1_reduced_10ep seed="$seed"
  fi
done
