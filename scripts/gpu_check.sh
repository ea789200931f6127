#!/usr/bin/env bash
# The GPU path in one go, for a machine with one CUDA GPU, this project and the JPEG CIFAR-10 archive (README "The GPU
# path"); under 8 minutes on an H200 (each stage is cut off at the time left of that budget):
#   1. the gpu-marked tests (tests/test_gpu.py: CUDA vs CPU binary ResNet-20, no host sync in a training step, device in the row)
#   2. make bench on CUDA (scripts/bench_loader.py): data wait under 5 % of step time, no host sync in a timed step
#   3. one whole experiment file on CUDA (GPU_CHECK_EXPERIMENT, default binary/cifar10_jpeg_resnet20_sd_bnn: SD-BNN
#      binary ResNet-20 at its full configured budget, no step limit), its row checked to name the GPU
#
#   DATA_ROOT=../shared/data bash scripts/gpu_check.sh      # DATA_ROOT: the suite's data folder, or a folder holding
#                                                           # just cifar10-jpeg-q75.tar.gz
#   bash scripts/gpu_check.sh --dry                         # (or GPU_CHECK_DRY=1) print the commands, run nothing
# Rows and logs go to $OUT when set (the device tool's folder), else outputs/gpu_check/; never to results/runs.
# PY: the Python to use (default .venv/bin/python, else python3). Missing packages (hydra-core, omegaconf,
# antlr4-python3-runtime, tensorly on a bare CUDA image) are installed from wheels in GPU_CHECK_WHEELS (default .whl/)
# when that folder exists.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=${GPU_CHECK_DRY:-0}
[ "${1:-}" = "--dry" ] && DRY=1
BUDGET_S=${GPU_CHECK_BUDGET_S:-470}
EXPERIMENT=${GPU_CHECK_EXPERIMENT:-binary/cifar10_jpeg_resnet20_sd_bnn}
PY=${PY:-$(if [ -x .venv/bin/python ]; then echo .venv/bin/python; else echo python3; fi)}
WORK=outputs/gpu_check
RESULTS=${OUT:-$WORK}/results
WHEELS=${GPU_CHECK_WHEELS:-.whl}
DATA_ROOT=${DATA_ROOT:-$(if [ -d ../shared/data ]; then echo ../shared/data; else echo datasets; fi)}
ARCHIVE=cifar10-jpeg/cifar10-jpeg-q75.tar.gz        # conf/data/cifar10_jpeg.yaml: data.archive under data.root
START=$(date +%s)
export PYTHONUNBUFFERED=1

die() { echo "error: $*" >&2; exit 2; }
say() { echo "[gpu_check $(( $(date +%s) - START ))s] $*"; }

# run CAP CMD...: print CMD; run it (unless dry) cut off at CAP seconds or the time left of the budget
run() {
    local cap=$1; shift
    local left=$(( BUDGET_S - ($(date +%s) - START) ))
    (( cap < left )) || cap=$left
    echo "+ $*"
    [ "$DRY" = 1 ] && return 0
    (( cap > 0 )) || die "the ${BUDGET_S}s budget is spent before: $*"
    timeout "$cap" "$@" || { rc=$?; [ $rc = 124 ] && die "cut off after ${cap}s: $*"; die "failed (exit $rc): $*"; }
}

# data: the suite's layout under DATA_ROOT, or a folder holding just the archive (linked into that layout)
if [ ! -f "$DATA_ROOT/$ARCHIVE" ]; then
    shopt -s nullglob; found=("$DATA_ROOT"/*.tar.gz); shopt -u nullglob
    [ ${#found[@]} = 1 ] || die "no JPEG CIFAR-10 archive: want $DATA_ROOT/$ARCHIVE or one *.tar.gz in DATA_ROOT=$DATA_ROOT"
    mkdir -p "$WORK/data/cifar10-jpeg"
    ln -sf "$(realpath "${found[0]}")" "$WORK/data/$ARCHIVE"
    DATA_ROOT=$WORK/data
fi
export DATA_ROOT
say "python $PY, DATA_ROOT=$DATA_ROOT, rows to $RESULTS, budget ${BUDGET_S}s$([ "$DRY" = 1 ] && echo ', dry run')"

if [ "$DRY" != 1 ]; then
    if ! "$PY" -c "import hydra, omegaconf, tensorly" 2>/dev/null && [ -d "$WHEELS" ]; then
        say "installing the missing packages from $WHEELS"
        "$PY" -m pip install -q --no-index --no-deps --find-links "$WHEELS" "$WHEELS"/* >/dev/null
    fi
    missing=$("$PY" -c "
import importlib.util as u
print(' '.join(m for m in ('torch', 'torchvision', 'hydra', 'omegaconf', 'tensorly', 'filelock', 'tqdm', 'yaml', 'timm', 'pytest') if not u.find_spec(m)))")
    [ -z "$missing" ] || die "$PY lacks Python packages: $missing (pip install -e . here, or put their wheels in $WHEELS/)"
    gpu=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')")
    [ -n "$gpu" ] || die "no CUDA device visible to $PY (torch $("$PY" -c 'import torch; print(torch.__version__)')): scripts/gpu_check.sh needs one GPU"
    say "GPU: $gpu"
fi

say "1/3 gpu-marked tests"
run 150 "$PY" -m pytest -q -p no:cacheprovider -m gpu $(grep -l "pytest.mark.gpu" tests/test_*.py)

say "2/3 make bench on CUDA (decodes the archive into .cache/ once)"
run 150 "$PY" scripts/bench_loader.py

say "3/3 experiment=$EXPERIMENT on CUDA, full budget"
run 240 "$PY" train.py "experiment=$EXPERIMENT" trainer.device=cuda trainer.resume=never trainer.progress=false \
    logger=csv "paths.output_dir=$WORK/runs" "paths.results_dir=$RESULTS"
run 30 "$PY" -c "
import glob, sys
from engine.results import read_rows
rows = [r for f in sorted(glob.glob('$RESULTS/*.csv')) for r in read_rows(f) if r['experiment_config'] == '$EXPERIMENT']
if not rows or rows[-1]['device'].startswith('cpu'):
    sys.exit('error: no row of $EXPERIMENT with a GPU device under $RESULTS')
r = rows[-1]
print(f\"row: {r['experiment_config']} fidelity {r['fidelity']} top1 {r['top1']} device {r['device']} wall {r['wall_time_s']}s\")"
[ "$DRY" = 1 ] && say "dry run: nothing ran" || say "done: all three checks passed"
