#!/usr/bin/env bash
# Same runs as reproduce_sd_bnn.sh (both papers share one comparison). Reduced-fidelity, equal-budget comparison of the binary-network methods on Fashion-MNIST (docs/binary.md).
# Rows go to results/runs/sd_bnn.csv (fp, bnn, irnet, sd_bnn) and results/runs/ir2net.csv (ir2net).
# Each run holds the shared CPU lock. SEEDS="0 1 2" to add seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
export DATA_ROOT=${DATA_ROOT:-../shared/data}
SEEDS=${SEEDS:-"0 1"}
LOCK=${LOCK:-/tmp/cpu-heavy.lock}
for seed in $SEEDS; do
  for exp in sd_bnn/fashion_mnist_resnet20_fp sd_bnn/fashion_mnist_resnet20_bnn sd_bnn/fashion_mnist_resnet20_irnet \
             sd_bnn/fashion_mnist_resnet20_sd_bnn ir2net/fashion_mnist_resnet20_ir2net; do
    flock "$LOCK" $PY train.py experiment=$exp seed=$seed logger=none trainer.progress=false
  done
done
