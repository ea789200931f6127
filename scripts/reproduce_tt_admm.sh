#!/usr/bin/env bash
# TT-ADMM reruns of issue 15 (docs/lowrank.md). Rows -> results/runs/tt_admm.csv, judged (only the seed is overridden).
# Usage: bash scripts/reproduce_tt_admm.sh [seed ...]       (default seeds 0 1 2; `make reproduce-tt_admm`)
#        PHASES="probe long" (default, in this order). DRY=1 prints the plan. PHASES=old: the issue-7 rows.
#
# Phase probe (first: the decisive comparison depends on its outcome): rho in {0, 1e-3, 1e-2, 1e-1, 1} with the
#   official order (Z/U at the start of every epoch incl. 0) and the official lr 0.1, seeds paired; rho = 0 is the
#   drift control. Signals per row: extra.admm_rel_gap, top1_before/after_decomposition. Claim:
#   tt_admm_rho_beats_drift (the best rho's top-1 after fine-tuning vs rho = 0).
# Phase long: the probe's best rho (set in tt_admm/cifar10_jpeg_resnet20_admm_long.yaml; 1e-2 before the probe -
#   edit and commit it if the probe says otherwise) vs TT-SVD + fine-tuning at 600 equal steps, same ranks.
#   Claim: tt_admm_beats_tt_svd.
# Sizing (timing probe scripts/probe_step_time.py: 3 training steps of batch 128 per model, random inputs, 2 threads, load average 5.4-6.2 on the 2 shared cores, 17:58 UTC; start-up, data, evaluation and latency add ~3 min per run):
#   ResNet-20 ADMM step 2.45 s, Z/U update 1.2 s, TT ResNet-20 fine-tune step 1.74 s, stage-start projection 3.7 s.
#   probe run: 100 ADMM + 60 FT steps ~7 min -> phase probe (5 rho x 3 seeds) ~1.8 h; long: ADMM run (400 + 200
#   steps) ~24 min, TT-SVD run (600 steps) ~19 min -> phase long (3 seeds) ~2.2 h. On an idle machine ~a third.
# Measured 2026-12-01 (idle cores, 2 threads, latency included): probe run ~4.5 min (phase probe ~70 min); long ADMM
#   run 10.3 min, TT-SVD run 11.0 min (phase long ~65 min).
#
# Resumable: scripts/reproduce_lib.sh skips an arm whose row exists at the file's current config hash.
source "$(dirname "$0")/reproduce_lib.sh" "$@"
PHASES=${PHASES:-"probe long"}

for phase in $PHASES; do
  case $phase in
    probe)
      for s in "${SEEDS[@]}"; do
        for r in 0 1e-3 1e-2 1e-1 1; do arm tt_admm/cifar10_jpeg_resnet20_rho_probe_$r "$s"; done
      done
      [ -n "${DRY:-}" ] || "$PY" - <<'PYEOF' || true
from engine.results import read_rows
rows = [r for r in read_rows("results/runs/tt_admm.csv") if r["experiment"].startswith("cifar10_jpeg_resnet20_rho_probe_")]
by = {}
for r in rows:
    by.setdefault(r["experiment"].rsplit("_", 1)[1], []).append(float(r["top1"]))
for k, v in sorted(by.items(), key=lambda kv: -sum(kv[1]) / len(kv[1])):
    print(f"rho {k:>5}: top-1 {sum(v) / len(v):.2f} over {len(v)} seeds")
print("set the best rho in conf/experiment/tt_admm/cifar10_jpeg_resnet20_admm_long.yaml (commit) before phase long")
PYEOF
      ;;
    long)
      for s in "${SEEDS[@]}"; do
        arm tt_admm/cifar10_jpeg_resnet20_admm_long "$s"
        arm tt_admm/cifar10_jpeg_resnet20_svd_long "$s"
      done ;;
    old)
      for m in tt_admm tt_svd; do arm tt_admm/cifar10_jpeg_resnet20_${m}_reduced 0; done ;;
    *) echo "unknown phase $phase (probe | long | old)" >&2; exit 2 ;;
  esac
done
