"""SD-BNN (methods/sd_bnn.py): ASD and WSD on fixed tensors, placement, gradients, two-stage switch."""
import pytest
import torch
from omegaconf import OmegaConf

from methods import RunContext, build_method
from methods.base import Stage
from methods.common.binary import BinaryConv2d, binary_layers
from methods.sd_bnn import ASD, WSD
from models import build_model


def _asd():
    asd = ASD(2, reduction=2)                      # hidden = 2 // 2 = 1
    with torch.no_grad():
        asd.fc1.weight.copy_(torch.tensor([[1.0, -1.0]]))
        asd.fc2.weight.copy_(torch.tensor([[2.0], [-1.0]]))
    return asd


@pytest.mark.golden
def test_asd_forward():
    a = torch.tensor([[[[1.0, 3.0]], [[0.0, 2.0]]]])   # GAP: [2, 1]
    out = _asd()(a)
    # FC1: 2 - 1 = 1 -> ReLU 1 -> FC2: [2, -1] -> sigmoid: [0.8807971, 0.2689414]; a' = a + beta
    expected = torch.tensor([[[[1.8807971, 3.8807971]], [[0.2689414, 2.2689414]]]])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert all(p.numel() for p in _asd().parameters()) and _asd().fc1.bias is None and _asd().fc2.bias is None


@pytest.mark.golden
def test_asd_moves_the_sign_threshold_per_sample():
    asd = _asd()
    a = torch.tensor([[[[-0.5, 2.0]], [[0.0, 2.0]]],     # GAP [0.75, 1] -> FC1 -0.25 -> ReLU 0 -> beta 0.5, 0.5
                      [[[-0.5, 4.5]], [[0.0, 0.0]]]])    # GAP [2, 0] -> FC1 2 -> FC2 [4, -2] -> beta .982, .119
    beta = asd.beta(a)
    torch.testing.assert_close(beta, torch.tensor([[0.5, 0.5], [0.9820138, 0.1192029]]), rtol=0, atol=1e-6)
    # -0.5 stays negative with beta 0.5 (sign(0.0) = +1 at the threshold) and is pushed positive with 0.982
    shifted = asd(a)
    assert shifted[0, 0, 0, 0].item() == pytest.approx(0.0) and shifted[1, 0, 0, 0].item() > 0.48


@pytest.mark.golden
def test_wsd_forward_and_detached_mean():
    wsd = WSD(2)
    w = torch.tensor([[[[0.001, -0.5]]], [[[0.3, 0.1]]]], requires_grad=True)
    out = wsd(w)
    # channel 0: mu = -0.2495, shift = sigmoid(0) * 0.01 * mu = -0.0012475 -> 0.001 flips to -0.0002475
    # channel 1: mu = 0.2, shift = +0.001
    expected = torch.tensor([[[[0.001 - 0.0012475, -0.5 - 0.0012475]]], [[[0.301, 0.101]]]])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-7)
    assert out[0, 0, 0, 0] < 0 < w[0, 0, 0, 0]
    out.sum().backward()
    # mu is detached: dw'/dw is the identity
    assert torch.equal(w.grad, torch.ones_like(w))
    # d/d alpha = sigmoid'(0) * 0.01 * mu * (2 elements) = 0.25 * 0.01 * mu * 2
    torch.testing.assert_close(wsd.alpha.grad, torch.tensor([0.25 * 0.01 * -0.2495 * 2, 0.25 * 0.01 * 0.2 * 2]),
                               rtol=1e-5, atol=1e-9)


def _sd_bnn(image_size=32, **over):
    cfg = OmegaConf.load("conf/method/sd_bnn.yaml")
    cfg.ede.epochs = 4
    for k, v in over.items():
        OmegaConf.update(cfg, k, v)
    method = build_method(cfg)
    ctx = RunContext(num_classes=10, in_channels=3, image_size=image_size, device=torch.device("cpu"))
    model = method.transform(build_model("resnet20", num_classes=10, image_size=image_size), ctx)
    return method, model, ctx


def test_asd_wsd_placed_on_every_binary_conv():
    _, model, _ = _sd_bnn()
    convs = [m for m in binary_layers(model) if isinstance(m, BinaryConv2d)]
    assert len(convs) == 18
    for m in convs:
        assert isinstance(m.act_pre, ASD) and m.act_pre.fc1.in_features == m.in_channels
        assert m.act_pre.fc1.out_features == max(1, m.in_channels // 16)
        assert isinstance(m.weight_pre, WSD) and m.weight_pre.alpha.shape == (m.out_channels,)
        assert m.scaling == "none" and m.act_estimator == m.weight_estimator == "ede"
    # first conv and FC stay FP, without ASD/WSD
    assert type(model.conv1) is torch.nn.Conv2d and type(model.fc) is torch.nn.Linear


def test_alpha_and_se_receive_gradients_through_ede():
    method, model, ctx = _sd_bnn()
    method.on_stage_start(Stage("train"), model, ctx)        # EDE k, t of epoch 0
    model.train()
    out = model(torch.randn(4, 3, 32, 32))
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 2, 3])).backward()
    conv = model.layer2[0].conv1
    assert conv.weight_pre.alpha.grad.abs().sum() > 0
    assert conv.act_pre.fc1.weight.grad.abs().sum() > 0 and conv.act_pre.fc2.weight.grad.abs().sum() > 0


def test_asd_changes_sign_distribution_per_input():
    """sd_bnn.md mechanism check 1: SE outputs vary per sample and channel, and shift the +1 fraction."""
    torch.manual_seed(0)                                   # independent of the tests run before
    _, model, _ = _sd_bnn()
    conv = model.layer1[0].conv1
    seen = {}
    conv.register_forward_pre_hook(lambda m, inp: seen.setdefault("a", inp[0].detach()))
    model.eval()
    model(torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    a = seen["a"]
    beta = conv.act_pre.beta(a)
    assert beta.std(dim=0).max() > 0 and beta.std(dim=1).max() > 0
    plus_before = (a >= 0).float().mean()
    plus_after = (conv.act_pre(a) >= 0).float().mean()
    assert plus_after > plus_before


def test_two_stage_switch_w32a1_to_w1a1():
    cfg_over = {"binary.act_estimator": "approx", "binary.weight_estimator": "clipped", "asd.reduction": 8}
    method, model, ctx = _sd_bnn(**cfg_over)
    method.on_stage_start(Stage("w32a1", params={"binarize_weights": False, "wsd": False}), model, ctx)
    convs = binary_layers(model)
    assert all(m.weight_bits == 32 and m.act_bits == 1 and not m.weight_pre.enabled for m in convs)
    method.on_stage_start(Stage("w1a1", params={"binarize_weights": True, "wsd": True}), model, ctx)
    assert all(m.weight_bits == 1 and m.weight_pre.enabled for m in convs)


def test_sd_bnn_rejects_misspelt_keys():
    with pytest.raises(ValueError, match="method.wsd has unknown keys \\['factr'\\]"):
        _sd_bnn(**{"wsd.factr": 0.1})
