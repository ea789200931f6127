#!/usr/bin/env bash
# DCFF reruns of issue 15 (docs/pruning.md). Rows -> results/runs/dcff.csv, judged (only the seed is overridden).
# Usage: bash scripts/reproduce_dcff.sh [seed ...]        (default seeds 0 1 2; `make reproduce-dcff`)
#        PHASES="scratch ablation zbn" (default, in this order); PHASES=old reruns the pre-issue-15 reduced rows
#        (fine-tuning from the pretrained ResNet-56, init inherit, score_rule recompute). DRY=1 prints the plan.
#
# Phase scratch (the decisive comparison, first): DCFF with the official score rule trained from random init vs a
#   plain compact ResNet-56 of the same widths trained from random init (the paper's protocol; the note's "within
#   about 1 point" signal), 10 epochs x 40 batches of 128, paired seed by seed.
#   Claims: dcff_scratch_tracks_same_width, dcff_scratch_beats_same_width (results/reference/dcff.yaml).
# Phase ablation: DCFF scratch with our old score rule (recompute: the kept set jumps at epoch 1).
# Phase zbn: phase scratch with the init transient taken out (official draws + zero_residual_bn in both arms, a
#   labelled deviation; docs/pruning.md has the 60-step probe that set it). Claims: dcff_scratch_zbn_*.
#   Same budget as phase scratch: ~10-11 min per run idle -> ~1.1 h.
#
# Sizing (timing probe scripts/probe_step_time.py: 3 training steps of batch 128 per model, random inputs, 2 threads, load average 5.4-6.2 on the 2 shared cores, 17:58 UTC; start-up, data, evaluation and latency add ~3 min per run):
#   fused DCFF ResNet-56 6.0 s/step, compact ResNet-56 5.5 s/step (dense 10.4). 400 steps per run:
#   DCFF scratch ~43 min, L1 scratch ~40 min -> phase scratch (3 seeds x 2 arms) ~4.1 h; ablation ~2.2 h.
#   On an idle machine expect roughly a third of that (the probe ran beside the lead's queue). Measured on idle cores
#   (2026-12-02, 2 threads): ~56 s per epoch for both arms, ~10-11 min per run -> phase scratch ~1.1 h, ablation ~0.5 h.
#
# Resumable: scripts/reproduce_lib.sh skips an arm whose row exists at the file's current config hash.
source "$(dirname "$0")/reproduce_lib.sh" "$@"
PHASES=${PHASES:-"scratch ablation zbn"}

for phase in $PHASES; do
  case $phase in
    scratch)
      for s in "${SEEDS[@]}"; do
        arm dcff/cifar10_jpeg_resnet56_scratch "$s"
        arm dcff/cifar10_jpeg_resnet56_l1_scratch "$s"
      done ;;
    ablation)
      for s in "${SEEDS[@]}"; do arm dcff/cifar10_jpeg_resnet56_scratch_recompute "$s"; done ;;
    zbn)
      for s in "${SEEDS[@]}"; do
        arm dcff/cifar10_jpeg_resnet56_scratch_zbn "$s"
        arm dcff/cifar10_jpeg_resnet56_l1_scratch_zbn "$s"
      done ;;
    old)
      arm dcff/cifar10_jpeg_resnet56_dense_reduced 0
      for s in "${SEEDS[@]}"; do
        arm dcff/cifar10_jpeg_resnet56_reduced "$s"
        arm dcff/cifar10_jpeg_resnet56_l1_reduced "$s"
        arm dcff/cifar10_jpeg_resnet56_reduced_10ep "$s"
        arm dcff/cifar10_jpeg_resnet56_l1_reduced_10ep "$s"
      done ;;
    *) echo "unknown phase $phase (scratch | ablation | zbn | old)" >&2; exit 2 ;;
  esac
done
