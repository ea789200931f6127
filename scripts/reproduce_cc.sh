#!/usr/bin/env bash
# CC reruns of issue 15 (docs/lowrank.md). Rows -> results/runs/cc.csv, judged (only the seed is overridden).
# Usage: bash scripts/reproduce_cc.sh [seed ...]            (default seeds 0 1 2; `make reproduce-cc`)
#        DRY=1 prints the plan. PHASES=old: the issue-7 rows (legacy curve).
#
# Joint (pruning + TD) vs pruning-only vs TD-only at equal planned MACs (com_ratio 0.5; the official joint curve for
# every arm, so the per-layer budgets are identical), pretrained ResNet-20, fine-tuned 5 epochs x 40 batches,
# paired seed by seed. Rows carry the strict MACs and the official counter's (extra.macs_official).
# Claims: cc_joint_beats_pruning, cc_joint_beats_td (results/reference/cc.yaml).
# Sizing (timing probe scripts/probe_step_time.py: 3 training steps of batch 128 per model, random inputs, 2 threads, load average 5.4-6.2 on the 2 shared cores, 17:58 UTC; start-up, data, evaluation and latency add ~3 min per run):
#   Stage 1 + 2 with the official channel_forward (one SVD per candidate channel per step, as cal_metric):
#   0.4 s for a 16x16 layer, 144 s for a 64x64 layer -> ~17 min per run for ResNet-20's 18 layers; fine-tuning
#   200 steps x ~2.5 s ~8 min -> ~27 min per run, 9 runs ~4 h (channel_forward: approx would cut Stage 2 to
#   seconds, at a 0.2 % difference in the channel scores; not used, the official rule is the default).
#
# Measured 2026-12-02 (idle cores, 2 threads, latency included): 3.5-5.3 min per run, the 9 runs 41 min.
#
# Resumable: scripts/reproduce_lib.sh skips an arm whose row exists at the file's current config hash.
source "$(dirname "$0")/reproduce_lib.sh" "$@"
PHASES=${PHASES:-main}

for phase in $PHASES; do
  case $phase in
    main)
      for s in "${SEEDS[@]}"; do
        for v in joint pruning td; do arm cc/cifar10_jpeg_resnet20_${v}_official "$s"; done
      done ;;
    old)
      for v in joint pruning td; do arm cc/cifar10_jpeg_resnet20_${v}_reduced 0; done ;;
    *) echo "unknown phase $phase (main | old)" >&2; exit 2 ;;
  esac
done
