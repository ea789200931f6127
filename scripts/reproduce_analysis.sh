#!/usr/bin/env bash
# Real runs of the analysis family (XGrad-CAM axioms/faithfulness, unit ablation, before/after compression):
# `make reproduce-analysis [SEEDS]`. A run's seed picks one of the disjoint evenly spread test-image sets
# (engine/analysis.py), so seeds 0 1 2 are independent replicates and the claims are judged from the
# confidence interval over them. Resumable (scripts/reproduce_lib.sh): a run whose judged-ready row exists is
# skipped. Outputs: results/runs/{xgradcam,unit_ablation}.csv, results/analysis/<dataset>_<model>_vs_<compressed>/.
# CPU cost: about 5-8 minutes per seed on 2 free cores (the four CIFAR runs), the MNIST runs about a minute.
# The MNIST runs analyse the DNS authors' released dense LeNet-5:
#   DNS_MODELS=<dir>  the models/ folder of a clone of github.com/yiwenguo/Dynamic-Network-Surgery, converted into
#                     outputs/ref/caffe_lenet5_original.pt by scripts/import_caffe_lenet.py (skipped when absent).
source "$(dirname "$0")/reproduce_lib.sh"
for s in "${SEEDS[@]}"; do
  for e in xgradcam/cifar10_jpeg_resnet20 unit_ablation/cifar10_jpeg_resnet20 unit_ablation/cifar10_jpeg_resnet56 \
           xgradcam/cifar10_jpeg_resnet56; do
    arm_analysis "$e" "$s"
  done
done
REF5=outputs/ref/caffe_lenet5_original.pt
if [ ! -f $REF5 ] && [ -n "${DNS_MODELS:-}" ]; then
  "$PY" scripts/import_caffe_lenet.py "$DNS_MODELS/lenet5/caffe_lenet5_original.caffemodel" $REF5
fi
if [ -f $REF5 ]; then
  for s in "${SEEDS[@]}"; do
    arm_analysis xgradcam/mnist_lenet5 "$s"
    arm_analysis unit_ablation/mnist_lenet5 "$s"
  done
else
  echo "skip the MNIST analysis runs: set DNS_MODELS (see the header) to convert $REF5"
fi
