#!/usr/bin/env bash
# The NASB reduced grid (docs/nasb.md, issue 16 item 3): `make reproduce-nasb`.
#
# JPEG CIFAR-10, fixed class-mixed training subset of 3,840 images, 2,000 test images, flip + crop; the binary grid's
# retrain recipe (8 epochs x 30 steps of batch 128, SGD lr 0.11 momentum 0.9 wd 1e-4, cosine). Arms
# (conf/experiment/nasb/, paired by seed):
#   nasb_reduced         search (proxy supernet cells [1,2,2], first-order DARTS, 6 epochs x 15 steps on half the
#                        subset, alpha on the other half, frozen for the first 2 epochs) -> derive -> retrain the
#                        derived cells in the Bi-Real ResNet-20 skeleton; the genotype lands in the run dir
#   bireal_cell_reduced  the hand-designed Bi-Real cell (= Bi-Real ResNet-20, 1,069,696 OPs, the space's ceiling)
#   random_cell_reduced  a random genotype of the same space (isolates the search)
#   nasb_long_search     nasb_reduced with a 7x longer search (42 epochs, 600 alpha steps): nasb_reduced's alpha
#                        moved by at most 0.14, so the claims compare a search only where alpha moved by > 0.5
#                        (guard in results/reference/nasb.yaml); ~35 min per seed, ~1.75 h for seeds 0-2
# The search-only file (nasb/cifar10_jpeg_nasb_search_reduced) is not part of the grid.
#
# Sizing (timing probe under flock, 1 thread, batch 128, the experiment files with trainer.max_steps):
# search step with its alpha step 2.9 s (10 steps + supernet evaluation on 2,000 images: 34 s), retrain step 0.85 s
# (20 steps + evaluation: 20 s), ~10 s start-up per run. Per seed: nasb ~90 x 2.9 + 240 x 0.85 + 25 = ~490 s
# (the 30 alpha-frozen search steps cost less), bireal_cell and random_cell ~230 s each -> ~950 s per seed,
# 9 runs = ~48 min one run at a time.
#
# Resumable (scripts/reproduce_lib.sh arm): a run whose row has the experiment file's current config hash from a clean
# commit is skipped; an interrupted run continues from its last epoch checkpoint (search and retrain stages alike).
# Usage: bash scripts/reproduce_nasb.sh [seed ...]        (default: 0 1 2); DRY=1 prints what would run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/reproduce_lib.sh "$@"   # arm: one run per (experiment, seed), skipped when its judged-ready row exists
PREFIX=nasb/cifar10_jpeg
ARMS="nasb_reduced bireal_cell_reduced random_cell_reduced nasb_long_search"

for seed in "${SEEDS[@]}"; do
  for a in $ARMS; do arm "$PREFIX"_"$a" "$seed"; done
done
