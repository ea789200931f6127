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
# Sizing (timing probe scripts/probe_step_time.py: 3 training steps of batch 128 per model, random inputs, 2 threads, load average 5.4-6.2 on the 2 shared cores, 17:58 UTC; start-up, data, evaluation and latency add ~3 min per run):
#   SE ResNet-56 (gates_only) 6.8 s/step, compact ResNet-56 5.5 s/step. select arm: 80 gate steps + 40 scoring
#   batches + 120 fine-tune steps ~23 min -> phase select (3 seeds x 3 arms) ~3.5 h; scratch arm: 80 + 40 + 400
#   steps ~48 min -> phase scratch (3 x 2) ~4.8 h. On an idle machine roughly a third. Measured 2026-12-02, phase
#   select: 6-8 min per arm (wall_time_s 372-455 s; 9 arms ~70 min).
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
