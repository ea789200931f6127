"""Exit 0 if the rows file a run of this experiment file would append to (``<paths.results_dir>/<paper>.csv``:
$RESULTS_DIR, which scripts/reproduce_lib.sh sets to results/runs) already holds a judged-ready row of it: same
experiment name, seed and the file's CURRENT config hash, from a clean commit. Used by the resumable
scripts/reproduce_*.sh of the pruning and low-rank papers (a changed experiment file reruns its arms).
Usage: python scripts/row_exists.py <group>/<name> <seed>"""
import os
import sys

from engine.provenance import config_hash
from engine.references.experiments import compose_experiment
from engine.results import clean_rows_of


def main(experiment: str, seed: str) -> int:
    cfg = compose_experiment(experiment, seed)
    path = os.path.join(cfg.paths.results_dir, f"{cfg.paper}.csv")   # as the run's own row would resolve it
    return 0 if clean_rows_of(path, cfg.name, seed, config_hash(cfg)) else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
