#!/usr/bin/env bash
# Reduced-fidelity, equal-budget comparison of the binary-network methods on Fashion-MNIST (docs/binary.md):
# full precision vs plain BNN vs IR-Net vs SD-BNN vs IR2Net, ResNet-20 topology, same budget for each.
# Rows go to results/runs/sd_bnn.csv (fp, bnn, irnet, sd_bnn) and results/runs/ir2net.csv (ir2net).
# The five runs of one seed hold the shared CPU lock together (~8-10 CPU minutes per seed on 2 busy cores).
# SEEDS="0 1" for fewer seeds; finished runs are skipped (trainer.resume=auto finds their run directory).
set -euo pipefail
cd "$(dirname "$0")/.."
export RESULTS_DIR=${RESULTS_DIR:-results/runs}   # tracked rows (ad-hoc runs default to outputs/results)
PY=${PY:-python}
export DATA_ROOT=${DATA_ROOT:-../shared/data}
SEEDS=${SEEDS:-"0 1 2"}
LOCK=${LOCK:-/tmp/cpu-heavy.lock}
EXPS="sd_bnn/fashion_mnist_resnet20_fp sd_bnn/fashion_mnist_resnet20_bnn sd_bnn/fashion_mnist_resnet20_irnet
      sd_bnn/fashion_mnist_resnet20_sd_bnn ir2net/fashion_mnist_resnet20_ir2net sd_bnn/fashion_mnist_resnet20_sign_ede"
for seed in $SEEDS; do
  flock "$LOCK" bash -c "set -e; for exp in $(echo $EXPS); do $PY train.py experiment=\$exp seed=$seed logger=none trainer.progress=false; done"
done
$PY scripts/summarize_binary.py
