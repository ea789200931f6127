#!/usr/bin/env bash
# Detection track (issue 17 item 3; docs/detection.md). Rows -> results/runs/detection.csv (map50 column; no claims
# are judged from them: they show what the detection path measures on this CPU).
# Usage: bash scripts/reproduce_detection.sh [seed ...]  (default seed 0; make reproduce-detection). DRY=1: the plan.
#
# Per seed: detection/voc_synthetic_ssd_tiny (ssd_tiny at 128 px on 1024 synthetic VOC images, 40 epochs x 64 steps
# of 16); then channel pruning of its backbone from the seed-0 dense run copied to outputs/ref/ (ensure_ref):
# detection/voc_synthetic_ssd_tiny_l1 (one-shot L1, 50 % of the FLOPs, 384 fine-tune steps) and
# detection/voc_synthetic_ssd_tiny_aip (AIP's two pruning steps to the same FLOPs with recovery, 384 steps in all;
# transfer/discriminator off for detectors); then detection/voc_synthetic_ssd300 (SSD300-VGG16, 50 steps of 4
# images: an end-to-end run, not a trained detector).
# Sizing (idle 2 cores, 2 workers; docs/detection.md "Measured on this CPU"): ssd_tiny 20-27 s per epoch of 64 steps
# -> ~20 min; each pruning arm 6 epochs + evaluations ~4 min; SSD300 ~5-10 s per training image -> ~20-35 min.
# Resumable: scripts/reproduce_lib.sh skips a run whose row exists; an interrupted run continues from its checkpoint.
set -- "${@:-0}"
LATENCY=false   # no timed forward passes: SSD300 at batch 64 takes minutes per pass on CPU (rows: map50 only)
source "$(dirname "$0")/reproduce_lib.sh" "$@"

for s in "${SEEDS[@]}"; do
  arm detection/voc_synthetic_ssd_tiny "$s"
  ensure_ref detection/voc_synthetic_ssd_tiny voc_synthetic_ssd_tiny outputs/ref/voc_synthetic_ssd_tiny.pt
  arm detection/voc_synthetic_ssd_tiny_l1 "$s"
  arm detection/voc_synthetic_ssd_tiny_aip "$s"
  arm detection/voc_synthetic_ssd300 "$s"
done
