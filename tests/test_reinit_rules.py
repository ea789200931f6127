"""From-scratch re-initialisation rules (``method.reinit``): each official rule draws what its authors' code draws,
null keeps the rule every earlier row used, and the methods pass the rule through."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from omegaconf import OmegaConf

from methods import RunContext, build_method
from methods.common.channel_pruning import REINIT_RULES, Reinit, reinitialize, residual_branch_end_norms
from models import build_model

CONF = Path(__file__).resolve().parents[1] / "conf"


def _net():
    """A conv whose fan-in (16*9) and fan-out (256*9) differ 16x, a BN and a wide linear, so every rule is told apart."""
    return nn.Sequential(nn.Conv2d(16, 256, 3, bias=False), nn.BatchNorm2d(256), nn.Flatten(), nn.Linear(4096, 512))


def _drawn(rule):
    net = _net()
    with torch.no_grad():
        net[1].weight.fill_(3.0)
        net[3].bias.fill_(7.0)
    return reinitialize(net, torch.Generator().manual_seed(0), rule)


@pytest.mark.parametrize("rule, conv_std, linear_std", [
    ("fan_out", math.sqrt(2 / (256 * 9)), math.sqrt(2 / 4096)),
    ("dcff_official", math.sqrt(2 / (16 * 9)), math.sqrt(2 / 4096)),           # kaiming_normal_ fan-in on both
    ("ucp_resnet_official", math.sqrt(2 / (256 * 9)), 1 / math.sqrt(3 * 4096)),  # linear: U(+-1/sqrt(fan_in))
    ("ucp_vgg_official", math.sqrt(2 / (256 * 9)), 0.01),
])
def test_each_rule_draws_its_stated_scales(rule, conv_std, linear_std):
    net = _drawn(rule).requires_grad_(False)
    assert float(net[0].weight.std()) == pytest.approx(conv_std, rel=0.03)
    assert float(net[3].weight.std()) == pytest.approx(linear_std, rel=0.03)


def test_bias_and_batchnorm_follow_each_rule():
    assert torch.all(_drawn("fan_out")[3].bias == 0)
    assert torch.all(_drawn("ucp_vgg_official")[3].bias == 0)
    for rule in ("dcff_official", "ucp_resnet_official"):          # PyTorch's default bias draw, U(+-1/sqrt(4096))
        bias = _drawn(rule)[3].bias.detach()
        assert float(bias.abs().max()) <= 1 / 64 and float(bias.std()) > 1 / 64 / 3
    for rule in ("fan_out", "dcff_official", "ucp_resnet_official"):
        assert torch.all(_drawn(rule)[1].weight == 1.0)
    assert torch.all(_drawn("ucp_vgg_official")[1].weight == 0.5)
    assert torch.all(_drawn("ucp_vgg_official")[1].bias == 0.0)


def test_null_is_fan_out_and_draws_what_the_earlier_rows_drew():
    """null keeps the hash of the rows made before the rules, so it must keep their draws: the first values below
    came from the pre-rules ``reinitialize`` (commit f06ec54) on this net with generator seed 0."""
    a, b = _drawn(None), _drawn("fan_out")
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    torch.testing.assert_close(a[0].weight.detach().flatten()[:4],
                               torch.tensor([-0.03317037597298622, -0.033951736986637115, -0.007382742129266262,
                                             -0.012783276848495007]), rtol=0, atol=1e-7)
    torch.testing.assert_close(a[3].weight.detach().flatten()[:4],
                               torch.tensor([0.007055958732962608, 0.02106308564543724, 0.020051252096891403,
                                             -0.00714903837069869]), rtol=0, atol=1e-7)
    assert set(REINIT_RULES) == {"fan_out", "dcff_official", "ucp_resnet_official", "ucp_vgg_official"}


def test_each_method_defaults_to_its_authors_rule():
    assert OmegaConf.load(CONF / "method/dcff.yaml").reinit == "dcff_official"
    assert OmegaConf.load(CONF / "method/ucp.yaml").reinit == "ucp_resnet_official"
    assert OmegaConf.load(CONF / "experiment/ucp/cifar100_vgg19.yaml").method.reinit == "ucp_vgg_official"


def test_unknown_rule_is_refused_when_the_method_is_built():
    with pytest.raises(ValueError, match=r"method.reinit='kaiming'.*dcff_official"):
        build_method(OmegaConf.create({"name": "l1_prune", "flops_reduction": 0.3, "init": "scratch",
                                       "reinit": "kaiming", "latency": {"enabled": False}}))


def test_methods_draw_the_compact_net_by_their_rule():
    ctx = RunContext(num_classes=10, in_channels=3, image_size=32, device=torch.device("cpu"))
    method = build_method(OmegaConf.create({"name": "l1_prune", "flops_reduction": 0.3, "init": "scratch",
                                            "reinit": "ucp_vgg_official", "latency": {"enabled": False}}))
    compact = method.transform(build_model("resnet20", num_classes=10), ctx)
    norms = [m for m in compact.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(torch.all(m.weight == 0.5) for m in norms)
    assert float(compact.fc.weight.detach().std()) == pytest.approx(0.01, rel=0.3)


_NOT_DRAWN_BY_OFFICIAL_CODE = {"dcff_official": {"5.bias"}, "ucp_resnet_official": {"5.weight", "5.bias"},
                               "ucp_vgg_official": set()}


@pytest.mark.parametrize("rule", sorted(_NOT_DRAWN_BY_OFFICIAL_CODE))
def test_official_rules_match_the_authors_init_code_bit_for_bit(rule):
    """Golden: the authors' init code executed from its source on this net after torch.manual_seed(0)
    (tests/golden/reinit/official_init_draws.json says which functions and commits)."""
    from tests.golden import load
    _, golden = load("reinit", "official_init_draws")
    net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 3, bias=False),
                        nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 10))
    ours = reinitialize(net, torch.Generator().manual_seed(0), rule).state_dict()
    compared = set(golden[rule]) - _NOT_DRAWN_BY_OFFICIAL_CODE[rule]
    assert {"0.weight", "2.weight", "1.weight"} <= compared
    for key in compared:
        torch.testing.assert_close(ours[key], golden[rule][key], rtol=0, atol=0, msg=key)


def test_rules_accept_layers_without_bias():
    for rule in REINIT_RULES:
        net = reinitialize(nn.Sequential(nn.Linear(8, 4, bias=False)), torch.Generator().manual_seed(0), rule)
        assert net[0].bias is None and torch.isfinite(net[0].weight).all()


def test_zero_residual_bn_makes_every_block_of_a_compact_resnet_start_as_its_shortcut():
    """``method.zero_residual_bn``: only the BN ending each residual branch starts at weight 0 (27 on ResNet-56,
    pruned or not), so each block computes relu(shortcut(x)) at init; every other draw is the rule's own."""
    ctx = RunContext(num_classes=10, in_channels=3, image_size=32, device=torch.device("cpu"))
    cfg = {"name": "l1_prune", "flops_reduction": 0.5, "init": "scratch", "latency": {"enabled": False}}
    zeroed = build_method(OmegaConf.create({**cfg, "zero_residual_bn": True}))
    plain = build_method(OmegaConf.create(cfg))
    torch.manual_seed(0)
    a = zeroed.transform(build_model("resnet56", num_classes=10), ctx)
    torch.manual_seed(0)
    b = plain.transform(build_model("resnet56", num_classes=10), ctx)
    ends = {id(bn) for bn in residual_branch_end_norms(a)}
    assert len(ends) == 27
    for (name, m), m_plain in zip(a.named_modules(), b.modules()):
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == (0.0 if id(m) in ends else 1.0)), name
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            torch.testing.assert_close(m.weight, m_plain.weight, rtol=0, atol=0, msg=name)
    block = a.layer2[0].eval()
    x = torch.randn(2, block.conv1.in_channels, 8, 8)
    torch.testing.assert_close(block(x), torch.relu(block.shortcut(x)))


def test_zero_residual_bn_on_a_net_without_residual_blocks_says_so():
    with pytest.raises(ValueError, match="zero_residual_bn=true: CifarVGG has no residual blocks"):
        reinitialize(build_model("vgg16", num_classes=10), None, Reinit("fan_out", zero_residual_bn=True))
