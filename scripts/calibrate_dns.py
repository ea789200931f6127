"""Calibrate a DNS experiment's per-layer c_rate on COMPRESSION only: pilot runs until every layer keeps the share
of weights a target experiment's judged rows keep (within --rel-tol), never looking at accuracy. Made for the
equal-compression no-splice arm of claim ``dns_splicing_not_worse`` (docs/weight_compression.md): one-way pruning at
the splice arm's c ends at ~1,286x against 108x, so its c must come down until it lands at the splice arm's shares.

    flock /tmp/cpu-heavy.lock python scripts/calibrate_dns.py dns/mnist_lenet5_caffe_ref_nosplice \\
        dns/mnist_lenet5_caffe_ref [--seed 0] [--max-runs 8] [--rel-tol 0.1]

Per layer, the kept share falls as c rises (thresholds a, b = (0.9, 1.1) (mu + c std)). The search keeps a bracket
per layer: it starts from the experiment's own c (keeps too little for a no-splice arm) and steps down by --step
until the share exceeds the target, then bisects. All layers move in each pilot run (they interact only through
training). Pilot rows are ad hoc (``paths.results_dir=outputs/calibration``, never judged). It prints each pilot and
the ``method.per_layer`` block to write into a new experiment file, whose header should state the rule and the
pilot count; the judged runs come after, from a clean commit.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from engine.results import read_rows  # noqa: E402


def target_shares(paper: str, experiment: str, results_dir: str) -> dict[str, float]:
    """Mean kept share (%) per layer over the judged-ready (clean) rows of ``experiment``."""
    rows = [r for r in read_rows(os.path.join(results_dir, f"{paper}.csv"))
            if r["experiment"] == experiment and str(r["git_dirty"]).lower() in ("false", "0")]
    if not rows:
        raise SystemExit(f"no clean rows of {experiment} in {results_dir}/{paper}.csv: run its grid first")
    layers = rows[0]["extra"]["remaining_pct_by_layer"]
    return {name: statistics.fmean(r["extra"]["remaining_pct_by_layer"][name] for r in rows) for name in layers}


class Bracket:
    """c for one layer: step down from ``start`` until the share exceeds the target, then bisect."""

    def __init__(self, start: float, step: float):
        self.c, self.step = start, step
        self.low = None     # a c that kept MORE than the target
        self.high = None    # a c that kept LESS than the target

    def update(self, share: float, target: float) -> None:
        if share > target:
            self.low = self.c
        else:
            self.high = self.c
        if self.low is None:
            self.c = self.c - self.step
        elif self.high is None:
            self.c = self.c + self.step
        else:
            self.c = (self.low + self.high) / 2


def calibrate(run, start: dict[str, float], targets: dict[str, float], max_runs: int, rel_tol: float,
              step: float) -> tuple[dict[str, float], list[dict]]:
    """``run(c_by_layer) -> share_by_layer`` for pilot runs; returns (c per layer within ``rel_tol`` of every target,
    the pilots). Fails naming the layers still off after ``max_runs``."""
    brackets = {name: Bracket(c, step) for name, c in start.items()}
    pilots = []
    for _ in range(max_runs):
        c_now = {name: b.c for name, b in brackets.items()}
        shares = run(c_now)
        pilots.append({"c": c_now, "shares": shares})
        off = {n for n in targets if abs(shares[n] / targets[n] - 1) > rel_tol}
        if not off:
            return c_now, pilots
        for name in off:
            brackets[name].update(shares[name], targets[name])
    raise SystemExit(f"not calibrated after {max_runs} pilot runs: layers {sorted(off)} still more than "
                     f"{rel_tol:.0%} off their targets (last pilot {pilots[-1]}); raise --max-runs")


def pilot_runner(experiment: str, seed: int, out_dir: str):
    """One train.py run of ``experiment`` with the given per-layer c; its row's kept share per layer."""
    def run(c_by_layer: dict[str, float]) -> dict[str, float]:
        tag = "_".join(f"{n}{c:.4f}" for n, c in sorted(c_by_layer.items()))
        results = os.path.join(out_dir, tag)
        cmd = [sys.executable, "train.py", f"experiment={experiment}", f"seed={seed}", "logger=none",
               "trainer.progress=false", f"paths.results_dir={results}", f"paths.output_dir={results}/run"]
        cmd += [f"method.per_layer.{n}.c_rate={c}" for n, c in c_by_layer.items()]
        subprocess.run(cmd, cwd=ROOT, check=True)
        [csv_name] = [f for f in os.listdir(results) if f.endswith(".csv")]
        shares = read_rows(os.path.join(results, csv_name))[-1]["extra"]["remaining_pct_by_layer"]
        print(json.dumps({"c": c_by_layer, "shares": shares}), flush=True)
        return shares
    return run


def experiment_c(experiment: str) -> tuple[str, dict[str, float]]:
    """(paper, c_rate per layer) of an experiment file as composed."""
    from hydra import compose, initialize_config_dir
    with initialize_config_dir(config_dir=os.path.join(ROOT, "conf"), version_base=None):
        cfg = compose("config", overrides=[f"experiment={experiment}"])
    default = float(cfg.method.c_rate)
    return cfg.paper, {n: float(v.get("c_rate", default)) for n, v in cfg.method.per_layer.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment", help="the file to calibrate, e.g. dns/mnist_lenet5_caffe_ref_nosplice")
    ap.add_argument("target", help="the experiment whose judged rows give the per-layer shares")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-runs", type=int, default=8)
    ap.add_argument("--rel-tol", type=float, default=0.1)
    ap.add_argument("--step", type=float, default=1.0, help="c step while no bracket is found")
    a = ap.parse_args()
    paper, start = experiment_c(a.experiment)
    targets = target_shares(paper, a.target.split("/")[-1], os.path.join(ROOT, "results", "runs"))
    print(f"targets (kept %, mean of {a.target}'s judged rows): {targets}; start c: {start}", flush=True)
    c, pilots = calibrate(pilot_runner(a.experiment, a.seed, os.path.join(ROOT, "outputs", "calibration")),
                          start, targets, a.max_runs, a.rel_tol, a.step)
    print(f"calibrated after {len(pilots)} pilot run(s); method.per_layer for the new experiment file:")
    print("  per_layer:\n" + "\n".join(f"    {n}: {{c_rate: {v:.4f}}}" for n, v in c.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
