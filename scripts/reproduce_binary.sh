#!/usr/bin/env bash
# The decisive reduced binary grid (docs/binary.md "Decisive reduced grid", issue 14): `make reproduce-binary`.
#
# JPEG CIFAR-10, binary ResNet-20 (Bi-Real form), fixed class-mixed training subset of 3,840 images x 8 epochs
# (240 steps of batch 128), flip + crop, 2,000 test images, one evaluation at the end. Arms (conf/experiment/binary/,
# all paired by seed: same data order, same backbone init where arms share it):
#   SGD (the papers' CIFAR recipe: lr 0.11, momentum 0.9, wd 1e-4, cosine; EDE t 1e-3 -> 10 over the 8 epochs):
#     fp, bnn, sign_ede, sd_bnn, sd_bnn_2stage (W32A1 4 ep -> W1A1 4 ep), sd_bnn_no_wsd, sd_bnn_no_asd, irnet,
#     approx_bnn, ir2net, ir2net_no_restriction
#   Adam (lr 1e-3, no wd; cancels Libra-PB's division-by-sigma step-size effect): sd_bnn, sign_ede, irnet
# Order: the decisive pairs first for seeds 0-2 (SD-BNN vs sign+EDE, IR2Net vs ApproxSign BNN, under SGD), then the
# Adam pairs with IR-Net, then the rest, so a partial grid already gives verdicts.
#
# Sizing (20-step timing probe per arm, scripts/bench_binary.py, process CPU time, 1 thread, batch 128): FP 0.75 s
# per step, one-pass binary arms 0.68-0.96 s, IR2Net 1.63 s (two passes), plus ~20 s per run for start-up, data and
# the evaluation -> 180-250 s per one-pass run, ~410 s per IR2Net run; 3,270 s per seed for all 14 arms, 42 runs =
# ~2.7 h one run at a time (per-arm table: docs/binary.md "Sizing").
#
# Resumable (scripts/reproduce_lib.sh arm): a run whose row has the experiment file's current config hash from a clean
# commit is skipped; an
# interrupted run continues from its last epoch checkpoint (trainer.resume=auto finds its run directory).
# Usage: bash scripts/reproduce_binary.sh [seed ...]        (default: 0 1 2)
#        PHASES="1 2" to run only some phases; DRY=1 prints what would run.
set -euo pipefail
cd "$(dirname "$0")/.."
export RESULTS_DIR=${RESULTS_DIR:-results/runs}   # tracked rows
source scripts/reproduce_lib.sh   # arm: one run per (experiment, seed), skipped when its judged-ready row exists
SEEDS=("${@:-0}")
[ $# -gt 0 ] || SEEDS=(0 1 2)
PHASES=${PHASES:-"1 2 3"}
PREFIX=binary/cifar10_jpeg_resnet20
PHASE1="sd_bnn sign_ede ir2net approx_bnn"
PHASE2="sd_bnn_adam sign_ede_adam irnet irnet_adam"
PHASE3="fp bnn sd_bnn_2stage sd_bnn_no_wsd sd_bnn_no_asd ir2net_no_restriction"

for phase in $PHASES; do
  arms=PHASE$phase
  for seed in "${SEEDS[@]}"; do
    for a in ${!arms}; do arm "$PREFIX"_"$a" "$seed"; done
  done
done
[ -n "${DRY:-}" ] || "$PY" scripts/summarize_binary.py || true
