#!/usr/bin/env bash
# Reduced-fidelity TT-ADMM runs (issue 7): TT-ADMM vs direct TT-SVD + fine-tune at equal budget, ResNet-20 from the
# pretrained weights on cifar10_jpeg, 2 seeds each; then CPU latency of the dense and TT models.
# Rows: results/runs/tt_admm.csv. Heavy runs hold the shared CPU lock.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export DATA_ROOT=${DATA_ROOT:-../shared/data}
for seed in 0 1; do
  for m in tt_admm tt_svd; do
    flock /tmp/cpu-heavy.lock "$PY" train.py experiment=tt_admm/cifar10_jpeg_resnet20_${m}_reduced seed=$seed \
      logger=none trainer.progress=false
  done
done
flock /tmp/cpu-heavy.lock "$PY" scripts/latency_lowrank.py --experiment tt_admm/cifar10_jpeg_resnet20_tt_admm_reduced \
  --out results/runs/tt_admm_latency.csv
