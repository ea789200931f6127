"""Structural channel pruning on every supported backbone (methods/common/channel_pruning.py).

For each backbone: (a) surgery with nothing pruned gives identical outputs; (b) a model whose
not-kept channels are silenced (BN weight and bias zero) gives the same outputs after surgery, so
carried-over weights and the residual/shortcut wiring are exact; (c) the compact layers have exactly
the declared channel counts; (d) the compact model reloads from its channel config alone.
"""
import pytest
import torch
import torch.nn as nn

from methods.common.channel_pruning import (IndexShortcut, apply_channel_config, canonical_shortcut_map,
                                            channel_groups, counts_from_rates, dead_channel_model, kept_width,
                                            load_compact, parse_rates, prune_channels, rate_layout)
from models import build_model
from models.cifar_resnet import ZeroPadShortcut

# Registered full-size backbones (slow on 2 shared cores) and narrow members of the same families (default).
FULL = [("resnet20", 32), ("resnet56", 32), ("resnet18", 32), ("resnet34", 32), ("resnet50", 32),
        ("vgg16", 32), ("vgg19", 32), ("mobilenet_v2", 32)]
BACKBONES = [pytest.param(n, s, marks=pytest.mark.slow) if n not in ("resnet20",) else (n, s) for n, s in FULL] + [
    ("narrow:resnet18", 32), ("narrow:resnet50", 32), ("narrow:vgg16", 32), ("narrow:mobilenet_v2", 32)]


def _narrow(name):
    """Same block types and wiring as the registered backbone, a fraction of the width."""
    import torchvision
    from models.resnet import CifarResNetB
    from models.vgg import CifarVGG
    if name == "resnet18":
        return CifarResNetB((2, 2, 2, 2), num_classes=10, widths=(8, 16, 32, 64))
    if name == "resnet50":
        return torchvision.models.ResNet(torchvision.models.resnet.Bottleneck, [2, 1, 1, 1], num_classes=10,
                                         width_per_group=16)
    if name == "vgg16":
        return CifarVGG(16, 10, 3, channels=[8, 8, 16, 16, 16, 16, 16, 32, 32, 32, 32, 32, 32])
    if name == "mobilenet_v2":
        return torchvision.models.MobileNetV2(num_classes=10, width_mult=0.25)
    raise KeyError(name)


def _random_stats(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
    return model.eval()


def _random_keep(spec, seed=1):
    """Half of every group, random; option-A destinations also keep every channel their shortcut feeds
    from a kept source channel (otherwise that channel is not dead in the dense model)."""
    g = torch.Generator().manual_seed(seed)
    keep = {n: sorted(torch.randperm(gr.width, generator=g)[: max(1, gr.width // 2)].tolist())
            for n, gr in spec.groups.items()}
    for link in spec.shortcuts:
        half = (spec[link.dst].width - spec[link.src].width) // 2
        keep[link.dst] = sorted(set(keep[link.dst]) | {c + half for c in keep[link.src]})
    return keep


def _build(name, size):
    torch.manual_seed(0)
    if name.startswith("narrow:"):
        return _random_stats(_narrow(name.split(":")[1]))
    return _random_stats(build_model(name, num_classes=10, image_size=size))


@pytest.mark.golden
@pytest.mark.parametrize("name,size", BACKBONES)
def test_surgery_exact_on_every_backbone(name, size, tmp_path):
    model = _build(name, size)
    spec = channel_groups(model)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        dense_out = model(x)
        # (a) nothing pruned: identical outputs, identical parameter count
        same = prune_channels(model, {}, spec)
        assert torch.equal(same(x), dense_out)
        assert sum(p.numel() for p in same.parameters()) == sum(p.numel() for p in model.parameters())
        # (b) silenced channels removed: same outputs
        keep = _random_keep(spec)
        silenced = dead_channel_model(model, keep, spec)
        compact = prune_channels(silenced, keep, spec)
        torch.testing.assert_close(compact(x), silenced(x), atol=2e-5, rtol=1e-4)
    # (c) declared counts: every producer/consumer/norm has the kept width
    modules = dict(compact.named_modules())
    for n, g in spec.groups.items():
        k = len(keep[n])
        assert compact.channel_config["groups"][n] == k
        for p in g.producers:
            m = modules[p]
            assert (m.out_features if isinstance(m, nn.Linear) else m.out_channels) == k == m.weight.shape[0]
        for b in g.norms:
            assert modules[b].num_features == k == modules[b].running_mean.numel()
        for c in g.consumers:
            assert modules[c].weight.shape[1] == k
    assert sum(p.numel() for p in compact.parameters()) < sum(p.numel() for p in model.parameters())
    # (d) reload from the channel config alone
    if name.startswith("narrow:"):
        reloaded = apply_channel_config(_build(name, size), compact.channel_config)
        reloaded.load_state_dict(compact.state_dict())
    else:
        from methods.common.channel_pruning import save_compact
        path = tmp_path / "compact.pt"
        save_compact(compact, str(path), {"name": name, "num_classes": 10, "image_size": size})
        reloaded = load_compact(str(path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), compact(x), atol=1e-6, rtol=1e-6)


@pytest.mark.golden
def test_option_a_shortcut_index_map_hand_case():
    """ResNet-20 stage 1 keeps channels {0,2,...,14} (8 of 16); stage 2 keeps {8..23} (16 of 32).
    The dense shortcut feeds stage-2 channel c from stage-1 channel c-8, so compact channel i of
    stage 2 (= dense 8+i) reads stage-1 dense channel i, which is compact index i/2 when i is even."""
    model = _build("resnet20", 32)
    spec = channel_groups(model)
    assert [(l.name, l.src, l.dst) for l in spec.shortcuts] == [("layer2.0.shortcut", "layer1", "layer2"),
                                                                 ("layer3.0.shortcut", "layer2", "layer3")]
    compact = prune_channels(model, {"layer1": range(0, 16, 2), "layer2": range(8, 24)}, spec)
    sc = compact.layer2[0].shortcut
    assert isinstance(sc, IndexShortcut)
    assert sc.src.tolist() == [0, -1, 1, -1, 2, -1, 3, -1, 4, -1, 5, -1, 6, -1, 7, -1]
    # stage 3 (dense 32 -> 64, pad 16) keeps all: compact stage-2 channel j (dense 8+j) feeds dense 24+j,
    # which is exactly the canonical zero-pad of 16 -> 64 channels (24 zeros first)
    assert isinstance(compact.layer3[0].shortcut, ZeroPadShortcut) and compact.layer3[0].shortcut.extra == 48
    assert "layer3.0.shortcut" not in compact.channel_config["shortcuts"]
    assert compact.channel_config["shortcuts"]["layer2.0.shortcut"] == sc.src.tolist()
    x = torch.arange(2 * 8 * 4 * 4, dtype=torch.float).view(2, 8, 4, 4)
    y = sc(x)
    assert torch.equal(y[:, 2], x[:, 1, ::2, ::2]) and torch.equal(y[:, 1], torch.zeros(2, 2, 2))


def test_canonical_shortcut_is_plain_zero_pad():
    assert canonical_shortcut_map(6, 4) == [-1, 0, 1, 2, 3, -1]
    model = build_model("resnet110", num_classes=10)
    compact = apply_channel_config(model, {"layer1": 6, "layer2": 25, "layer3": 32})
    assert isinstance(compact.layer2[0].shortcut, ZeroPadShortcut) and compact.layer2[0].shortcut.extra == 19
    assert compact.layer3[0].shortcut.extra == 7
    assert compact(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_rate_strings_and_layouts():
    assert parse_rates("[0.5]*2+[0.4]*2+([0.1]+[0.2])*2") == [0.5, 0.5, 0.4, 0.4, 0.1, 0.2, 0.1, 0.2]
    with pytest.raises(ValueError, match="only lists"):
        parse_rates("__import__('os')")
    assert kept_width(16, 0.7) == 4 and kept_width(64, 0.8) == 12 and kept_width(512, 0.85) == 76
    r56 = build_model("resnet56", num_classes=10)
    layout = rate_layout(r56)
    assert len(layout) == 30 and layout[0] == "layer1.0.conv1" and layout[-3:] == ["layer1", "layer2", "layer3"]
    with pytest.raises(ValueError, match="needs 30"):
        counts_from_rates(r56, "[0.1]*29")
    r50 = build_model("resnet50", num_classes=1000, image_size=224)
    layout = rate_layout(r50)
    assert len(layout) == 37 and layout[0] == "conv1" and layout[1] == "layer1.0.conv1"
    assert layout[17] == "layer1.0.conv2" and layout[-4:] == ["layer1", "layer2", "layer3", "layer4"]


def test_bad_choices_fail_with_names():
    model = build_model("resnet20", num_classes=10)
    with pytest.raises(ValueError, match="unknown channel groups"):
        prune_channels(model, {"layer9": [0]})
    with pytest.raises(ValueError, match="in \\[0, 16\\)"):
        prune_channels(model, {"layer1": [0, 16]})
    with pytest.raises(ValueError, match="does not know"):
        channel_groups(build_model("lenet5", num_classes=10, in_channels=1, image_size=28))


@pytest.mark.golden
def test_iterative_pruning_of_a_pruned_model_stays_exact():
    """AIP-style repeated pruning: groups of a compact model are found again and pruned again exactly."""
    model = _build("narrow:resnet18", 32)
    first = prune_channels(model, _random_keep(channel_groups(model), seed=3))
    spec2 = channel_groups(first)
    assert spec2["layer2"].width == len(_random_keep(channel_groups(model), seed=3)["layer2"])
    keep2 = _random_keep(spec2, seed=4)
    silenced = dead_channel_model(first, keep2, spec2)
    second = prune_channels(silenced, keep2, spec2)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(second(x), silenced(x), atol=2e-5, rtol=1e-4)
