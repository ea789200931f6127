#!/usr/bin/env bash
# The reduced PA grid (docs/pa.md, issue 16): `make reproduce-pa`.
#
# The binary grid's recipe (docs/binary.md): JPEG CIFAR-10, binary ResNet-20 (Bi-Real form, option-A shortcut), fixed
# class-mixed training subset of 3,840 images x 8 epochs (240 SGD steps of batch 128, lr 0.11, cosine), 2,000 test
# images, one evaluation at the end. Arms (conf/experiment/binary/, paired by seed: same data order, same backbone
# init): pa (M = N = 3), pa_m1n1 (PA's single base), abc_net (ABC-Net-style, M = N = 3), pa_lstsq (ablation:
# least-squares coefficients); the binary grid's bnn and fp arms (paper sd_bnn, skipped when their rows exist).
# Phase 3 (added after the learned beta diverged in phases 1-2, docs/pa.md Results): the same PA arms with the
# activation coefficients fixed, pa_fixed_beta, pa_m1n1_fixed_beta, pa_lstsq_fixed_beta (~360 + 270 + 395 s per seed
# by the sizing below, ~50 min for seeds 0-2).
# Claims: results/reference/pa.yaml grid_* (learned beta) and grid_fixed_beta_* (fixed beta).
#
# Sizing: 20-step timing probe (scripts/bench_binary.py --steps 20, median process CPU per step, 1 thread, batch 128,
# under the CPU lock, torch 2.14): fp 0.71 s, bnn 0.75 s, pa 1.40 s, pa_m1n1 1.04 s, pa_lstsq 1.56 s, abc_net 1.72 s
# (the staircases' element-wise passes and the per-forward quantiles / least squares; 2.0-2.4x FP). With ~20 s per
# run for start-up, data and the evaluation: pa ~360 s, pa_m1n1 ~270 s, pa_lstsq ~395 s, abc_net ~430 s per run,
# ~1,450 s (24 min) per seed for the four PA arms, 4,360 s (~73 min) for seeds 0-2, one run at a time; plus
# ~400 s per seed for bnn + fp where the binary grid has not run them (~93 min in all).
#
# Resumable (scripts/reproduce_lib.sh arm): a run whose row has the experiment file's current config hash from a clean
# commit is skipped; an interrupted run continues from its last epoch checkpoint.
# Usage: bash scripts/reproduce_pa.sh [seed ...]        (default: 0 1 2)
#        DRY=1 prints what would run.
set -euo pipefail
cd "$(dirname "$0")/.."
export RESULTS_DIR=${RESULTS_DIR:-results/runs}   # tracked rows
source scripts/reproduce_lib.sh   # arm: one run per (experiment, seed), skipped when its judged-ready row exists
# Phase 1, the decisive pairs (multi vs single base, PA vs ABC-Net at equal bases), for every seed first; then
# phase 2: the coefficient ablation and the binary grid's bnn / fp arms (skipped when their rows exist); phase 3:
# the fixed-beta arms.
for arms in "pa pa_m1n1 abc_net" "pa_lstsq bnn fp" "pa_fixed_beta pa_m1n1_fixed_beta pa_lstsq_fixed_beta"; do
  for seed in "${SEEDS[@]}"; do
    for a in $arms; do arm binary/cifar10_jpeg_resnet20_"$a" "$seed"; done
  done
done
# the PA arms and grid_* verdicts
[ -n "${DRY:-}" ] || "$PY" scripts/summarize_binary.py --papers pa \
  --signals sign_flip_total weight_rel_error act_coeff_std act_threshold_std || true
