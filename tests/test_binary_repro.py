"""The committed reduced-comparison rows (results/runs/{sd_bnn,ir2net}.csv): equal budget, seeds, declared precision.

No training here. Claim verdicts at this budget are reported by scripts/summarize_binary.py and docs/binary.md; the
reduced claims are not enforced (the notes expect SD-BNN's margin to be undetectable in a few CPU epochs).
"""
import os
from collections import defaultdict

import pytest

from engine.results import read_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = {"baseline", "bnn", "irnet", "sd_bnn", "ir2net"}


def _rows():
    rows = []
    for paper in ("sd_bnn", "ir2net"):
        path = os.path.join(ROOT, "results", "runs", f"{paper}.csv")
        if os.path.exists(path):
            rows += [r for r in read_rows(path) if r["variant"].startswith("equal_budget_2k_2ep")]
    return rows


@pytest.mark.repro
def test_reduced_comparison_rows_are_equal_budget():
    rows = _rows()
    seeds = defaultdict(set)
    for r in rows:
        seeds[r["experiment"]].add(r["seed"])
    methods = {r["method"] for r in rows}
    assert methods == METHODS, f"missing methods: {METHODS - methods} (run scripts/reproduce_sd_bnn.sh)"
    assert all(len(s) >= 2 for s in seeds.values()), dict(seeds)
    # equal budget: same data, epochs, optimizer steps and global batch for every row
    budget = {(r["dataset"], r["model"], r["fidelity"], r["epochs"], r["steps"], r["global_batch"]) for r in rows}
    assert budget == {("fashion_mnist", "resnet20", "reduced", "2", "64", "64")}, budget
    for r in rows:
        binary = r["method"] != "baseline"
        assert (int(r["bops"]) > 0) == binary
        if binary:
            assert r["extra"]["w_bits"] == 1 and r["extra"]["a_bits"] == 1
            assert r["git_dirty"] in ("False", "false", "0")
        assert 10.0 < float(r["top1"]) <= 100.0
