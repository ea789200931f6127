#!/usr/bin/env bash
# INQ at small scale (no MNIST cell in the paper; the reduced-budget checks of its claims): LeNet-5 and
# LeNet-300-100 at 5/4/3/2 bits from the dense references, the float baseline rows, random partition, and
# DNS -> INQ on LeNet-5. The ImageNet cells (conf/experiment/inq/imagenet_*) cannot run here.
# Rows go to results/runs/inq.csv. Heavy runs serialize on /tmp/cpu-heavy.lock.
#   REF5 / REF300: dense final.pt (default: the newest dns/*_reference runs, see reproduce_dns.sh)
#   DNS5: a DNS LeNet-5 final.pt (default: the newest dns/mnist_lenet5 seed-0 run)
#   BITS="5 4 3 2"  SEEDS="0"  MODELS="lenet5 lenet300_100"
#   PARTS="mnist dns cifar" (default "mnist dns"; cifar = ResNet-20 5/4-bit, RESNET20=<fine-tuned final.pt>, default the
#   newest backbones/cifar10_jpeg_resnet20_finetune run)
set -euo pipefail
cd "$(dirname "$0")/.."
export RESULTS_DIR=${RESULTS_DIR:-results/runs}   # tracked rows (ad-hoc runs default to outputs/results)
PY=${PY:-.venv/bin/python}
LOCK=(${LOCK:-flock /tmp/cpu-heavy.lock})
BITS=${BITS:-"5 4 3 2"}
SEEDS=${SEEDS:-"0"}
MODELS=${MODELS:-"lenet5 lenet300_100"}
newest() { ls -t $1 2>/dev/null | head -1 || true; }
REF5=${REF5:-$(newest "outputs/mnist_lenet5_reference/*-seed0/final.pt")}
REF300=${REF300:-$(newest "outputs/mnist_lenet300_100_reference/*-seed0/final.pt")}
DNS5=${DNS5:-$(newest "outputs/mnist_lenet5/*-seed0/final.pt")}
RESNET20=${RESNET20:-$(newest "outputs/cifar10_jpeg_resnet20_finetune/*-seed0/final.pt")}
PARTS=${PARTS:-"mnist dns"}
has() { [[ " $PARTS " == *" $1 "* ]]; }

has mnist && for model in $MODELS; do
  ref=$REF5; [ "$model" = lenet300_100 ] && ref=$REF300
  $PY evaluate.py experiment=inq/mnist_${model}_fp checkpoint="$ref"           # the float baseline row
  for b in $BITS; do
    for s in $SEEDS; do
      "${LOCK[@]}" $PY train.py experiment=inq/mnist_${model}_${b}bit seed=$s trainer.init_checkpoint="$ref"
    done
  done
done
if [ -n "${RANDOM_PARTITION:-}" ]; then
  "${LOCK[@]}" $PY train.py experiment=inq/mnist_lenet5_5bit_random seed=0 trainer.init_checkpoint="$REF5"
fi

# DNS -> INQ: the DNS model's exact zeros stay pruned, INQ 5-bit quantizes the survivors
if has dns; then
  $PY scripts/export_sparse.py "$DNS5" outputs/dns_lenet5_sparse.pt
  "${LOCK[@]}" $PY train.py experiment=inq/mnist_lenet5_dns_5bit seed=0 trainer.init_checkpoint=outputs/dns_lenet5_sparse.pt
fi

if has cifar; then
  $PY evaluate.py experiment=inq/cifar10_jpeg_resnet20_fp checkpoint="$RESNET20"
  for b in 5 4; do
    "${LOCK[@]}" $PY train.py experiment=inq/cifar10_jpeg_resnet20_${b}bit seed=0 trainer.init_checkpoint="$RESNET20"
  done
fi
