#!/usr/bin/env bash
# Detection track (issue 17 item 3; docs/detection.md). Rows -> results/runs/detection.csv (map50 column; no claims
# are judged from them: they show what the detection path measures on this CPU).
# Usage: bash scripts/reproduce_detection.sh [seed ...]  (default seed 0; make reproduce-detection). DRY=1: the plan.
#
# Per seed: detection/voc_synthetic_ssd_tiny (ssd_tiny at 128 px on 1024 synthetic VOC images, 16 epochs x 64 steps
# of 16) and detection/voc_synthetic_ssd300 (SSD300-VGG16, 50 steps of 4 images: an end-to-end run, not a trained
# detector). Sizing from timed steps (03:1x-03:2x UTC, 2 threads, machine shared with the training grid): the SSD
# augmentation ~0.17 s per image and worker, ssd_tiny ~2.3 s per step with 2 workers at load 4 -> ~25-40 min;
# SSD300 ~9-11 s per training image -> ~36-40 min. Both ~1.3 h per seed; the synthetic images are written on first
# use under .cache/.
# Resumable: scripts/reproduce_lib.sh skips a run whose row exists; an interrupted run continues from its checkpoint.
set -- "${@:-0}"
source "$(dirname "$0")/reproduce_lib.sh" "$@"

for s in "${SEEDS[@]}"; do
  arm detection/voc_synthetic_ssd_tiny "$s"
  arm detection/voc_synthetic_ssd300 "$s"
done
