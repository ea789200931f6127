#!/usr/bin/env bash
# The NAT++ reduced grid (docs/nat.md, issue 18 item 5): `make reproduce-nat`. Rows -> results/runs/nat.csv, judged.
#
# JPEG CIFAR-10, fixed class-mixed training subset of 3,000 images, 2,000 test images, flip + crop. Network: the DARTS
# CIFAR skeleton at width 8 with 5 cells (reductions at cells 1 and 3). Arms (conf/experiment/nat/, paired by seed):
#   <cell>_original  the input cell (DARTS; the ResNet basic block as a cell) trained from scratch: 8 epochs x 46 steps
#                    of batch 64, SGD lr 0.05 momentum 0.9 wd 3e-4, cosine
#   <cell>_nat       NAT++ search (super-net of the same skeleton, every edge all 13 ops; uniform input cells; 600
#                    training images held out, the other 2,400 split 40:60 between the weights and the GCN policy;
#                    10 epochs x 15 weight steps, one REINFORCE step after each) -> 10 transformed <cell> cells, the
#                    best by shared-weight accuracy on the held-out images -> retrained with the original's recipe
#   <cell>_nat_random  the control: as <cell>_nat with the policy's lr 0 (it stays at its initialisation), so the
#                    transformed cell is the best of 10 drawn from the initial masked softmax
# Claims (results/reference/nat.yaml): nat_{darts,resblock}_not_worse_reduced (top-1 within 1 point, guarded by
# extra.changed_edges), nat_{darts,resblock}_fewer_madds_reduced (exact MAdds recount) and
# nat_{darts,resblock}_policy_beats_random_reduced (learned policy vs the lr-0 control, guarded by extra.policy_shift).
#
# Sizing (timing probe 03:11 UTC, 1 thread, load average 5-6 from the other jobs, batch 64): super-net weight step
# 2.46 s, REINFORCE step (two super-net forwards + the policy) 1.47 s, shared-weight scoring of one candidate on the
# 600 held-out images 5.9 s; retrain step DARTS 1.35 s, ResBlock 0.36 s; evaluation of 500 test images DARTS 5.3 s,
# ResBlock 1.9 s. Per seed: darts_original 368 x 1.35 + 21 + ~15 start-up = ~530 s; darts_nat 150 x 3.9 (search)
# + 11 x 5.9 (derive) + <= 530 (the transformed cell is no dearer on stride-1 edges) = ~1,180 s; resblock_original
# ~160 s; resblock_nat ~585 + 50 + 160 = ~800 s -> ~2,650 s per seed, 12 runs ~2.2 h at that load, about half on an
# idle machine with 2 threads. The two nat_random controls cost what their nat arms cost: +~1,980 s per seed, 18 runs
# ~3.3 h at that load.
#
# Resumable (scripts/reproduce_lib.sh arm): a run whose row has the experiment file's current config hash from a clean
# commit is skipped; an interrupted run continues from its last epoch checkpoint (search and retrain stages alike).
# Usage: bash scripts/reproduce_nat.sh [seed ...]        (default: 0 1 2); DRY=1 prints what would run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/reproduce_lib.sh "$@"   # arm: one run per (experiment, seed), skipped when its judged-ready row exists
PREFIX=nat/cifar10_jpeg

for seed in "${SEEDS[@]}"; do
  for cell in darts resblock; do
    for a in original nat nat_random; do arm "$PREFIX"_"$cell"_"$a" "$seed"; done
  done
done
