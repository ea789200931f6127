#!/usr/bin/env bash
# ACP reduced experiment (issue 17; docs/acp.md). Rows -> results/runs/acp.csv, judged (only the seed is overridden).
# Usage: bash scripts/reproduce_acp.sh [seed ...]          (default seeds 0 1 2; `make reproduce-acp`). DRY=1 prints the plan.
#
# Per seed, in this order: the ACP run (clustering + PSO search, 10 particles x 8 cycles, fitness on 1000 held-out
# training images; its search is cached under outputs/acp_search/), then three controls at the FLOPs of that
# search's gbest: the clustering widths alone (cluster_only), one uniform rate with ACP's random channel choice
# (uniform), and L1-norm pruning at one uniform rate (l1). Every arm's structure gets the same 10-step fitness
# fine-tune and the same retraining (3 epochs x 40 batches of 128). Claims: acp_search_beats_cluster_only,
# acp_beats_uniform_widths, acp_beats_l1_equal_flops (results/reference/acp.yaml).
# Sizing (timing probe of 20 steps: 10 fitness + 5 retrain steps and the evaluations, 2 threads holding the CPU lock, load average 1.3, 00:40 UTC; pretrained
# ResNet-56, cifar10_jpeg): clustering of 200 images 1.9 s; one fitness evaluation = 10 steps of batch 64 on a
# compact net (6.0 s) + 1000 held-out images (3.4 s) ~ 10 s; retraining 1.24 s/step at batch 128.
#   ACP arm: 90 evaluations ~ 15 min + 120 retrain steps 2.5 min + test eval/start-up ~1.5 min ~ 19 min;
#   each control: 1 evaluation + retraining ~ 4.5 min. Per seed ~ 33 min; 3 seeds ~ 1.7 h on an idle machine,
#   roughly 3x that at the load average 5-6 of the other probes.
#
# Resumable: scripts/reproduce_lib.sh skips an arm whose row exists at the file's current config hash; the PSO
# search saves its swarm after every cycle and continues from there.
source "$(dirname "$0")/reproduce_lib.sh" "$@"

for s in "${SEEDS[@]}"; do
  for a in acp cluster_only uniform l1; do arm acp/cifar10_jpeg_resnet56_$a "$s"; done
done
