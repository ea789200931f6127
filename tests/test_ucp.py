"""UCP (methods/ucp.py): MSEB gate scores on fixed weights, the mean-threshold rule, stage-uniform widths
for basic blocks, the bottleneck variant (middle conv only)."""
import math

import pytest
import torch

from methods.ucp import SEGate, channel_scores, insert_se, remove_se, score_targets, threshold_count, ucp_keep
from methods.common.channel_pruning import channel_groups, prune_channels
from models import build_model


@pytest.mark.golden
def test_se_gate_scores_hand_computed():
    se = SEGate(2, reduction=16)             # C <= 16: hidden width 1, FCs with bias
    assert se.fc1.weight.shape == (1, 2) and se.fc1.bias is not None and se.fc2.weight.shape == (2, 1)
    with torch.no_grad():
        se.fc1.weight.copy_(torch.tensor([[1.0, -1.0]]))
        se.fc1.bias.fill_(0.5)
        se.fc2.weight.copy_(torch.tensor([[2.0], [-1.0]]))
        se.fc2.bias.copy_(torch.tensor([0.0, 1.0]))
    # image 1: channel means (3, 1) -> h = relu(3 - 1 + 0.5) = 2.5 -> gates sigmoid(5), sigmoid(-1.5)
    # image 2: channel means (0, 2) -> h = relu(0 - 2 + 0.5) = 0 -> gates sigmoid(0), sigmoid(1)
    x = torch.stack([torch.stack([torch.full((2, 2), 3.0), torch.full((2, 2), 1.0)]),
                     torch.stack([torch.zeros(2, 2), torch.full((2, 2), 2.0)])])
    sig = lambda v: 1 / (1 + math.exp(-v))
    se.recording = True
    y = se(x)
    torch.testing.assert_close(y[0, 0], torch.full((2, 2), 3 * sig(5)))
    torch.testing.assert_close(se.score(), torch.tensor([(sig(5) + sig(0)) / 2, (sig(-1.5) + sig(1)) / 2]))
    big = SEGate(64)
    assert big.fc1.weight.shape == (4, 64) and big.fc1.bias is None


@pytest.mark.golden
def test_threshold_rule():
    s = torch.tensor([0.9, 0.5, 0.4, 0.6])     # mean 0.6: 0.9 and 0.6 exceed 0.999 * 0.6 = 0.5994
    assert threshold_count(s, 0.999) == 2
    assert threshold_count(s, 1.0) == 1
    assert threshold_count(torch.ones(5), 1.0) == 1   # never zero channels


def _scores(names, spec, gen):
    return {n: torch.rand(spec[n].width if n in spec.groups else 0, generator=gen) for n in names}


@pytest.mark.golden
def test_uniform_per_stage_basic_blocks():
    model = build_model("resnet20", num_classes=10)
    spec = channel_groups(model)
    gen = torch.Generator().manual_seed(0)
    scores = {p: torch.rand(spec[n].width, generator=gen) for n in spec.names() for p in spec[n].producers}
    keep = ucp_keep(model, scores, 0.999)
    assert set(keep) == set(spec.names("inner"))            # residual width untouched
    for stage in ("layer1", "layer2", "layer3"):
        names = [n for n in keep if n.startswith(stage)]
        want = round(sum(threshold_count(scores[n], 0.999) for n in names) / len(names))
        assert {len(keep[n]) for n in names} == {want}
        for n in names:                                      # each block keeps its own top channels
            assert set(keep[n]) == set(torch.topk(scores[n], want).indices.tolist())
    fixed = ucp_keep(model, scores, stage_widths=[16, 32, 32])
    assert len(fixed["layer3.1.conv1"]) == 32 and len(fixed["layer1.0.conv1"]) == 16
    compact = prune_channels(model, fixed)
    assert compact(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.golden
def test_bottleneck_prunes_only_the_middle_conv():
    import torchvision
    model = torchvision.models.ResNet(torchvision.models.resnet.Bottleneck, [2, 1, 1, 1], num_classes=10,
                                      width_per_group=16)
    spec = channel_groups(model)
    gen = torch.Generator().manual_seed(0)
    scores = {p: torch.rand(spec[n].width, generator=gen) for n in spec.names() for p in spec[n].producers}
    keep = ucp_keep(model, scores)
    assert keep and all(n.endswith(".conv2") for n in keep)
    assert all(len(keep[n]) == threshold_count(scores[n], 0.999) for n in keep)


def test_se_insert_score_remove_roundtrip():
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
    names = score_targets(model, "every_conv")
    assert len(names) == 19
    insert_se(model, names, generator=torch.Generator().manual_seed(0))
    s1 = channel_scores(model, [(x, None)], "cpu")
    s2 = channel_scores(model, [(x, None)], "cpu")
    assert set(s1) == set(names) and all(torch.equal(s1[n], s2[n]) for n in names)   # reproducible passes
    assert all(((v > 0) & (v < 1)).all() for v in s1.values())
    remove_se(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), before)


def test_selection_and_allocation_controls():
    """selection random/l1 keep UCP's widths with other channels; allocation uniform matches UCP's FLOPs share."""
    from omegaconf import OmegaConf
    from methods import RunContext, build_method
    from core.complexity import measure

    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    ctx = RunContext(num_classes=10, in_channels=3, image_size=32, device="cpu", train_loader=[(x, None)])
    stage = None
    res = {}
    for sel, alloc in (("se", "ucp"), ("random", "ucp"), ("l1", "ucp"), ("se", "uniform")):
        m = build_method(OmegaConf.create({"name": "ucp", "selection": sel, "allocation": alloc, "init": "inherit",
                                           "stages": [{"name": "se_train"}, {"name": "retrain"}], "latency": {"enabled": False}}))
        torch.manual_seed(1)                       # the same backbone for every arm
        model = m.transform(build_model("resnet20", num_classes=10), ctx)
        stage = m.stages()[0]
        compact = m.on_stage_end(stage, model, ctx)
        res[(sel, alloc)] = (m.config["groups"], measure(compact, (3, 32, 32)).flops, m.signals)
    assert res[("se", "ucp")][0] == res[("random", "ucp")][0] == res[("l1", "ucp")][0]
    assert res[("random", "ucp")][2]["chosen_se_jaccard_mean"] < 1.0
    ucp_flops, uni_flops = res[("se", "ucp")][1], res[("se", "uniform")][1]
    assert abs(uni_flops - ucp_flops) / ucp_flops < 0.05
