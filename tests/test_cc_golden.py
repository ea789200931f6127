"""Golden tests of Collaborative Compression's math (methods/cc.py) on small fixed tensors."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from core.complexity import measure
from methods.cc import (LayerGeom, compress_layer, fit_exponential, layer_macs, removed_macs, score_units,
                        solve_lambda, unit_importance)
from methods.common.decomposition import LowRankConv2d

pytestmark = pytest.mark.golden


def brute_scores(wm, w0, g, alive, r, k2, gamma):
    """Scores B_k + gamma F_k by building every W_k explicitly (the note's formula term by term)."""
    u, s, vh = torch.linalg.svd(wm, full_matrices=False)
    u, s, vh = u[:, :r], s[:r], vh[:r]
    n = int(alive.sum()) + r

    def score(wk, vk):
        d = wk - w0
        mk = (u.pow(2) * s.pow(2)) @ vk.pow(2)
        b = (g * d).pow(2).sum()
        f = ((g * d).pow(2) - 4 / (n - 1) * g.pow(2) * d * wk).sum() + ((g * wk).pow(2) + g.pow(2) * mk).sum() / (n - 1)
        return float(b + gamma * f)

    ch = []
    for j in range(alive.numel()):
        wk, vk = wm.clone(), vh.clone()
        wk[:, j * k2:(j + 1) * k2] = 0
        vk[:, j * k2:(j + 1) * k2] = 0
        ch.append(score(wk, vk) if alive[j] else math.inf)
    rk = []
    for k in range(r):
        keep = [i for i in range(r) if i != k]
        wk = (u[:, keep] * s[keep]) @ vh[keep]
        vk = vh.clone()
        vk[k] = 0
        rk.append(score(wk, vk))
    return ch, rk


def test_vectorised_scores_equal_brute_force():
    torch.manual_seed(0)
    c_out, c_in, k2 = 5, 4, 4
    w0 = torch.randn(c_out, c_in * k2, dtype=torch.float64)
    g = torch.randn_like(w0)
    wm = w0.clone()
    wm[:, 2 * k2:3 * k2] = 0                      # channel 2 already removed
    alive = torch.tensor([True, True, False, True])
    ch, rk, *_ = score_units(wm, w0, g, alive, 5, k2, 0.9, ("pruning", "td"))
    ref_ch, ref_rk = brute_scores(wm, w0, g, alive, 5, k2, 0.9)
    assert np.allclose(ch.numpy(), ref_ch, rtol=1e-9)
    assert np.allclose(rk.numpy(), ref_rk, rtol=1e-9)


def test_one_shot_importance_hand_computed():
    w = torch.tensor([[[[1.0]], [[2.0]]], [[[0.0]], [[1.0]]]], dtype=torch.float64)   # 2x2x1x1
    g = torch.tensor([[[[1.0]], [[0.5]]], [[[2.0]], [[1.0]]]], dtype=torch.float64)
    ch, rk = unit_importance(w, g, 1)
    # channel 0: (1*1)^2 + (2*0)^2 = 1; channel 1: (0.5*2)^2 + (1*1)^2 = 2
    assert ch.tolist() == pytest.approx([1.0, 2.0])
    u, s, vh = torch.linalg.svd(w.reshape(2, 2))
    for j in range(2):
        assert float(rk[j]) == pytest.approx(float((g.reshape(2, 2) * s[j] * torch.outer(u[:, j], vh[j])).pow(2).sum()))


def test_exponential_fit_recovers_exact_curve():
    c = np.linspace(0.05, 0.9, 30)
    p1, p2 = fit_exponential(c, 0.02 * np.exp(4.0 * c))
    assert p1 == pytest.approx(0.02, rel=1e-9) and p2 == pytest.approx(4.0, rel=1e-9)


def test_lambda_meets_target_and_equalises_marginal_sensitivity():
    fits = {"a": (0.01, 3.0), "b": (0.05, 6.0), "c": (0.002, 2.0)}
    flops = {"a": 100.0, "b": 300.0, "c": 50.0}
    lam, budgets = solve_lambda(fits, flops, 180.0)
    assert sum(budgets.values()) == pytest.approx(180.0, rel=1e-9)
    for n, (p1, p2) in fits.items():
        share = budgets[n] / flops[n]
        if 0 < share < 0.95:                      # unclipped: dm/dc = p1 p2 exp(p2 c) = lambda
            assert p1 * p2 * math.exp(p2 * share) == pytest.approx(lam, rel=1e-9)
    assert removed_macs(1e-9, 0.01, 3.0, 100.0, 0.95) == 0.0
    assert removed_macs(1e9, 0.01, 3.0, 100.0, 0.95) == pytest.approx(95.0)
    with pytest.raises(ValueError, match="com_ratio"):
        solve_lambda(fits, flops, 440.0)


def test_layer_macs_hand_computed():
    geom = LayerGeom(c_out=32, c_in=16, k2=9, hw=64)
    assert layer_macs(geom, 4, None) == 12 * 9 * 32 * 64
    assert layer_macs(geom, 4, 8) == (12 * 9 * 8 + 8 * 32) * 64       # cheaper than pruned-only, so built


def test_compress_layer_meets_budget_and_built_layer_is_forward_equal():
    torch.manual_seed(1)
    conv = nn.Conv2d(8, 12, 3, 1, 1, bias=False)
    g = torch.randn_like(conv.weight) * 0.1
    geom = LayerGeom(12, 8, 9, 36)
    target = 0.6 * geom.dense_macs()
    res = compress_layer(conv.weight.detach(), g, geom, target, 0.9, ("pruning", "td"))
    assert res["removed"] >= target
    src = nn.Conv2d(8, 12, 3, 1, 1, bias=False)
    with torch.no_grad():
        src.weight.copy_(res["weight"])
    layer = LowRankConv2d.from_conv(src, res["keep"], res["rank"])
    x = torch.randn(2, 8, 6, 6)
    assert (layer(x) - src(x)).abs().max().item() < 1e-5            # the rank-r two-conv layer = the masked conv
    c = measure(layer, (8, 6, 6))
    assert c.macs == layer_macs(geom, 8 - len(res["keep"]), res["rank"])
    assert geom.dense_macs() - c.macs == res["removed"]
