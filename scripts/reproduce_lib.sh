# Sourced by scripts/reproduce_{dcff,ucp,tt_admm,cc,dns,inq,binary}.sh: one run per (experiment file, seed), resumable.
# A run is skipped when results/runs/<paper>.csv already has its row at the file's current config hash from a
# clean commit (scripts/row_exists.py); an interrupted run continues from its last epoch checkpoint
# (trainer.resume=auto). Only the seed is overridden, so the rows are judged (engine/provenance.py).
# DRY=1 prints what would run. Heavy runs hold the shared CPU lock one at a time.
# Sourced as `source "$(dirname "$0")/reproduce_lib.sh" "$@"`: SEEDS = the script's arguments (default 0 1 2).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export RESULTS_DIR=${RESULTS_DIR:-results/runs}   # tracked rows (ad-hoc runs default to outputs/results)
SEEDS=("$@")
[ $# -gt 0 ] || SEEDS=(0 1 2)
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
export DATA_ROOT=${DATA_ROOT:-../shared/data}
LOCK=${LOCK:-/tmp/cpu-heavy.lock}

arm_with() {   # arm_with <entry script> <group/name> <seed> [override ...]: one run, skipped when its judged-ready row
  # exists; the extra overrides must be non-computational (engine/provenance.py) or the row would not be judged
  local entry="$1" exp="$2" seed="$3"
  shift 3
  if "$PY" scripts/row_exists.py "$exp" "$seed"; then echo "skip $exp seed=$seed (row exists)"; return 0; fi
  echo "run  $entry $exp seed=$seed $*"
  [ -n "${DRY:-}" ] && return 0
  flock "$LOCK" "$PY" "$entry" experiment="$exp" seed="$seed" logger=none trainer.progress=false \
    paths.results_dir="$RESULTS_DIR" "$@"
}
# arm <group/name> <seed>: a training run; its row gets the deployed model's CPU latency (latency_ms, latency_device:
# batch 1 and 64, measured after training while the run still holds the CPU lock; not part of the config hash).
# LATENCY=false (set by a grid whose models are too slow to time at batch 64 on CPU) turns it off.
LATENCY=${LATENCY:-true}
arm() { arm_with train.py "$1" "$2" trainer.latency="$LATENCY"; }
arm_eval() { arm_with evaluate.py "$@"; }    # an evaluate-only experiment file (its `checkpoint:` is a fixed path)
arm_analysis() { arm_with scripts/analyze.py "$@"; }   # an analysis experiment file (xgradcam, unit_ablation)

ensure_ref() {   # ensure_ref <experiment> <run name> <fixed path>: its seed-0 final.pt copied to a fixed path that
  # experiment files name (trained first when its row is missing; trained again, without a second row, when the
  # row exists but this checkout has no run directory)
  [ -f "$3" ] && return 0
  arm "$1" 0
  [ -n "${DRY:-}" ] && return 0
  local f; f=$(final_of "$2" 0)
  if [ -z "$f" ]; then
    RESULTS_DIR=outputs/results flock "$LOCK" "$PY" train.py experiment="$1" seed=0 logger=none trainer.progress=false
    f=$(final_of "$2" 0)
  fi
  mkdir -p "$(dirname "$3")" && cp "$f" "$3"
}

final_of() {   # final_of <run name> <seed>: the newest final.pt of that experiment name and seed
  ls -t outputs/"$1"/*-seed"$2"/final.pt 2>/dev/null | head -1 || true
}
