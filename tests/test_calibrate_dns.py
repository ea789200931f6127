"""scripts/calibrate_dns.py: per-layer c found on compression only, from pilot runs (here a made-up share curve)."""
import importlib.util
import math
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("calibrate_dns", os.path.join(ROOT, "scripts", "calibrate_dns.py"))
calibrate_dns = importlib.util.module_from_spec(spec)
spec.loader.exec_module(calibrate_dns)


def _fake_run(scale):
    """Kept share falls with c: share = scale * exp(-c) per layer (monotone, as DNS thresholds make it)."""
    calls = []

    def run(c):
        calls.append(dict(c))
        return {n: scale[n] * math.exp(-v) for n, v in c.items()}
    return run, calls


def test_steps_down_until_bracketed_then_bisects_to_every_target():
    run, calls = _fake_run({"conv1": 50.0, "fc1": 2.0})
    targets = {"conv1": 20.0, "fc1": 0.7}            # c* = ln(2.5) = 0.92 and ln(2.857) = 1.05
    c, pilots = calibrate_dns.calibrate(run, {"conv1": 3.0, "fc1": 4.0}, targets, max_runs=12, rel_tol=0.1, step=1.0)
    for n in targets:
        assert abs(run({n: c[n]})[n] / targets[n] - 1) <= 0.1
    assert calls[0] == {"conv1": 3.0, "fc1": 4.0} and calls[1] == {"conv1": 2.0, "fc1": 3.0}   # stepping down
    assert len(pilots) < 12


def test_a_layer_that_keeps_too_much_steps_up_and_a_hopeless_search_names_the_layers():
    run, _ = _fake_run({"conv1": 50.0})
    c, _ = calibrate_dns.calibrate(run, {"conv1": 0.0}, {"conv1": 5.0}, max_runs=10, rel_tol=0.1, step=1.0)
    assert c["conv1"] > 2.0                           # c* = ln 10 = 2.30
    with pytest.raises(SystemExit, match=r"layers \['conv1'\] still more than 10% off"):
        calibrate_dns.calibrate(run, {"conv1": 0.0}, {"conv1": 5.0}, max_runs=2, rel_tol=0.1, step=1.0)


def test_targets_are_the_clean_rows_mean(tmp_path):
    from engine.results import append_row
    for i, (dirty, share) in enumerate(((False, 20.0), (False, 22.0), (True, 90.0))):
        append_row(str(tmp_path / "dns.csv"), {"run_id": str(i), "experiment": "x", "git_dirty": dirty,
                                               "extra": {"remaining_pct_by_layer": {"conv1": share}}})
    assert calibrate_dns.target_shares("dns", "x", str(tmp_path)) == {"conv1": 21.0}
    with pytest.raises(SystemExit, match="no clean rows of y"):
        calibrate_dns.target_shares("dns", "y", str(tmp_path))
