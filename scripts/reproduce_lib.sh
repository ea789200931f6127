# Sourced by scripts/reproduce_{dcff,ucp,tt_admm,cc,dns}.sh: one run per (experiment file, seed), resumable.
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

arm() {   # arm <group/name> <seed>
  local exp="$1" seed="$2"
  if "$PY" scripts/row_exists.py "$exp" "$seed"; then echo "skip $exp seed=$seed (row exists)"; return 0; fi
  echo "run  $exp seed=$seed"
  [ -n "${DRY:-}" ] && return 0
  flock "$LOCK" "$PY" train.py experiment="$exp" seed="$seed" logger=none trainer.progress=false \
    paths.results_dir=results/runs
}

final_of() {   # final_of <run name> <seed>: the newest final.pt of that experiment name and seed
  ls -t outputs/"$1"/*-seed"$2"/final.pt 2>/dev/null | head -1 || true
}
