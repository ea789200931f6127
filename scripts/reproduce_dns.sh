#!/usr/bin/env bash
# Reproduce the DNS paper's MNIST cells (results/reference/dns.yaml): dense references, then surgery, several seeds.
# Rows go to results/runs/dns.csv. Heavy runs serialize on /tmp/cpu-heavy.lock (shared 2-core machine).
#   REF5=<dense LeNet-5 final.pt>      reuse a dense LeNet-5 (e.g. the backbones/mnist_lenet5 run: same recipe) instead
#                                      of training dns/mnist_lenet5_reference; it is evaluated into a dns row
#   SEEDS5="0"  SEEDS300="0 1"         surgery seeds (all start from the seed-0 dense reference); the committed rows
#                                      are LeNet-5 seed 0 and LeNet-300-100 seeds 0, 1 (CPU time), REF5 = the
#                                      backbones/mnist_lenet5 run
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
LOCK=(flock /tmp/cpu-heavy.lock)
SEEDS5=${SEEDS5:-"0"}
SEEDS300=${SEEDS300:-"0 1"}
newest() { ls -t $1 2>/dev/null | head -1 || true; }

# 1. dense references: Caffe's LeNet solver, 10K iterations, batch 64 (dns.md table1_summary reference rows)
if [ -n "${REF5:-}" ]; then
  "${LOCK[@]}" $PY evaluate.py experiment=dns/mnist_lenet5_reference checkpoint="$REF5"
else
  "${LOCK[@]}" $PY train.py experiment=dns/mnist_lenet5_reference seed=0
  REF5=$(newest "outputs/mnist_lenet5_reference/*-seed0/final.pt")
fi
"${LOCK[@]}" $PY train.py experiment=dns/mnist_lenet300_100_reference seed=0
REF300=$(newest "outputs/mnist_lenet300_100_reference/*-seed0/final.pt")

# 2. surgery: LeNet-5 16K iterations, LeNet-300-100 25K iterations (fidelity paper)
for s in $SEEDS5; do
  "${LOCK[@]}" $PY train.py experiment=dns/mnist_lenet5 seed=$s trainer.init_checkpoint="$REF5"
done
for s in $SEEDS300; do
  "${LOCK[@]}" $PY train.py experiment=dns/mnist_lenet300_100 seed=$s trainer.init_checkpoint="$REF300"
done

# 3. optional ablation (dns.md signal (d)): one-way pruning with the same thresholds
if [ -n "${ABLATION:-}" ]; then
  "${LOCK[@]}" $PY train.py experiment=dns/mnist_lenet5_nosplice seed=0 trainer.init_checkpoint="$REF5"
fi
