#!/usr/bin/env bash
# INQ at small scale (no MNIST cell in the paper; the reduced-budget checks of its claims, results/reference/inq.yaml):
# LeNet-5 and LeNet-300-100 at 5/4/3/2 bits, the float baseline rows, random partition, and DNS -> INQ on LeNet-5.
# Every experiment file names its float start at a fixed path under outputs/ref/, so only the seed is overridden
# and the rows are judged (engine/provenance.py). Rows go to results/runs/inq.csv. Resumable: a run whose judged-ready
# row exists is skipped (scripts/reproduce_lib.sh). The ImageNet cells (conf/experiment/inq/imagenet_*) cannot run here.
#
# Float starts (the DNS authors' released Caffe LeNets, same lab as INQ; Caffe input scale, data=mnist_caffe):
#   DNS_MODELS=<dir>  the models/ folder of a clone of github.com/yiwenguo/Dynamic-Network-Surgery (lenet5/ and
#                     lenet300100/ caffemodels), converted into outputs/ref/ by scripts/import_caffe_lenet.py.
# PARTS (default "mnist dns"):
#   mnist   fp rows + {5,4,3,2}-bit for LeNet-5 and LeNet-300-100, and the random-partition ablation (LeNet-5)
#   dns     INQ 5-bit of the released DNS LeNet-5 (inq/mnist_lenet5_dns_5bit) and of our own DNS caffe_ref seed-0
#           model (needs its run directory: scripts/reproduce_dns.sh PHASES=released), and the one-run DNS -> INQ
#   cifar   ResNet-20 5/4-bit on cifar10_jpeg from the seed-0 backbones/cifar10_jpeg_resnet20_finetune model
# BITS="5 4 3 2"  MODELS="lenet5 lenet300_100"; seeds = the script's arguments (default 0 1 2).
# Sizing (2 free cores): a LeNet-5 INQ run 200 steps x (4..10) portions ~ 0.5-1.5 min, LeNet-300-100 500 steps x
# portions ~ 1-2 min, the fp rows seconds; DNS -> INQ one run ~ 8 min; ResNet-20 ~ 6-8 min per run.
source "$(dirname "$0")/reproduce_lib.sh"
BITS=${BITS:-"5 4 3 2"}
MODELS=${MODELS:-"lenet5 lenet300_100"}
PARTS=${PARTS:-"mnist dns"}
has() { [[ " $PARTS " == *" $1 "* ]]; }
REF=outputs/ref

convert() {   # convert <caffemodel path under DNS_MODELS> <out.pt> [--model lenet300_100]
  [ -f "$2" ] && return 0
  : "${DNS_MODELS:?set DNS_MODELS to the models/ folder of a Dynamic-Network-Surgery clone (see the header)}"
  "$PY" scripts/import_caffe_lenet.py "$DNS_MODELS/$1" "$2" "${@:3}"
}

if has mnist || has dns; then
  convert lenet5/caffe_lenet5_original.caffemodel $REF/caffe_lenet5_original.pt
  convert lenet5/caffe_lenet5_sparse.caffemodel $REF/caffe_lenet5_sparse.pt
  convert lenet300100/caffe_lenet300100_original.caffemodel $REF/caffe_lenet300100_original.pt --model lenet300_100
fi

if has mnist; then
  for model in $MODELS; do
    for s in "${SEEDS[@]}"; do
      arm_eval inq/mnist_${model}_fp "$s"
      for b in $BITS; do arm inq/mnist_${model}_${b}bit "$s"; done
      [ "$model" = lenet5 ] && arm inq/mnist_lenet5_5bit_random "$s"
    done
  done
fi

if has dns; then
  for s in "${SEEDS[@]}"; do arm inq/mnist_lenet5_dns_5bit "$s"; done
  dns_run=$(final_of mnist_lenet5_caffe_ref 0)
  if [ -f $REF/dns_lenet5_caffe_ref_seed0_sparse.pt ] || [ -n "$dns_run" ]; then
    [ -f $REF/dns_lenet5_caffe_ref_seed0_sparse.pt ] || \
      "$PY" scripts/export_sparse.py "$dns_run" $REF/dns_lenet5_caffe_ref_seed0_sparse.pt
    for s in "${SEEDS[@]}"; do arm inq/mnist_lenet5_dns_caffe_ref_5bit "$s"; done
  else
    echo "skip inq/mnist_lenet5_dns_caffe_ref_5bit: no dns/mnist_lenet5_caffe_ref seed-0 run directory here"
  fi
  arm inq/mnist_lenet5_dns_inq 0
fi

if has cifar; then
  ensure_ref backbones/cifar10_jpeg_resnet20_finetune cifar10_jpeg_resnet20_finetune \
    $REF/inq_resnet20_cifar10_jpeg_finetune.pt
  for s in "${SEEDS[@]}"; do
    arm_eval inq/cifar10_jpeg_resnet20_fp "$s"
    for b in 5 4; do arm inq/cifar10_jpeg_resnet20_${b}bit "$s"; done
  done
fi
