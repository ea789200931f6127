"""CC against the official code (tests/golden/cc/: liuguoyou/...-Collaborative-Compression utils/models.py run on
a 3-layer net; the JSON header says how): Stage 1 curve, fit and rate solution, cal_metric, Stage 2, accounting."""
import numpy as np
import pytest
import torch

from methods.cc import (LayerGeom, compress_layer, fit_exponential, fit_exponential_official, official_accounting,
                        score_units, sensitivity_curve, sensitivity_curve_official, solve_lambda)

from tests.golden import load

pytestmark = pytest.mark.golden


@pytest.fixture(scope="module")
def golden():
    header, data = load("cc", "stage1_stage2")
    return data


def _geoms(g):
    out = []
    for w, s, (h, _) in zip(g["weights"], g["strides"], g["input_sizes"]):
        oh = (h + 2 - 3) // s + 1
        out.append(LayerGeom(w.shape[0], w.shape[1], 9, oh * oh, h * h))
    return out


def test_stage1_curve_fit_and_budgets(golden):
    fits, flops = {}, {}
    for i, geom in enumerate(_geoms(golden)):
        c, m = sensitivity_curve_official(golden["weights"][i], golden["grads"][i], geom)
        off = golden["curves"][i]
        off = {k: v.numpy() for k, v in off.items()}
        np.testing.assert_allclose(c, off["c"], atol=1e-6)
        np.testing.assert_allclose(m, off["m"], rtol=1e-3, atol=1e-9)
        fits[i] = fit_exponential_official(c, m)
        want = fit_exponential_official(off["c"], off["m"])
        np.testing.assert_allclose(fits[i], want, rtol=1e-3)
        flops[i] = geom.dense_macs()
    per = golden["per_flops"]
    _, budgets = solve_lambda(fits, flops, golden["com_ratio"] * golden["network_flops"] * per)
    np.testing.assert_allclose([budgets[i] / per for i in range(3)], golden["budgets"], rtol=1e-3)


def test_official_fit_is_sklearns_weighted_least_squares(golden):
    from sklearn.linear_model import LinearRegression
    off = {k: v.numpy() for k, v in golden["curves"][1].items()}
    lr = LinearRegression().fit(off["c"].reshape(-1, 1), np.log(off["m"] + 1e-10), np.sqrt(off["m"]))
    p1, p2 = fit_exponential_official(off["c"], off["m"])
    assert p1 == pytest.approx(np.exp(lr.intercept_), rel=1e-9) and p2 == pytest.approx(lr.coef_[0], rel=1e-9)


def test_legacy_curve_and_fit_differ(golden):
    geom = _geoms(golden)[2]
    c, m = sensitivity_curve(golden["weights"][2].double(), golden["grads"][2].double(), geom)
    off = {k: v.numpy() for k, v in golden["curves"][2].items()}
    assert len(c) != len(off["c"]) or not np.allclose(np.sort(c), off["c"], atol=1e-6)
    assert not np.allclose(fit_exponential(off["c"], off["m"]), fit_exponential_official(off["c"], off["m"]), rtol=1e-3)


@pytest.mark.parametrize("state", ["metric_state0", "metric_state1_pruned2"])
def test_cal_metric(golden, state):
    w0 = golden["weights"][1].double().reshape(6, -1)
    g = golden["grads"][1].double().reshape(6, -1)
    alive = torch.ones(6, dtype=torch.bool)
    wm = w0.clone()
    if state.endswith("pruned2"):
        alive[2] = False
        wm = wm.reshape(6, 6, 9).clone()
        wm[:, 2] = 0
        wm = wm.reshape(6, -1)
    ch, rk, *_ = score_units(wm, w0, g, alive, 6, 9, 0.9, ("pruning", "td"), exact_channel_m=True)
    off = golden[state]
    off_ch = {k: v for op, k, v in off if op == "pruning"}
    off_rk = [v for op, _, v in off if op == "td"]
    np.testing.assert_allclose([ch[k].item() for k in sorted(off_ch)], [off_ch[k] for k in sorted(off_ch)], rtol=1e-3)
    np.testing.assert_allclose(rk.numpy(), off_rk, rtol=1e-3)
    approx, *_ = score_units(wm, w0, g, alive, 6, 9, 0.9, ("pruning", "td"), exact_channel_m=False)
    assert not np.allclose([approx[k].item() for k in sorted(off_ch)], [off_ch[k] for k in sorted(off_ch)], rtol=1e-4)


def test_stage2_keeps_and_weights(golden):
    per = golden["per_flops"]
    for i, geom in enumerate(_geoms(golden)):
        res = compress_layer(golden["weights"][i], golden["grads"][i], geom, golden["budgets"][i] * per, 0.9,
                             ("pruning", "td"), exact_channel_m=True)
        off = golden["compressed"][i]
        assert res["keep"] == off["keep"]
        assert (res["rank"] is None) == (len(off["weights"]) == 1)
        if res["rank"] is None:
            torch.testing.assert_close(res["weight"][:, res["keep"]], off["weights"][0], atol=1e-6, rtol=0)


def test_official_accounting_credits_conv1_and_counts_conv2_at_block_input():
    geoms = {"layer2.0.conv1": LayerGeom(32, 16, 9, 256, 1024), "layer2.0.conv2": LayerGeom(32, 32, 9, 256, 256)}
    plan = {"layer2.0.conv1": {"keep": list(range(16)), "rank": None},
            "layer2.0.conv2": {"keep": list(range(8)), "rank": None}}
    conv1, conv2 = 16 * 9 * 32 * 256, 8 * 9 * 32 * 256
    acc = official_accounting(geoms, plan, 1e6)
    assert acc["official_conv1_credit"] == pytest.approx(conv1 * (1 - 8 / 32))
    assert acc["official_conv2_resolution_overcount"] == pytest.approx(conv2 * 3)
    assert acc["macs_official"] == pytest.approx(1e6 - conv1 * 0.75 + conv2 * 3)
