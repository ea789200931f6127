"""DNS (methods/dns.py): golden values of the paper's equations and the mask machinery through training steps."""
import math

import pytest
import torch
import torch.nn as nn
from omegaconf import OmegaConf

from conftest import TinyConvNet as Tiny
from conftest import method_steps as steps
from conftest import tiny_ctx as ctx
from methods import build_method
from methods.common.masks import MaskedLayer, attach_masks
from methods.dns import dns_mask, dns_thresholds, update_probability

pytestmark = pytest.mark.golden


def dns_cfg(**kw):
    base = {"name": "dns", "family": "prune", "layers": None, "exclude": [], "gamma": 0.0, "power": 1.0,
            "c_rate": 0.0, "iter_stop": {"conv": 100, "fc": 100}, "per_layer": {}, "splice": True,
            "index_bits": {"conv": 8, "fc": 5}, "stages": None}
    base.update(kw)
    return OmegaConf.create(base)




# ---- golden: the equations ------------------------------------------------------------------------------------

def test_mask_update_prunes_keeps_band_and_splices_back():
    w = torch.tensor([0.05, -0.2, 0.3, -0.45, 0.6, 1.0])
    prev = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    # a = 0.25, b = 0.5: |w| < a pruned; a <= |w| < b keeps its previous state; |w| >= b on (spliced back)
    assert dns_mask(w, prev, 0.25, 0.5).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    # one-way pruning ablation: the entry at 1.0 (previously 0) is not spliced back
    assert dns_mask(w, prev, 0.25, 0.5, splice=False).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    # boundaries: |w| == a is in the band (kept), |w| == b is spliced
    assert dns_mask(torch.tensor([0.25, -0.5]), torch.tensor([0.0, 0.0]), 0.25, 0.5).tolist() == [0.0, 1.0]
    assert dns_mask(torch.tensor([0.25]), torch.tensor([1.0]), 0.25, 0.5).tolist() == [1.0]


def test_thresholds_from_nonzero_weights_and_biases():
    w = torch.tensor([[1.0, -2.0], [3.0, 0.0]])
    b = torch.tensor([-4.0, 0.0])
    mu, std, a, bb = dns_thresholds(w, b, c_rate=1.0)
    # nonzero |x| = 1, 2, 3, 4: mu = 2.5, mean x^2 = 7.5, std = sqrt(1.25)
    assert mu == pytest.approx(2.5)
    assert std == pytest.approx(math.sqrt(1.25))
    assert a == pytest.approx(0.9 * (2.5 + math.sqrt(1.25)))
    assert bb == pytest.approx(1.1 * (2.5 + math.sqrt(1.25)))
    # negative c below -mu/std clamps the base to zero: nothing is pruned
    assert dns_thresholds(w, b, c_rate=-3.0)[2:] == (0.0, 0.0)
    # fractional c
    assert dns_thresholds(w, None, c_rate=0.5)[2] == pytest.approx(0.9 * (2.0 + 0.5 * math.sqrt(14 / 3 - 4)))


def test_update_probability_schedule():
    assert update_probability(0, 1e-3, 1) == 1.0
    assert update_probability(1000, 1e-3, 1) == pytest.approx(0.5)
    assert update_probability(1000, 1e-3, 2) == pytest.approx(0.25)
    assert update_probability(14000, 1e-4, 1) == pytest.approx(1 / 2.4)


# ---- the mask machinery --------------------------------------------------------------------------------------

def test_straight_through_gradient_reaches_pruned_weights():
    torch.manual_seed(0)
    fc = attach_masks(nn.Linear(4, 2), mask_grad="straight_through")
    fc.weight_mask.zero_()
    fc.weight_mask[0, 0] = 1
    x = torch.randn(5, 4)
    fc(x).sum().backward()
    # dL/d(W*T) = sum_x x for every entry, pruned ones included
    expected = x.sum(0).expand(2, 4)
    assert torch.allclose(fc.weight.grad, expected)
    # the ordinary (frozen) rule zeroes pruned entries' gradient
    fc.weight.grad = None
    fc.mask_grad = "masked"
    fc(x).sum().backward()
    assert torch.allclose(fc.weight.grad, expected * fc.weight_mask)
    # output uses W*T
    assert torch.allclose(fc(x), x @ (fc.weight * fc.weight_mask).T + fc.bias * fc.bias_mask)


def test_dense_checkpoint_loads_into_masked_layer_and_masks_round_trip():
    dense = nn.Linear(3, 2)
    masked = attach_masks(nn.Linear(3, 2))
    masked.load_state_dict(dense.state_dict())            # strict: missing masks keep their (ones) values
    assert torch.equal(masked.weight, dense.weight) and masked.weight_mask.sum() == 6
    masked.weight_mask[0] = 0
    other = attach_masks(nn.Linear(3, 2))
    other.load_state_dict(masked.state_dict())
    assert torch.equal(other.weight_mask, masked.weight_mask)
    assert isinstance(other, MaskedLayer) and isinstance(other, nn.Linear)


def test_surgery_prunes_splices_and_stops():
    torch.manual_seed(0)
    model = Tiny()
    method = build_method(dns_cfg(gamma=0.0, c_rate=0.0, iter_stop={"conv": 100, "fc": 3}))
    model = method.transform(model, ctx())
    stage = method.stages()[0]
    method.on_stage_start(stage, model, ctx())
    fc = model.fc
    mu, std, a, b = fc.dns_stats.tolist()
    w = fc.weight.detach()
    assert torch.equal(fc.weight_mask, (w.abs() >= a).float())   # t = 0 from an all-ones mask: band keeps 1
    assert 0 < fc.weight_mask.sum() < fc.weight_mask.numel()
    # splice back: lift a pruned weight above b; gamma = 0 -> sigma = 1, so the next iteration updates
    i = (fc.weight_mask == 0).nonzero()[0]
    with torch.no_grad():
        fc.weight[i[0], i[1]] = 2 * b
    method.after_step(model, 0)                                   # t = 1 < iter_stop 3
    assert fc.weight_mask[i[0], i[1]] == 1
    assert method.counts["fc"]["spliced"] >= 1
    method.after_step(model, 1)                                   # t = 2
    updates = method.counts["fc"]["updates"]
    method.after_step(model, 2)                                   # t = 3 = iter_stop: frozen from here
    with torch.no_grad():
        fc.weight[i[0], i[1]] = 0.0
    method.after_step(model, 3)
    assert method.counts["fc"]["updates"] == updates
    assert fc.weight_mask[i[0], i[1]] == 1                        # not re-pruned after iter_stop
    assert method.counts["conv"]["updates"] == 5                  # conv still in surgery (iter_stop 100)


def test_pruned_weights_keep_training_during_surgery_and_stay_zero_after():
    torch.manual_seed(0)
    model = Tiny()
    method = build_method(dns_cfg(c_rate=0.5, iter_stop=0))     # iter_stop 0: not even the t = 0 update
    model = method.transform(model, ctx())
    stage = method.stages()[0]
    method.on_stage_start(stage, model, ctx())
    assert model.fc.weight_mask.sum() == model.fc.weight_mask.numel()   # iter_stop 0: no update at all
    method = build_method(dns_cfg(c_rate=0.5, iter_stop=1000))
    model = method.transform(Tiny(), ctx())
    method.on_stage_start(stage, model, ctx())
    pruned = model.fc.weight_mask == 0
    before = model.fc.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    steps(method, model, opt, 3)
    assert (model.fc.weight.detach()[pruned] != before[pruned]).all()     # (b) pruned weights evolve
    method.on_stage_end(stage, model, ctx())
    mask = model.fc.weight_mask.clone()
    assert (model.fc.weight.detach()[mask == 0] == 0).all()                # folded: exact zeros
    steps(method, model, opt, 5, seed=1)                                   # momentum + weight decay
    assert torch.equal(model.fc.weight_mask, mask)
    assert (model.fc.weight.detach()[mask == 0] == 0).all()
    assert (model.fc.bias.detach()[model.fc.bias_mask == 0] == 0).all()


def test_per_layer_hparams_and_bad_config():
    method = build_method(dns_cfg(per_layer={"conv": {"c_rate": 1.0, "iter_stop": 14000}}, c_rate=4.0))
    method.transform(Tiny(), ctx())
    assert method.hparams["conv"]["c_rate"] == 1.0 and method.hparams["conv"]["iter_stop"] == 14000
    assert method.hparams["fc"]["c_rate"] == 4.0 and method.hparams["fc"]["iter_stop"] == 100
    with pytest.raises(KeyError, match="unknown keys.*c_ratio"):
        build_method(dns_cfg(per_layer={"conv": {"c_ratio": 1.0}}))
    with pytest.raises(KeyError, match="not compressed layers"):
        build_method(dns_cfg(per_layer={"conv9": {"c_rate": 1.0}})).transform(Tiny(), ctx())
    with pytest.raises(ValueError, match="kind must be one of"):
        build_method(dns_cfg(stages=[{"name": "s", "kind": "prune"}])).stages()


def test_layer_groups_one_after_another():
    torch.manual_seed(0)
    method = build_method(dns_cfg(c_rate=0.5, iter_stop=1000, stages=[
        {"name": "convs", "kind": "surgery", "layers": ["conv"]},
        {"name": "fcs", "kind": "surgery", "layers": ["fc"]},
        {"name": "tune", "kind": "finetune"}]))
    model = method.transform(Tiny(), ctx())
    s1, s2, s3 = method.stages()
    method.on_stage_start(s1, model, ctx())
    assert model.conv.mask_grad == "straight_through" and model.fc.mask_grad == "masked"
    assert model.fc.weight_mask.all() and not bool(model.fc.dns_ready)   # later group: dense, no stats yet
    assert not model.conv.weight_mask.all()
    method.on_stage_end(s1, model, ctx())
    conv_mask = model.conv.weight_mask.clone()
    method.on_stage_start(s2, model, ctx())
    assert model.conv.mask_grad == "masked" and model.fc.mask_grad == "straight_through"
    assert method.t == 0 and bool(model.fc.dns_ready) and not model.fc.weight_mask.all()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    steps(method, model, opt, 3)
    assert torch.equal(model.conv.weight_mask, conv_mask)                # finished group frozen
    method.on_stage_end(s2, model, ctx())
    method.on_stage_start(s3, model, ctx())
    assert model.conv.mask_grad == "masked" and model.fc.mask_grad == "masked"
    assert method.done == ["conv", "fc"]


@pytest.mark.parametrize("order", ["engine", "load_first"])
def test_resume_keeps_thresholds_and_repeats_uninterrupted_run(order):
    """engine/trainer.py calls on_stage_start on the rebuilt model, then loads model + method state."""
    def fresh():
        torch.manual_seed(0)
        m = build_method(dns_cfg(c_rate=0.3, gamma=0.05, iter_stop=1000))
        net = m.transform(Tiny(), ctx())
        return m, net

    # uninterrupted: 6 steps
    m1, net1 = fresh()
    stage = m1.stages()[0]
    m1.on_stage_start(stage, net1, ctx())
    opt1 = torch.optim.SGD(net1.parameters(), lr=0.2, momentum=0.9)
    steps(m1, net1, opt1, 3, seed=1)
    steps(m1, net1, opt1, 3, seed=2)
    # interrupted after 3 steps, checkpointed, rebuilt, resumed
    m2, net2 = fresh()
    m2.on_stage_start(stage, net2, ctx())
    stats0 = net2.fc.dns_stats.clone()
    opt2 = torch.optim.SGD(net2.parameters(), lr=0.2, momentum=0.9)
    steps(m2, net2, opt2, 3, seed=1)
    ckpt = {"model": net2.state_dict(), "method": m2.state_dict(), "opt": opt2.state_dict()}
    torch.manual_seed(1)                       # the rebuilt model starts from other weights
    m3 = build_method(dns_cfg(c_rate=0.3, gamma=0.05, iter_stop=1000))
    net3 = m3.transform(Tiny(), ctx())
    if order == "engine":
        m3.on_stage_start(stage, net3, ctx())
    net3.load_state_dict(ckpt["model"])
    m3.load_state_dict(ckpt["method"])
    opt3 = torch.optim.SGD(net3.parameters(), lr=0.2, momentum=0.9)
    opt3.load_state_dict(ckpt["opt"])
    if order == "load_first":
        m3.on_stage_start(stage, net3, ctx())
    # thresholds are the stored ones, not recomputed from the (changed) weights, and not zero (Caffe's flaw)
    assert torch.equal(net3.fc.dns_stats, stats0) and stats0[2] > 0
    recomputed = dns_thresholds(*net3.fc.masked_params(), 0.3)
    assert recomputed[2] != pytest.approx(float(stats0[2]))
    assert m3.t == 3
    steps(m3, net3, opt3, 3, seed=2)
    for k, v in net1.state_dict().items():
        assert torch.equal(v, net3.state_dict()[k]), k
    assert m1.counts == m3.counts


def test_metrics_compression_ratio():
    method = build_method(dns_cfg())
    model = method.transform(Tiny(), ctx())
    with torch.no_grad():
        model.conv.weight_mask.zero_()
        model.conv.weight_mask[0, 0, 0, 0] = 1
        model.fc.bias_mask.zero_()
    out = method.metrics(model)
    total = 4 * 9 + 4 + 16 * 3 + 3
    nonzero = 1 + 4 + 16 * 3
    assert out["params_conv_fc"] == total and out["nonzero_conv_fc"] == nonzero
    assert out["compression_ratio"] == pytest.approx(total / nonzero)
    assert out["remaining_pct_by_layer"]["fc"] == pytest.approx(100 * 48 / 51, abs=1e-3)
