#!/usr/bin/env bash
# Reproduce the DNS paper's MNIST cells (results/reference/dns.yaml). Rows go to results/runs/dns.csv.
#
# Paper recipe (default): surgery starts from the authors' released dense LeNets with Caffe's input scale.
#   DNS_MODELS=<dir>   the models/ folder of a clone of github.com/yiwenguo/Dynamic-Network-Surgery (holds
#                      lenet5/caffe_lenet5_{original,sparse}.caffemodel and lenet300100/...); converted into
#                      outputs/ref/ by scripts/import_caffe_lenet.py. The released files are evaluated into rows too.
#   SEEDS5="0 1 2"  SEEDS300="0 1"   surgery seeds (all start from the same released dense model)
#   ABLATION=1         also the no-splice ablation (seed 0)
# Own-reference recipe (OWN_REF=1): our own Caffe-solver dense models with torchvision mean/std input, as run
#   in the first session (REF5=<dense LeNet-5 final.pt> reuses one, e.g. the backbones/mnist_lenet5 run).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export DATA_ROOT=${DATA_ROOT:-../shared/data}
SEEDS5=${SEEDS5:-"0 1 2"}
SEEDS300=${SEEDS300:-"0 1"}
newest() { ls -t $1 2>/dev/null | head -1 || true; }
run() { $PY train.py "$@" trainer.progress=false logger=csv; }

if [ -z "${OWN_REF:-}" ]; then
  : "${DNS_MODELS:?set DNS_MODELS to the models/ folder of a Dynamic-Network-Surgery clone (see the header)}"
  for k in original sparse; do
    $PY scripts/import_caffe_lenet.py "$DNS_MODELS/lenet5/caffe_lenet5_$k.caffemodel" outputs/ref/caffe_lenet5_$k.pt
    $PY scripts/import_caffe_lenet.py "$DNS_MODELS/lenet300100/caffe_lenet300100_$k.caffemodel" \
      outputs/ref/caffe_lenet300100_$k.pt --model lenet300_100
  done
  # the released files themselves: dense references and sparse results (error, nonzeros)
  $PY evaluate.py experiment=dns/mnist_lenet5_reference_released checkpoint=outputs/ref/caffe_lenet5_original.pt
  $PY evaluate.py experiment=dns/mnist_lenet300_100_reference_released checkpoint=outputs/ref/caffe_lenet300100_original.pt
  $PY evaluate.py experiment=dns/mnist_lenet5_released checkpoint=outputs/ref/caffe_lenet5_sparse.pt
  $PY evaluate.py experiment=dns/mnist_lenet300_100_released checkpoint=outputs/ref/caffe_lenet300100_sparse.pt
  # surgery: LeNet-5 16K iterations, LeNet-300-100 25K iterations (fidelity paper)
  for s in $SEEDS5; do
    run experiment=dns/mnist_lenet5_caffe_ref seed=$s trainer.init_checkpoint=outputs/ref/caffe_lenet5_original.pt
  done
  for s in $SEEDS300; do
    run experiment=dns/mnist_lenet300_100_caffe_ref seed=$s trainer.init_checkpoint=outputs/ref/caffe_lenet300100_original.pt
  done
  if [ -n "${ABLATION:-}" ]; then   # dns.md signal (d): one-way pruning with the same thresholds
    run experiment=dns/mnist_lenet5_caffe_ref_nosplice seed=0 trainer.init_checkpoint=outputs/ref/caffe_lenet5_original.pt
  fi
  exit 0
fi

# own dense references: Caffe's LeNet solver, 10K iterations, batch 64, torchvision mean/std input
if [ -n "${REF5:-}" ]; then
  $PY evaluate.py experiment=dns/mnist_lenet5_reference checkpoint="$REF5"
else
  run experiment=dns/mnist_lenet5_reference seed=0
  REF5=$(newest "outputs/mnist_lenet5_reference/*-seed0/final.pt")
fi
run experiment=dns/mnist_lenet300_100_reference seed=0
REF300=$(newest "outputs/mnist_lenet300_100_reference/*-seed0/final.pt")
for s in $SEEDS5; do
  run experiment=dns/mnist_lenet5 seed=$s trainer.init_checkpoint="$REF5"
done
for s in $SEEDS300; do
  run experiment=dns/mnist_lenet300_100 seed=$s trainer.init_checkpoint="$REF300"
done
if [ -n "${ABLATION:-}" ]; then
  run experiment=dns/mnist_lenet5_nosplice seed=0 trainer.init_checkpoint="$REF5"
fi
