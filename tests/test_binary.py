"""Binary core (methods/common/binary.py, models/binary.py): estimators, layers, specs, backbones, complexity.

Golden values are hand-computed; each expected number's arithmetic is in the comment beside it.
"""
import os

import pytest
import torch
import torch.nn as nn

from core.complexity import measure
from methods.common.binary import (BinaryConv2d, BinaryLinear, BinarySpec, binarize, binary_layers, ede_schedule,
                                   set_ede)
from models import build_model

X = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.3, 1.0, 2.0])
SIGN = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0])   # 0 -> +1 (one bit per value)


def _grad(estimator, **kw):
    x = X.clone().requires_grad_(True)
    y = binarize(x, estimator, **kw)
    y.sum().backward()
    return y.detach(), x.grad


@pytest.mark.golden
def test_sign_forward_is_pm1_for_every_estimator():
    for est in ("ste", "clipped", "approx", "ede"):
        y, _ = _grad(est)
        assert torch.equal(y, SIGN), est


@pytest.mark.golden
def test_ste_gradient_is_identity():
    assert torch.equal(_grad("ste")[1], torch.ones(7))


@pytest.mark.golden
def test_clipped_ste_gradient():
    # 1 where |x| <= 1: x = -1.5, -1, -0.5, 0, 0.3, 1, 2
    assert torch.equal(_grad("clipped")[1], torch.tensor([0.0, 1, 1, 1, 1, 1, 0]))


@pytest.mark.golden
def test_approx_sign_gradient():
    # Bi-Real: 2+2x on [-1,0): x=-1 -> 0, x=-0.5 -> 1; 2-2x on [0,1): x=0 -> 2, x=0.3 -> 1.4; x=1 and |x|>1 -> 0
    torch.testing.assert_close(_grad("approx")[1], torch.tensor([0.0, 0.0, 1.0, 2.0, 1.4, 0.0, 0.0]),
                               rtol=0, atol=1e-6)


@pytest.mark.golden
def test_ede_gradient():
    # k=2, t=0.5: k*t*(1 - tanh^2(t x)) = 1 - tanh^2(x/2); tanh(0.75)=0.6351490, tanh(0.5)=0.4621172,
    # tanh(0.25)=0.2449187, tanh(0.15)=0.1488850, tanh(1)=0.7615942
    expected = torch.tensor([1 - 0.6351490 ** 2, 1 - 0.4621172 ** 2, 1 - 0.2449187 ** 2, 1.0,
                             1 - 0.1488850 ** 2, 1 - 0.4621172 ** 2, 1 - 0.7615942 ** 2])
    torch.testing.assert_close(_grad("ede", k=2.0, t=0.5)[1], expected, rtol=0, atol=1e-6)


@pytest.mark.golden
def test_ede_schedule_values():
    # t = 10^(log10 Tmin + (log10 Tmax - log10 Tmin) * e / E), k = max(1/t, 1)
    k, t = ede_schedule(0, 10, 1e-3, 1e1)
    assert t == pytest.approx(1e-3) and k == pytest.approx(1e3)
    k, t = ede_schedule(5, 10, 1e-3, 1e1)            # 10^(-3 + 4 * 0.5) = 0.1
    assert t == pytest.approx(0.1) and k == pytest.approx(10.0)
    k, t = ede_schedule(10, 10, 1e-3, 1e1)
    assert t == pytest.approx(10.0) and k == 1.0
    k, t = ede_schedule(5, 10, 1e-1, 1e1)            # VGG-small: 10^(-1 + 2 * 0.5) = 1
    assert t == pytest.approx(1.0) and k == 1.0


def test_unknown_estimator_fails_naming_choices():
    with pytest.raises(ValueError, match="ste, clipped, approx, ede"):
        binarize(X, "tanh")
    with pytest.raises(ValueError, match="method.binary.scaling"):
        BinarySpec(scaling="l2")
    with pytest.raises(ValueError, match="unknown keys \\['act_estimatr'\\]"):
        BinarySpec.from_cfg({"act_estimatr": "ste"})


def _conv(**kw):
    conv = BinaryConv2d(1, 1, 2, bias=False, **kw)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[0.3, -0.4], [-0.2, 0.1]]]]))
    return conv


A = torch.tensor([[[[0.5, -0.2], [-0.7, 0.1]]]])     # sign: [[1, -1], [-1, 1]]


@pytest.mark.golden
def test_binary_conv_forward_and_gradient():
    conv = _conv(act_estimator="ste", weight_estimator="ste")
    out = conv(A)
    # sign(w) = [[1,-1],[-1,1]] matches sign(a) elementwise: 1+1+1+1 = 4
    assert out.item() == 4.0
    out.sum().backward()
    # d out / d w = sign(a) through the identity STE
    assert torch.equal(conv.weight.grad, torch.tensor([[[[1.0, -1.0], [-1.0, 1.0]]]]))
    assert (conv.weight_bits, conv.act_bits) == (1, 1)


@pytest.mark.golden
def test_binary_conv_scalings():
    # XNOR alpha = mean|w| = (0.3+0.4+0.2+0.1)/4 = 0.25 -> 4 * 0.25 = 1
    assert _conv(scaling="mean_abs")(A).item() == pytest.approx(1.0)
    # Libra-PB: w - mean(-0.05) = [.35,-.35,-.15,.15], / std (0.3109) -> mean|w_std| = 0.804 -> 2^round(-0.31) = 1
    assert _conv(standardize="libra", scaling="pow2")(A).item() == pytest.approx(4.0)


@pytest.mark.golden
def test_w32a1_uses_real_weights():
    conv = _conv(binarize_weights=False)
    # real w against sign(a): 0.3*1 + -0.4*-1 + -0.2*-1 + 0.1*1 = 1.0
    assert conv(A).item() == pytest.approx(1.0)
    assert (conv.weight_bits, conv.act_bits) == (32, 1)
    conv.binarize_weights = True
    assert conv(A).item() == 4.0 and conv.weight_bits == 1
    # the stage's precision survives a checkpoint
    fresh = _conv()
    conv.binarize_weights = False
    fresh.load_state_dict(conv.state_dict())
    assert fresh.weight_bits == 32


def test_binary_linear():
    lin = BinaryLinear(2, 1, bias=True)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.2, -3.0]]))
        lin.bias.fill_(0.5)
    # sign(x)=[1,-1], sign(w)=[1,-1] -> 2, + bias 0.5
    assert lin(torch.tensor([[0.1, -0.1]])).item() == pytest.approx(2.5)


def test_set_ede_reaches_every_binary_layer():
    model = build_model("bireal_resnet20", num_classes=10, image_size=32, spec=BinarySpec("ede", "ede"))
    set_ede(model, 3.0, 0.25)
    layers = binary_layers(model)
    assert len(layers) == 18
    assert all(float(m.ede_k) == 3.0 and float(m.ede_t) == 0.25 for m in layers)


def test_spec_roles_keep_first_last_downsample_fp():
    model = build_model("bireal_resnet18", num_classes=10, image_size=32)
    assert type(model.conv1) is nn.Conv2d and type(model.fc) is nn.Linear
    assert type(model.layer2[0].shortcut[0]) is nn.Conv2d
    assert len(binary_layers(model)) == 16
    all_binary = build_model("bireal_resnet18", num_classes=10, image_size=32,
                             spec=BinarySpec(fp_first=False, fp_last=False, fp_downsample=False))
    assert len(binary_layers(all_binary)) == 16 + 2 + 3
    fp = build_model("bireal_resnet18", num_classes=10, image_size=32, spec=BinarySpec(enabled=False))
    assert binary_layers(fp) == []


@pytest.mark.golden
def test_bireal_resnet18_imagenet_complexity_hand_computed():
    """Bi-Real ResNet-18 at 224 px, counted by core/complexity.py from the layers' declared bits."""
    model = build_model("bireal_resnet18", num_classes=1000, image_size=224)
    c = measure(model, (3, 224, 224))
    # binary 3x3 convs (16): stage1 4 x 64*64*9*56*56 = 4 x 115,605,504 = 462,422,016;
    # stages 2-4 each: (C/2)*C*9*H*W + 3*C*C*9*H*W = 57,802,752 + 346,816,512 = 404,619,264
    bops = 462_422_016 + 3 * 404_619_264
    assert c.bops == bops == 1_676_279_808
    # FP: stem 3*64*49*112*112 = 118,013,952; 1x1 downsample 3 x 6,422,528 = 19,267,584; FC 512*1000 = 512,000
    fp_macs = 118_013_952 + 19_267_584 + 512_000
    assert c.fp_macs == fp_macs == 137_793_536
    assert c.flops == 2 * fp_macs
    # the binary literature's OPs = FP MACs + BOPs/64 (Bi-Real Net's table: BOPs 1.68e9, FLOPs 1.39e8 (MACs),
    # OPs 1.63e8); each within 1 % of the published figure
    assert c.ops == fp_macs + bops / 64 == 163_985_408
    for ours, published in ((c.bops, 1.68e9), (c.fp_macs, 1.39e8), (c.ops, 1.63e8)):
        assert abs(ours / published - 1) < 0.01, (ours, published)
    # size: binary weights 147,456 + 516,096 + 2,064,384 + 8,257,536 = 10,985,472 at 1 bit, the rest at 32 bits
    binary_weights = 10_985_472
    assert sum(m.weight.numel() for m in binary_layers(model)) == binary_weights
    assert c.size_bits == binary_weights + 32 * (c.params - binary_weights)


@pytest.mark.golden
def test_bireal_resnet20_complexity_hand_computed():
    model = build_model("bireal_resnet20", num_classes=10, image_size=32)
    c = measure(model, (3, 32, 32))
    # binary: stage1 6 x 16*16*9*32*32 = 6 x 2,359,296; stage2 16*32*9*256 + 5 x 32*32*9*256 = 1,179,648 + 5 x 2,359,296;
    # stage3 32*64*9*64 + 5 x 64*64*9*64 = 1,179,648 + 5 x 2,359,296
    assert c.bops == 6 * 2_359_296 + 2 * (1_179_648 + 5 * 2_359_296) == 40_108_032
    # FP: stem 3*16*9*1024 = 442,368; FC 64*10 = 640
    assert c.fp_macs == 442_368 + 640


def test_backbone_shapes_and_fusion_channels():
    cases = {("bireal_resnet20", 28, 1): 128, ("bireal_resnet18", 32, 3): 1024, ("binary_vgg_small", 32, 3): 640}
    for (name, size, cin), channels in cases.items():
        model = build_model(name, num_classes=10, in_channels=cin, image_size=size)
        out = model(torch.randn(2, cin, size, size))
        assert out.shape == (2, 10)
        assert model.fusion_channels() == channels
        assert model.last_features is not None


def test_binary_counterpart_of_registered_backbones():
    from models.binary import binary_counterpart_name
    expect = {"resnet20": "bireal_resnet20", "resnet56": "bireal_resnet56", "resnet18": "bireal_resnet18",
              "vgg_small": "binary_vgg_small"}
    for fp_name, bin_name in expect.items():
        assert binary_counterpart_name(build_model(fp_name, num_classes=10, image_size=32)) == bin_name
    assert binary_counterpart_name(build_model("resnet18", num_classes=1000, image_size=224)) == "bireal_resnet18"
    with pytest.raises(ValueError, match="no binary counterpart for backbone"):
        binary_counterpart_name(build_model("lenet5", num_classes=10, in_channels=1, image_size=28))


def test_decay_conv_only_param_groups():
    """trainer.optimizer.decay_conv_only: the official binary ImageNet trainers' rule (conv weights decay only)."""
    from engine.optim import param_groups
    model = build_model("bireal_resnet18", num_classes=10, image_size=32)
    nodecay, decay = param_groups(model, 1e-5, False, decay_conv_only=True)
    named = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 1e-5 and nodecay["weight_decay"] == 0.0
    assert all(p.ndim == 4 for p in decay["params"])
    assert {named[id(p)] for p in nodecay["params"]} >= {"fc.weight", "fc.bias", "bn1.weight", "head_bn.weight"}
    assert len(decay["params"]) + len(nodecay["params"]) == len(list(model.parameters()))


def test_models_never_import_methods():
    """The binary layers are model building blocks (models/binary_layers.py): building a binary backbone loads no
    methods/ module (before, models/binary.py imported methods/common/binary.py, which imported models/binary.py)."""
    import subprocess
    import sys
    code = ("import sys, models; models.build_model('bireal_resnet20', num_classes=10); "
            "models.build_model('bireal_resnet18', num_classes=10, image_size=64); "
            "sys.exit(any(k.split('.')[0] == 'methods' for k in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__))).returncode == 0
