"""Calibrate a DNS experiment's per-layer c_rate on COMPRESSION only: pilot runs until every layer keeps the share
of weights a target experiment's judged rows keep (within --rel-tol), never looking at accuracy. Made for the
equal-compression no-splice arm of claim ``dns_splicing_not_worse`` (docs/weight_compression.md): one-way pruning at
the splice arm's c ends at ~1,286x against 108x, so its c must come down until it lands at the splice arm's shares.

    flock /tmp/cpu-heavy.lock python scripts/calibrate_dns.py dns/mnist_lenet5_caffe_ref_nosplice \\
        dns/mnist_lenet5_caffe_ref [--seed 0] [--max-runs 8] [--rel-tol 0.1]

Per layer, the kept share falls as c rises (thresholds a, b = (0.9, 1.1) (mu + c std)). The search starts from the
experiment's own c; the experiment's own clean row at that seed, when there is one, counts as the first pilot (no
run). Until a layer's target is bracketed, the next c comes from the start model's weights (the share of them at or
above a(c), scaled to the last pilot: one-way pruning keeps a roughly constant fraction of that); once bracketed, it
interpolates log(share) between the nearest pilots on either side (class LayerSearch). All layers move in each pilot
run (they interact only through training). Pilot rows are ad hoc (``paths.results_dir=outputs/calibration``, never
judged). It prints each pilot and the ``method.per_layer`` block to write into a new experiment file, whose header
should state the rule and the pilot count; the judged runs come after, from a clean commit. When no pilot puts every
layer within tolerance (a layer's share can follow the other layers' density more than its own c), ``--fallback
overall`` takes the pilot nearest the targets' overall kept share instead: equal compression, unequal shares.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from engine.references.experiments import compose_experiment  # noqa: E402
from engine.results import clean_rows_of, from_clean_commit, read_rows  # noqa: E402


def target_shares(paper: str, experiment: str, results_dir: str) -> dict[str, float]:
    """Mean kept share (%) per layer over the judged-ready (clean) rows of ``experiment``."""
    rows = [r for r in read_rows(os.path.join(results_dir, f"{paper}.csv"))
            if r["experiment"] == experiment and from_clean_commit(r)]
    if not rows:
        raise SystemExit(f"no clean rows of {experiment} in {results_dir}/{paper}.csv: run its grid first")
    layers = rows[0]["extra"]["remaining_pct_by_layer"]
    return {name: statistics.fmean(r["extra"]["remaining_pct_by_layer"][name] for r in rows) for name in layers}


class LayerSearch:
    """c for one layer, from every (c, kept share) seen so far. The share falls as c rises, roughly exponentially, so
    once two pilots bracket the target the next c interpolates log(share) linearly between the nearest bracketing
    pair (regula falsi, kept 2 % away from either end so it cannot stall there). Before a bracket exists
    it follows ``guide`` (the kept share the start model's own weights give at c, before any training: one-way
    pruning keeps a roughly constant fraction of that), scaled to the latest pilot; without a guide it steps by
    ``step``."""

    def __init__(self, start: float, step: float, guide=None):
        self.c, self.step, self.guide = start, step, guide
        self.seen: list[tuple[float, float]] = []

    def update(self, share: float, target: float) -> None:
        self.seen.append((self.c, share))
        low = max((p for p in self.seen if p[1] > target), key=lambda p: p[0], default=None)     # kept more
        high = min((p for p in self.seen if p[1] <= target), key=lambda p: p[0], default=None)   # kept less
        if low is not None and high is not None:
            (c0, s0), (c1, s1) = low, high
            frac = (math.log(s0) - math.log(target)) / (math.log(s0) - math.log(s1)) if s1 > 0 else 0.5
            self.c = c0 + min(max(frac, 0.02), 0.98) * (c1 - c0)
        elif self.guide is not None and share > 0 and (at_c := self.guide(self.c)) > 0:
            self.c = solve_decreasing(lambda c: share / at_c * self.guide(c), target,
                                      self.c - 10 * self.step, self.c + 10 * self.step)
        else:
            self.c = self.c + (self.step if low is not None else -self.step)


def solve_decreasing(f, target: float, lo: float, hi: float, iters: int = 60) -> float:
    """x in [lo, hi] with f(x) = target for a non-increasing f (the nearest end when the target lies outside)."""
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) > target else (lo, mid)
    return (lo + hi) / 2


def calibrate(run, start: dict[str, float], targets: dict[str, float], max_runs: int, rel_tol: float,
              step: float, guides: dict | None = None, known: dict[str, float] | None = None
              ) -> tuple[dict[str, float], list[dict]]:
    """``run(c_by_layer) -> share_by_layer`` for pilot runs; returns (c per layer within ``rel_tol`` of every target,
    the pilots). ``known``: shares already measured at ``start`` (the experiment's own rows), used as a free first
    pilot. ``guides``: per layer, share(c) of the start model (see :class:`LayerSearch`). Fails naming the layers
    still off after ``max_runs`` runs."""
    searches = {name: LayerSearch(c, step, (guides or {}).get(name)) for name, c in start.items()}
    pilots = []
    shares = known
    for _ in range(max_runs + (known is not None)):
        c_now = {name: s.c for name, s in searches.items()}
        ran = shares is None
        if ran:
            shares = run(c_now)
        pilots.append({"c": c_now, "shares": shares, "ran": ran})
        off = {n for n in targets if abs(shares[n] / targets[n] - 1) > rel_tol}
        if not off:
            return c_now, pilots
        for name in off:
            searches[name].update(shares[name], targets[name])
        shares = None
    raise NotCalibrated(f"not calibrated after {max_runs} pilot runs: layers {sorted(off)} still more than "
                        f"{rel_tol:.0%} off their targets (last pilot {pilots[-1]}); raise --max-runs, or take "
                        f"--fallback overall", pilots)


class NotCalibrated(SystemExit):
    """No pilot put every layer within tolerance; ``pilots`` holds them all."""

    def __init__(self, message: str, pilots: list[dict]):
        super().__init__(message)
        self.pilots = pilots


def overall_share(shares: dict[str, float], sizes: dict[str, int]) -> float:
    """Kept % over all the layers' weights together (what sets the overall compression ratio)."""
    return sum(shares[n] * sizes[n] for n in sizes) / sum(sizes.values())


def closest_overall(pilots: list[dict], targets: dict[str, float], sizes: dict[str, int]) -> dict:
    """The pilot whose overall kept share is nearest (relatively) the targets' overall share: the fallback when
    the per-layer search does not converge, equal compression without equal per-layer shares."""
    want = overall_share(targets, sizes)
    return min(pilots, key=lambda p: abs(overall_share(p["shares"], sizes) / want - 1))


def start_model_state(checkpoint_path: str) -> dict:
    """The start model's state dict (a suite checkpoint's ``model``, or a bare state dict)."""
    import torch
    blob = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    return blob.get("model", blob)


def start_model_guides(state: dict, layers) -> dict:
    """Per layer, c -> % of the start model's weights at or above DNS's prune threshold a(c) (methods/dns.py)."""
    from methods.dns import dns_thresholds

    def guide(name):
        w, b = state[f"{name}.weight"], state.get(f"{name}.bias")
        return lambda c: 100.0 * float((w.abs() >= dns_thresholds(w, b, c)[2]).double().mean())
    return {name: guide(name) for name in layers}


def start_model_sizes(state: dict, layers) -> dict[str, int]:
    """Weights per layer of the start model."""
    return {name: state[f"{name}.weight"].numel() for name in layers}


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


def experiment_c(cfg) -> dict[str, float]:
    """c_rate per layer of a composed experiment."""
    default = float(cfg.method.c_rate)
    return {n: float(v.get("c_rate", default)) for n, v in cfg.method.per_layer.items()}


def own_row_shares(cfg, results_dir: str) -> dict[str, float] | None:
    """Kept share per layer of the experiment's own clean row at this seed and its current config hash (the pilot
    at its start c, already run), or None."""
    from engine.provenance import config_hash
    rows = clean_rows_of(os.path.join(results_dir, f"{cfg.paper}.csv"), cfg.name, cfg.seed, config_hash(cfg))
    return rows[-1]["extra"]["remaining_pct_by_layer"] if rows else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment", help="the file to calibrate, e.g. dns/mnist_lenet5_caffe_ref_nosplice")
    ap.add_argument("target", help="the experiment whose judged rows give the per-layer shares")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-runs", type=int, default=8)
    ap.add_argument("--rel-tol", type=float, default=0.1)
    ap.add_argument("--step", type=float, default=1.0, help="c step while no bracket is found and no start model")
    ap.add_argument("--fallback", choices=["none", "overall"], default="none",
                    help="when no pilot puts every layer within --rel-tol: fail (none), or print the pilot nearest "
                         "the targets' overall kept share (overall; equal compression, unequal per-layer shares)")
    a = ap.parse_args()
    cfg = compose_experiment(a.experiment, a.seed)
    start = experiment_c(cfg)
    results_dir = os.path.join(ROOT, "results", "runs")
    targets = target_shares(cfg.paper, a.target.split("/")[-1], results_dir)
    known = own_row_shares(cfg, results_dir)
    ckpt = cfg.trainer.get("init_checkpoint")
    state = start_model_state(os.path.join(ROOT, ckpt)) if ckpt and os.path.exists(os.path.join(ROOT, ckpt)) else None
    guides = start_model_guides(state, start) if state else None
    print(f"targets (kept %, mean of {a.target}'s judged rows): {targets}; start c: {start}; "
          f"own row at the start c: {known}; guided by the start model: {ckpt if guides else 'no'}", flush=True)
    try:
        c, pilots = calibrate(pilot_runner(a.experiment, a.seed, os.path.join(ROOT, "outputs", "calibration")),
                              start, targets, a.max_runs, a.rel_tol, a.step, guides, known)
        how = "calibrated per layer"
    except NotCalibrated as failed:
        if a.fallback != "overall" or not state:
            raise
        print(failed, flush=True)
        pilots = failed.pilots
        best = closest_overall(pilots, targets, start_model_sizes(state, start))
        c, how = best["c"], "NOT calibrated per layer; fallback: the pilot nearest the targets' overall kept share"
    ran = sum(p["ran"] for p in pilots)
    print(f"{how}, after {ran} pilot run(s) ({len(pilots) - ran} known row); method.per_layer for the new "
          f"experiment file:")
    print("  per_layer:\n" + "\n".join(f"    {n}: {{c_rate: {v:.4f}}}" for n, v in c.items()))
    for p in pilots:
        print(json.dumps(p))
    return 0


if __name__ == "__main__":
    sys.exit(main())
