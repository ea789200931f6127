#!/usr/bin/env bash
# Reduced-fidelity low-rank runs of issue 7 (TT-ADMM and CC), ResNet-20 from the pretrained weights on cifar10_jpeg.
#  1. TT-ADMM vs direct TT-SVD + fine-tune at equal ranks (2.3x) and equal budget (20,000 training images), seed 0.
#  2. CC (joint) vs pruning-only vs decomposition-only at equal MACs (com_ratio 0.5), seed 0.
#  3. CPU latency of the dense backbone and of every finished model.
# Rows: results/runs/tt_admm.csv, results/runs/cc.csv, results/measurements/lowrank_latency.csv. Heavy runs hold the CPU lock.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export DATA_ROOT=${DATA_ROOT:-../shared/data}
for seed in 0; do   # seed 1 left out: the shared CPU ran at ~50 img/s, see docs/lowrank.md
  for m in tt_admm tt_svd; do
    flock /tmp/cpu-heavy.lock "$PY" train.py experiment=tt_admm/cifar10_jpeg_resnet20_${m}_reduced seed=$seed \
      logger=none trainer.progress=false
  done
done
for v in joint pruning td; do
  flock /tmp/cpu-heavy.lock "$PY" train.py experiment=cc/cifar10_jpeg_resnet20_${v}_reduced seed=0 \
    logger=none trainer.progress=false
done
flock /tmp/cpu-heavy.lock "$PY" scripts/latency_lowrank.py outputs/cifar10_jpeg_resnet20_reduced/*/final.pt \
  --out results/measurements/lowrank_latency.csv
