#!/usr/bin/env bash
# Run reproduce grids one after another from a clean worktree of HEAD, in the background-friendly way
# docs/run_queue.md describes: `bash scripts/run_queue.sh sketch dns aip` (each name is scripts/reproduce_<name>.sh).
# A name may carry the grid's environment as NAME=VALUE words before it: `MODELS=resnet56 sketch dns`.
#
# The worktree (RUNS_DIR, default ../runs beside this checkout) is created at this checkout's HEAD when missing,
# with this checkout's .venv linked and its build/ copied (the native kernels). An existing worktree is used as it
# is: move it to a new commit yourself (`git -C ../runs checkout --detach <commit>`) between queues. Rows land in
# $RUNS_DIR/results/runs; bring them here with `python scripts/collect_rows.py $RUNS_DIR`. Every grid is resumable,
# so a queue killed part-way (or lost with the machine) is restarted with the same command.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
RUNS_DIR=${RUNS_DIR:-$HERE/../runs}
[ $# -gt 0 ] || { echo "usage: bash scripts/run_queue.sh [NAME=VALUE ...] grid [grid ...]  (grids: scripts/reproduce_<grid>.sh)" >&2; exit 2; }
if [ ! -d "$RUNS_DIR" ]; then
  git -C "$HERE" worktree add --detach "$RUNS_DIR" HEAD
  ln -s "$HERE/.venv" "$RUNS_DIR/.venv"
  [ -d "$HERE/build" ] && cp -r "$HERE/build" "$RUNS_DIR/build"
fi
# rows appended to tracked CSVs under results/ do not make the code dirty (engine/provenance.py git_info), so a queue
# restarted after some rows landed runs on
if [ -n "$(git -C "$RUNS_DIR" status --porcelain --untracked-files=no -- . ':(exclude)results')" ]; then
  echo "error: $RUNS_DIR has uncommitted changes to tracked files outside results/; rows from it would not be judged (git_dirty). Clean it first." >&2
  exit 1
fi
export DATA_ROOT=${DATA_ROOT:-$HERE/../shared/data} OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
env_words=()
for word in "$@"; do
  if [[ "$word" == *=* ]]; then env_words+=("$word"); continue; fi
  [ -f "$RUNS_DIR/scripts/reproduce_$word.sh" ] || { echo "error: no scripts/reproduce_$word.sh in $RUNS_DIR" >&2; exit 2; }
  echo "=== $(date -u +%FT%H:%M) start $word ${env_words[*]:-} (worktree at $(git -C "$RUNS_DIR" rev-parse --short HEAD))"
  rc=0
  (cd "$RUNS_DIR" && env ${env_words[@]+"${env_words[@]}"} bash "scripts/reproduce_$word.sh") || rc=$?
  echo "=== $(date -u +%FT%H:%M) end $word rc=$rc"
  env_words=()
done
