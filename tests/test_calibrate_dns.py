"""scripts/calibrate_dns.py: per-layer c found on compression only, from pilot runs (here made-up share curves)."""
import importlib.util
import math
import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("calibrate_dns", os.path.join(ROOT, "scripts", "calibrate_dns.py"))
calibrate_dns = importlib.util.module_from_spec(spec)
spec.loader.exec_module(calibrate_dns)


def _fake_run(share):
    """Pilot runs whose kept share per layer is ``share[layer](c)`` (falls with c, as DNS thresholds make it)."""
    calls = []

    def run(c):
        calls.append(dict(c))
        return {n: share[n](v) for n, v in c.items()}
    return run, calls


def _exp(scale, rate=1.0):
    return lambda c: scale * math.exp(-rate * c)


def test_unguided_search_steps_down_until_bracketed_then_interpolates_log_share():
    run, calls = _fake_run({"conv1": _exp(50.0), "fc1": _exp(2.0)})
    targets = {"conv1": 20.0, "fc1": 0.7}            # c* = ln(2.5) = 0.92 and ln(2.857) = 1.05
    c, pilots = calibrate_dns.calibrate(run, {"conv1": 3.0, "fc1": 4.0}, targets, max_runs=12, rel_tol=0.01, step=1.0)
    assert calls[:4] == [{"conv1": 3.0 - k, "fc1": 4.0 - k} for k in range(4)]   # stepping down until bracketed
    assert len(pilots) == 5                          # then one log-linear interpolation lands on c* exactly
    assert c == pytest.approx({"conv1": math.log(2.5), "fc1": math.log(2.0 / 0.7)})


def test_interpolation_stays_off_the_bracket_ends_when_the_curve_is_far_from_exponential():
    search = calibrate_dns.LayerSearch(start=0.0, step=1.0)
    search.update(share=1000.0, target=1.0)          # kept far more at c = 0 ...
    search.c = 1.0
    search.update(share=0.999, target=1.0)           # ... just under at c = 1: plain regula falsi would stall at 1.0
    assert search.c == pytest.approx(0.98)


def test_the_start_model_guide_and_a_known_row_save_pilot_runs():
    # true share: one-way pruning keeps 30 % of what the start model has above a(c); the guide knows the start model
    guide = _exp(10.0, rate=2.0)
    run, calls = _fake_run({"fc1": lambda c: 0.3 * guide(c)})
    known = {"fc1": 0.3 * guide(4.0)}               # the experiment's own row at its start c = 4
    c, pilots = calibrate_dns.calibrate(run, {"fc1": 4.0}, {"fc1": 0.7}, max_runs=3, rel_tol=0.01, step=1.0,
                                        guides={"fc1": guide}, known=known)
    assert not pilots[0]["ran"] and len(calls) == 1  # the known row is pilot 0; one run lands within 1 %
    assert c["fc1"] == pytest.approx(math.log(3.0 / 0.7) / 2.0, abs=1e-6)


def test_a_layer_that_keeps_too_much_steps_up_and_a_hopeless_search_names_the_layers():
    run, _ = _fake_run({"conv1": _exp(50.0)})
    c, _ = calibrate_dns.calibrate(run, {"conv1": 0.0}, {"conv1": 5.0}, max_runs=10, rel_tol=0.1, step=1.0)
    assert c["conv1"] > 2.0                           # c* = ln 10 = 2.30
    with pytest.raises(SystemExit, match=r"layers \['conv1'\] still more than 10% off"):
        calibrate_dns.calibrate(run, {"conv1": 0.0}, {"conv1": 5.0}, max_runs=2, rel_tol=0.1, step=1.0)


def test_start_model_guide_is_the_share_at_or_above_the_dns_prune_threshold(tmp_path):
    w = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    torch.save({"model": {"fc1.weight": w, "fc1.bias": torch.zeros(1)}}, tmp_path / "start.pt")
    state = calibrate_dns.start_model_state(str(tmp_path / "start.pt"))
    assert calibrate_dns.start_model_sizes(state, ["fc1"]) == {"fc1": 4}
    guide = calibrate_dns.start_model_guides(state, ["fc1"])["fc1"]
    # nonzero |w|: mu = 0.25, std = sqrt(0.075 - 0.0625) = 0.1118; a(0) = 0.225 keeps 0.3, 0.4; a(-2) = 0 keeps all
    assert guide(0.0) == 50.0 and guide(-2.0) == 100.0 and guide(2.0) == 0.0


def test_targets_are_the_clean_rows_mean(tmp_path):
    from engine.results import append_row
    for i, (dirty, share) in enumerate(((False, 20.0), (False, 22.0), (True, 90.0))):
        append_row(str(tmp_path / "dns.csv"), {"run_id": str(i), "experiment": "x", "git_dirty": dirty,
                                               "extra": {"remaining_pct_by_layer": {"conv1": share}}})
    assert calibrate_dns.target_shares("dns", "x", str(tmp_path)) == {"conv1": 21.0}
    with pytest.raises(SystemExit, match="no clean rows of y"):
        calibrate_dns.target_shares("dns", "y", str(tmp_path))


def test_fallback_takes_the_pilot_nearest_the_overall_kept_share():
    # the 2026-12-02 no-splice pilots (shares %, rounded) against the splice arm's targets, LeNet-5 weight counts
    sizes = {"conv1": 500, "conv2": 25000, "fc1": 400000, "fc2": 5000}
    targets = {"conv1": 23.53, "conv2": 3.574, "fc1": 0.6868, "fc2": 4.118}
    pilots = [{"c": {"fc1": 2.34}, "shares": {"conv1": 40.96, "conv2": 8.651, "fc1": 0.8961, "fc2": 11.28}},
              {"c": {"fc1": 2.45}, "shares": {"conv1": 31.92, "conv2": 4.866, "fc1": 0.5698, "fc2": 6.986}},
              {"c": {"fc1": 2.41}, "shares": {"conv1": 27.12, "conv2": 4.040, "fc1": 0.5608, "fc2": 5.788}}]
    assert calibrate_dns.overall_share(targets, sizes) == pytest.approx(0.9209, abs=1e-4)
    assert calibrate_dns.closest_overall(pilots, targets, sizes) is pilots[1]     # 0.930 % kept, 1 % off


def test_a_failed_search_carries_its_pilots():
    run, _ = _fake_run({"conv1": _exp(50.0)})
    with pytest.raises(calibrate_dns.NotCalibrated) as failed:
        calibrate_dns.calibrate(run, {"conv1": 0.0}, {"conv1": 5.0}, max_runs=2, rel_tol=0.1, step=1.0)
    assert [p["c"]["conv1"] for p in failed.value.pilots] == [0.0, 1.0]
