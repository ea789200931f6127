#!/usr/bin/env bash
# Reproduce the DNS paper's MNIST cells (results/reference/dns.yaml). Rows go to results/runs/dns.csv.
#
# PHASES (default "caffe_init"; add "splice", "released" and/or "own" for the recipes below):
#  caffe_init (issue 15, the most decisive DNS question): does the Caffe init close the 2x gap (ours ~50x at 0.94 %
#   vs the paper's 108x)? Two dense LeNet-5 (seed 0, Caffe solver, x/256 input): Caffe init (xavier, zero bias,
#   bias lr x2; dns/mnist_lenet5_reference_caffe_init) and PyTorch's init (dns/mnist_lenet5_reference_caffe_input),
#   copied to fixed paths (outputs/ref/own_lenet5_{caffe,torch}_init.pt, named in the DNS experiment files); then
#   DNS at the paper recipe from each (dns/mnist_lenet5_own_{caffe,torch}_init), seeds 0 1 2 paired, seed by seed.
#   Claim: dns_caffe_init_compresses_more (results/reference/dns.yaml, metric sparsity).
#   Sizing: timing probe 200 steps of the dense LeNet-5 = 116 s wall on the 2 shared cores at load average 7.2
#   (incl. one 10k-image evaluation); the brief's uncontended 2,200 img/s gives dense 10K steps x 64 ~ 5 min and
#   DNS 16K steps ~ 8 min. Phase total: 2 dense + 6 DNS = 58 min uncontended (3-4x that under the current load).
#  splice (claim dns_splicing_not_worse, dns.md signal (d)): from the released dense LeNet-5 (outputs/ref/
#   caffe_lenet5_original.pt, written by phase released), one-way pruning at the splice arm's c (overshoots to ~1,286x)
#   and at the c that scripts/calibrate_dns.py found on compression only (dns/mnist_lenet5_caffe_ref_nosplice_equal),
#   seeds 0 1 2 paired with dns/mnist_lenet5_caffe_ref. ~10 min per run.
#  released: surgery from the authors' released dense LeNets (needs DNS_MODELS, below).
#  own: DNS from our own Caffe-solver dense models (torchvision mean/std input, and LeNet-5 with x/256 input), each
#   dense start trained once (seed 0) and copied to a fixed path the DNS files name, so every row is judged.
#
# released: DNS_MODELS=<dir>   the models/ folder of a clone of github.com/yiwenguo/Dynamic-Network-Surgery (holds
#                      lenet5/caffe_lenet5_{original,sparse}.caffemodel and lenet300100/...); converted into
#                      outputs/ref/ by scripts/import_caffe_lenet.py. The released files are evaluated into rows too.
#   SEEDS5="0 1 2"  SEEDS300="0 1 2"   surgery seeds (all start from the same released dense model)
#   ABLATION=1         also the no-splice ablation (same seeds)
source "$(dirname "$0")/reproduce_lib.sh"
SEEDS5=${SEEDS5:-"0 1 2"}
SEEDS300=${SEEDS300:-"0 1 2"}
PHASES=${PHASES:-caffe_init}

if [[ " $PHASES " == *" caffe_init "* ]]; then
  ensure_ref dns/mnist_lenet5_reference_caffe_init mnist_lenet5_reference_caffe_init outputs/ref/own_lenet5_caffe_init.pt
  ensure_ref dns/mnist_lenet5_reference_caffe_input mnist_lenet5_reference_caffe_input outputs/ref/own_lenet5_torch_init.pt
  for s in $SEEDS5; do
    arm dns/mnist_lenet5_own_caffe_init "$s"
    arm dns/mnist_lenet5_own_torch_init "$s"
  done
fi
if [[ " $PHASES " == *" splice "* ]]; then
  [ -f outputs/ref/caffe_lenet5_original.pt ] || { echo "error: outputs/ref/caffe_lenet5_original.pt is missing: run" \
    "PHASES=released DNS_MODELS=<dir> first, or scripts/import_caffe_lenet.py <dir>/lenet5/caffe_lenet5_original.caffemodel" \
    "outputs/ref/caffe_lenet5_original.pt" >&2; exit 1; }
  for s in $SEEDS5; do
    arm dns/mnist_lenet5_caffe_ref_nosplice "$s"
    arm dns/mnist_lenet5_caffe_ref_nosplice_equal "$s"
  done
fi
[[ " $PHASES " == *" released "* || " $PHASES " == *" own "* ]] || exit 0

if [[ " $PHASES " == *" released "* ]]; then
  : "${DNS_MODELS:?set DNS_MODELS to the models/ folder of a Dynamic-Network-Surgery clone (see the header)}"
  for k in original sparse; do
    $PY scripts/import_caffe_lenet.py "$DNS_MODELS/lenet5/caffe_lenet5_$k.caffemodel" outputs/ref/caffe_lenet5_$k.pt
    $PY scripts/import_caffe_lenet.py "$DNS_MODELS/lenet300100/caffe_lenet300100_$k.caffemodel" \
      outputs/ref/caffe_lenet300100_$k.pt --model lenet300_100
  done
  # the released files themselves: dense references and sparse results (error, nonzeros); the experiment files name
  # the converted files, so these rows are judged (recounts)
  # (one row per surgery seed for the dense files: the no-loss claims pair each surgery seed with its start)
  for s in $SEEDS5; do arm_eval dns/mnist_lenet5_reference_released "$s"; done
  for s in $SEEDS300; do arm_eval dns/mnist_lenet300_100_reference_released "$s"; done
  for e in mnist_lenet5_released mnist_lenet300_100_released; do arm_eval dns/$e 0; done
  # surgery from the released dense models: LeNet-5 16K iterations, LeNet-300-100 25K iterations (fidelity paper)
  for s in $SEEDS5; do arm dns/mnist_lenet5_caffe_ref "$s"; done
  for s in $SEEDS300; do
    arm dns/mnist_lenet300_100_caffe_ref "$s"
    arm dns/mnist_lenet300_100_caffe_ref_c_calibrated "$s"
  done
  if [ -n "${ABLATION:-}" ]; then   # dns.md signal (d): one-way pruning with the same thresholds, paired by seed
    for s in $SEEDS5; do arm dns/mnist_lenet5_caffe_ref_nosplice "$s"; done
  fi
  [[ " $PHASES " == *" own "* ]] || exit 0
fi

# own: our own dense references (Caffe's LeNet solver, 10K iterations, batch 64; torchvision mean/std input, and
# LeNet-5 also with Caffe's x/256 input), seed 0, copied to the fixed paths the DNS files name; each evaluated once
# per DNS seed (the "worse" arms of the own-dense no-loss claims); then DNS from each, seeds paired.
ensure_ref dns/mnist_lenet5_reference mnist_lenet5_reference outputs/ref/own_lenet5_meanstd.pt
ensure_ref dns/mnist_lenet300_100_reference mnist_lenet300_100_reference outputs/ref/own_lenet300_100_meanstd.pt
ensure_ref dns/mnist_lenet5_reference_caffe_input mnist_lenet5_reference_caffe_input outputs/ref/own_lenet5_torch_init.pt
for s in $SEEDS5; do
  arm_eval dns/mnist_lenet5_reference_own "$s"
  arm_eval dns/mnist_lenet5_reference_caffe_input_own "$s"
  arm dns/mnist_lenet5 "$s"
  arm dns/mnist_lenet5_own_caffe_input "$s"
  [ -z "${ABLATION:-}" ] || arm dns/mnist_lenet5_nosplice "$s"
done
for s in $SEEDS300; do
  arm_eval dns/mnist_lenet300_100_reference_own "$s"
  arm dns/mnist_lenet300_100 "$s"
done
