#!/usr/bin/env bash
# AIP reduced experiment (issue 17; docs/aip.md). Rows -> results/runs/aip.csv, judged (only the seed is overridden).
# Usage: bash scripts/reproduce_aip.sh [seed ...]          (default seeds 0 1 2; `make reproduce-aip`). DRY=1 prints the plan.
#
# Per seed, three arms of the same schedule (pretrained ResNet-56, cifar10_jpeg; three pruning steps of the 27
# block-conv1 widths to 15 / 30 / 45 % of the FLOPs removed, 150 recovery steps of batch 64 after each, then 150
# fine-tune steps: 600 steps): aip (KD + attention transfer + discriminator), no_disc (no discriminator), no_kt (no
# KD / attention transfer, discriminator kept). Claims: aip_transfer_recovers_faster (aip > no_kt) and
# aip_discriminator_adds_to_transfer (aip > no_disc, guarded by the discriminator's accuracy) in
# results/reference/aip.yaml.
# Sizing (timing probe, 03:10 UTC, 1 thread, random batches of 32, 3 steps: the machine was loaded by other
# helpers, so CPU time was measured, not wall time): dense ResNet-56 training step 22 ms CPU per image; the
# teacher's forward adds ~2 ms per image. The students keep 85 / 70 / 55 / 55 % of the FLOPs over the four stages
# (mean 66 %): ~16.5 ms CPU per image x 38,400 images ~ 630 CPU-s ~ 5.5 min on 2 threads; evaluations (4 x 1000
# stage-end images, the full 10,000 test images at the end) ~0.5 min; three FLOPs bisections and start-up ~1 min.
# ~7 min per run, 9 runs ~ 65 min on an idle machine (the brief's 70 img/s for ResNet-56 training gives the same
# order); roughly 2-3x that under the load of the other jobs. Measured 2026-12-01 (idle, holding the CPU lock,
# latency included): 12-15 min per run, the 9 runs ~2 h.
#
# Resumable: scripts/reproduce_lib.sh skips an arm whose row exists at the file's current config hash; an
# interrupted run continues from its last stage/epoch checkpoint (finished pruning stages are replayed).
source "$(dirname "$0")/reproduce_lib.sh" "$@"

for s in "${SEEDS[@]}"; do
  for a in aip no_disc no_kt; do arm aip/cifar10_jpeg_resnet56_$a "$s"; done
done
