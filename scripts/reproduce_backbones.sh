#!/usr/bin/env bash
# Foundation runs: dense LeNets on MNIST (Caffe recipe), the published CIFAR ResNets on the JPEG test split,
# and ResNet-20 fine-tuned on the JPEG training split. Rows go to results/runs/backbones.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
export RESULTS_DIR=${RESULTS_DIR:-results/runs}   # tracked rows (ad-hoc runs default to outputs/results)
export DATA_ROOT=${DATA_ROOT:-../shared/data}
PY=${PYTHON:-.venv/bin/python}
$PY train.py experiment=backbones/mnist_lenet5 "$@"
for d in 20 32 44 56; do $PY evaluate.py experiment=backbones/cifar10_jpeg_resnet${d}_pretrained "$@"; done
$PY train.py experiment=backbones/cifar10_jpeg_resnet20_finetune "$@"
