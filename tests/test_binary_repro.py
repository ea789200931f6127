"""The committed rows of the decisive binary grid (results/runs/{sd_bnn,ir2net}.csv, variant grid_*): equal budget,
declared precision, clean commits, and the signals that show whether a method's own parameters moved.

No training here. Verdicts come from the statistical judge (`python evaluate.py report`,
`scripts/summarize_binary.py`); the grid's claims are reduced-budget findings and are not enforced.
"""
import os

import pytest

from engine.results import read_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = "binary/cifar10_jpeg_resnet20_"


def _grid_rows():
    rows = []
    for paper in ("sd_bnn", "ir2net"):
        path = os.path.join(ROOT, "results", "runs", f"{paper}.csv")
        if os.path.exists(path):
            rows += [r for r in read_rows(path) if str(r.get("experiment_config", "")).startswith(GRID)]
    return rows


@pytest.mark.repro
def test_grid_rows_share_one_budget_and_come_from_clean_commits():
    rows = _grid_rows()
    assert rows, "no grid rows in results/runs/{sd_bnn,ir2net}.csv (make reproduce-binary)"
    budget = {(r["dataset"], r["model"], r["fidelity"], r["epochs"], r["steps"], r["global_batch"]) for r in rows}
    assert budget == {("cifar10_jpeg", "resnet20", "reduced", "8", "240", "128")}, budget
    for r in rows:
        assert r["git_dirty"] in ("False", "false", "0"), r["run_id"]
        binary = not r["experiment_config"].endswith("_fp")
        assert (int(r["bops"]) > 0) == binary, r["run_id"]
        if binary:
            assert r["extra"]["a_bits"] == 1, r["run_id"]
            assert r["extra"]["w_bits"] == (32 if r["extra"].get("stage") == "w32a1" else 1), r["run_id"]
        assert 10.0 <= float(r["top1"]) <= 100.0, r["run_id"]


@pytest.mark.repro
def test_grid_rows_log_whether_the_method_moved():
    """A run whose method parameters did not move tests nothing: the signals must be in every row that has them."""
    rows = _grid_rows()
    assert rows, "no grid rows in results/runs/{sd_bnn,ir2net}.csv (make reproduce-binary)"
    for r in rows:
        extra, arm = r["extra"], r["experiment_config"][len(GRID):]
        if arm != "fp":
            assert extra.get("sign_flip_total") is not None, r["run_id"]
        if arm.startswith("sd_bnn") and arm != "sd_bnn_no_wsd":
            assert extra.get("wsd_alpha_abs_max") is not None, r["run_id"]
        if arm.startswith("sd_bnn") and arm != "sd_bnn_no_asd":
            assert extra.get("asd_beta_std_samples") is not None, r["run_id"]
        if arm == "ir2net":
            assert 0.0 < float(extra["restriction_kept_fraction"]) <= 1.0, r["run_id"]
