"""DCFF math on fixed filters (methods/dcff.py) against hand-computed values, and the fused -> compact export."""
import math

import pytest
import torch
import torch.nn as nn

from methods.dcff import (FusedConv2d, build_fused, dynamic_importance, export_compact, fuse, fused_layers,
                          inter_similarity, select, temperature)
from methods.common.channel_pruning import channel_groups, counts_from_rates
from models import build_model

# three 1x1 filters with one input channel: W = [0, 1, 3] -> D = [[0,1,3],[1,0,2],[3,2,0]]
W = torch.tensor([0.0, 1.0, 3.0]).view(3, 1, 1, 1)
D = [[0, 1, 3], [1, 0, 2], [3, 2, 0]]


def _hand_p(t):
    rows = []
    for j in range(3):
        e = [math.exp(-t * D[j][l]) for l in range(3)]
        rows.append([v / sum(e) for v in e])
    return rows


@pytest.mark.golden
def test_temperature_schedule_closed_form():
    e_total = 300
    a = 2 * (1e4 - 1) * (1 + math.exp(-e_total)) / (1 - math.exp(-e_total))
    assert temperature(0, e_total) == pytest.approx(1.0, abs=1e-9)
    assert temperature(e_total, e_total) == pytest.approx(1e4, rel=1e-12)
    assert temperature(1, e_total) == pytest.approx(a / (1 + math.exp(-1)) + 1 - a / 2, rel=1e-12)
    # the note's values: ~4600 at epoch 1, ~7600 at epoch 2, ~9870 at epoch 5 (T ~ 1 + 9999 tanh(e/2))
    assert temperature(1, e_total) == pytest.approx(1 + 9999 * math.tanh(0.5), rel=1e-9)
    assert round(temperature(2, e_total), -2) == 7600 and round(temperature(5, e_total), -1) == 9870
    # short schedules still end at Te: E = 2 -> T(2) = 10^4
    assert temperature(2, 2) == pytest.approx(1e4)


@pytest.mark.golden
def test_inter_similarity_rows_are_softmax_of_negative_scaled_distance():
    for t in (1.0, 0.5):
        p = inter_similarity(W, t)
        torch.testing.assert_close(p, torch.tensor(_hand_p(t)), atol=1e-7, rtol=0)
    # T large: one-hot at the filter itself (D(j, j) = 0); the note's check (b)
    assert torch.equal(inter_similarity(W, 1e4), torch.eye(3))
    assert inter_similarity(W, 1.0).max(1).values.max() < 0.99


@pytest.mark.golden
def test_kl_importance_hand_computed():
    p = _hand_p(1.0)
    eps = 1e-7
    want = [sum(sum(p[j][k] * (math.log(p[j][k] + eps) - math.log(p[l][k] + eps)) for k in range(3))
                for l in range(3)) for j in range(3)]
    got = dynamic_importance(torch.tensor(p, dtype=torch.float64))
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float32), atol=1e-6, rtol=1e-6)
    # the isolated filter (3) differs most from the others; the middle one (1) least
    assert got.argmax() == 2 and got.argmin() == 1
    # identical distributions have zero importance
    assert torch.allclose(dynamic_importance(torch.full((4, 4), 0.25)), torch.zeros(4), atol=1e-6)


@pytest.mark.golden
def test_fusion_is_weighted_average_of_all_filters():
    p = torch.tensor(_hand_p(1.0))
    sel = torch.tensor([0, 2])
    fused = fuse(W, p[sel])
    want = [sum(p[j][l] * [0.0, 1.0, 3.0][l] for l in range(3)) for j in (0, 2)]
    torch.testing.assert_close(fused.flatten(), torch.tensor(want), atol=1e-7, rtol=0)
    # the layer: keep m=2 of 3 by importance -> filters 0 and 2 (scores of 0 and 2 beat the middle one)
    conv = nn.Conv2d(1, 3, 1, bias=True)
    layer = FusedConv2d(W, torch.tensor([1.0, 2.0, 4.0]), 2, conv)
    layer.refresh(1.0)
    assert layer.selected.tolist() == [0, 2] and layer.out_channels == 2
    w, b = layer.fused_weight()
    torch.testing.assert_close(w.flatten(), torch.tensor(want), atol=1e-6, rtol=0)
    torch.testing.assert_close(b, torch.tensor([sum(p[j][l] * [1.0, 2.0, 4.0][l] for l in range(3)) for j in (0, 2)]),
                               atol=1e-6, rtol=0)
    # gradients reach all three original filters through the constant P
    x = torch.ones(1, 1, 2, 2)
    layer(x).sum().backward()
    assert (layer.weight.grad.flatten() != 0).all()


@pytest.mark.golden
def test_refresh_happens_at_next_training_forward_and_export_matches():
    torch.manual_seed(0)
    dense = build_model("resnet20", num_classes=10)
    spec = channel_groups(dense)
    rates = "[0.5]*9+[0.0]*3"
    counts = {**{n: g.width for n, g in spec.groups.items()}, **counts_from_rates(dense, rates, spec)}
    assert counts["layer1.0.conv1"] == 8 and counts["layer3.2.conv1"] == 32 and counts["layer3"] == 64
    fused = build_fused(dense, counts, {n: range(k) for n, k in counts.items()})
    layers = fused_layers(fused)
    assert len(layers) == 19 and layers["layer2.0.conv1"].out_channels == 16
    for m in layers.values():
        m.refresh(1.0)
    sel_t1 = layers["layer2.0.conv1"].selected.clone()
    for m in layers.values():
        m.schedule_refresh(1e4)
    fused.eval()
    fused(torch.randn(2, 3, 32, 32))           # eval forward: no refresh
    assert float(layers["layer2.0.conv1"].temperature) == 1.0
    fused.train()
    fused(torch.randn(4, 3, 32, 32))           # first training forward of the epoch: refresh at T = 1e4
    assert float(layers["layer2.0.conv1"].temperature) == 1e4 and float(layers["layer2.0.conv1"].next_temperature) == 0
    p = layers["layer2.0.conv1"].fusion
    assert torch.allclose(p.max(1).values, torch.ones(16), atol=1e-6)   # near one-hot at T = 1e4
    assert sel_t1.numel() == 16
    fused.eval()
    compact = export_compact(fused)
    assert not fused_layers(compact)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(compact(x), fused(x), atol=1e-5, rtol=1e-4)   # the note's check (d)
    assert compact.layer2[0].conv1.weight.shape == (16, 16, 3, 3)
    assert compact.layer2[0].conv2.weight.shape == (32, 16, 3, 3)


@pytest.mark.golden
def test_select_breaks_score_ties_by_prior_then_index():
    scores = torch.tensor([2.0, 5.0, 5.0, 5.0, 1.0])
    assert select(scores, -torch.arange(5.0), 2).tolist() == [1, 2]          # ties: lower index
    assert select(scores, torch.tensor([0.0, 0, 1, 1, 0]), 2).tolist() == [2, 3]  # ties: preferred channels
    assert select(scores, torch.tensor([9.0, 0, 0, 0, 9]), 3).tolist() == [1, 2, 3]  # scores first
    # one-hot P (large T): every filter scores the same
    s = dynamic_importance(inter_similarity(torch.randn(6, 4, 3, 3), 1e4))
    assert torch.unique(s).numel() == 1


def test_inherit_fused_model_at_large_temperature_is_the_l1_pruned_backbone():
    """With init: inherit, BN and the next layers hold the L1-kept channels; once P is one-hot the fused layers
    must pick those same channels (not the lowest indices), so the fused model computes the L1-pruned model."""
    from methods import RunContext, build_method
    from methods.common.channel_pruning import filter_l1, prune_channels, top_k
    from omegaconf import OmegaConf

    torch.manual_seed(0)
    dense = build_model("resnet20", num_classes=10)
    for m in dense.modules():                   # non-trivial BN so channel mix-ups change the outputs
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    rates = "[0.5]*9+[0.0]*3"
    method = build_method(OmegaConf.create({"name": "dcff", "cprate": rates, "init": "inherit", "score_rule": "recompute",
                                            "temperature": {"epochs": 10}}))
    ctx = RunContext(num_classes=10, in_channels=3, image_size=32, device="cpu", train_loader=None,
                     test_loader=None, seed=0)
    import copy
    fused = method.transform(copy.deepcopy(dense), ctx).eval()
    for m in fused_layers(fused).values():
        m.refresh(1e4)
    spec = channel_groups(dense)
    counts = counts_from_rates(dense, rates, spec)
    l1 = prune_channels(dense, {n: top_k(filter_l1(dense, spec[n]), k).tolist() for n, k in counts.items()}, spec)
    assert fused_layers(fused)["layer1.0.conv1"].selected.tolist() != list(range(8))   # not the lowest indices
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), l1.eval()(x), atol=1e-5, rtol=1e-4)
