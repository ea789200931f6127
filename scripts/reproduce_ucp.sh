#!/usr/bin/env bash
# UCP reruns of issue 15 (docs/pruning.md). Rows -> results/runs/ucp.csv, judged (only the seed is overridden).
# Usage: bash scripts/reproduce_ucp.sh [seed ...]          (default seeds 0 1 2; `make reproduce-ucp`)
#        PHASES="select scratch" (default, in this order). DRY=1 prints the plan.
#
# Phase select (first: does the MSEB choose better channels?): the same gates (one after each block's conv1, trained
#   with the backbone frozen) and the same stage widths 8/16/32; channels by the gates vs at random vs by L1 norm;
#   surviving weights kept and fine-tuned; paired seed by seed. Claims: ucp_se_beats_random, ucp_se_vs_l1.
# Phase scratch (the paper's protocol, widths only): UCP's threshold widths vs one uniform inner rate at the same
#   FLOPs, both retrained from random initialisation. Claim: ucp_allocation_beats_uniform.
# SIZING: filled from the probe (docs/pruning.md)
#
# Resumable: scripts/reproduce_lib.sh skips an arm whose row exists at the file's current config hash.
source "$(dirname "$0")/reproduce_lib.sh" "$@"
PHASES=${PHASES:-"select scratch"}

for phase in $PHASES; do
  case $phase in
    select)
      for s in "${SEEDS[@]}"; do
        for sel in se random l1; do arm ucp/cifar10_jpeg_resnet56_select_$sel "$s"; done
      done ;;
    scratch)
      for s in "${SEEDS[@]}"; do
        arm ucp/cifar10_jpeg_resnet56_scratch "$s"
        arm ucp/cifar10_jpeg_resnet56_scratch_uniform "$s"
      done ;;
    *) echo "unknown phase $phase (select | scratch)" >&2; exit 2 ;;
  esac
done
