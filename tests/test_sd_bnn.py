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


def _sd_bnn(image_size=32, model_name="resnet20", **over):
    cfg = OmegaConf.load("conf/method/sd_bnn.yaml")
    cfg.ede.epochs = 4
    for k, v in over.items():
        OmegaConf.update(cfg, k, v)
    method = build_method(cfg)
    ctx = RunContext(num_classes=10, in_channels=3, image_size=image_size, device=torch.device("cpu"))
    model = method.transform(build_model(model_name, num_classes=10, image_size=image_size), ctx)
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
    conv = model.layer2[1].conv1
    assert conv.weight_pre.alpha.grad.abs().sum() > 0
    assert conv.act_pre.fc1.weight.grad.abs().sum() > 0 and conv.act_pre.fc2.weight.grad.abs().sum() > 0


def test_asd_changes_sign_distribution_per_input():
    """sd_bnn.md mechanism check 1: SE outputs vary per sample and channel, and shift the +1 fraction."""
    torch.manual_seed(0)                                   # independent of the tests run before
    _, model, _ = _sd_bnn()
    seen = {}
    # beta varies on layer2[1] (32 ch, 2 hidden SE units); layer1's SE has a single hidden unit (16 // 16) that a
    # ReLU can leave at 0 for every sample (beta = 0.5 exactly), as in the official code with its Kaiming init.
    # The +1 fraction shifts on layer1, where inputs in (-1, 0) are common (deeper inputs sit mostly at -1 here).
    vary, shift = model.layer2[1].conv1, model.layer1[0].conv1
    vary.register_forward_pre_hook(lambda m, inp: seen.setdefault("vary", inp[0].detach()))
    shift.register_forward_pre_hook(lambda m, inp: seen.setdefault("shift", inp[0].detach()))
    model.eval()
    model(torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    beta = vary.act_pre.beta(seen["vary"])
    assert beta.std(dim=0).max() > 0 and beta.std(dim=1).max() > 0
    a = seen["shift"]
    plus_before = (a >= 0).float().mean()
    plus_after = (shift.act_pre(a) >= 0).float().mean()
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


def test_asd_fcs_counted_as_fp_macs_per_layer():
    """The SE branch of every binary conv is FP: its two FCs appear as layers of the count, in fp_macs."""
    from core.complexity import measure
    _, model, _ = _sd_bnn()
    c = measure(model, (3, 32, 32))
    se = [l for l in c.layers if ".act_pre.fc" in l.name]
    assert len(se) == 2 * 18 and all((l.weight_bits, l.act_bits) == (32, 32) for l in se)
    # per binary conv with C inputs and h = max(1, C // 16) hidden units: C*h + h*C MACs
    ins = [m.in_channels for m in binary_layers(model)]
    assert sum(l.macs for l in se) == sum(2 * ci * max(1, ci // 16) for ci in ins) == 3_552
    _, plain, _ = _sd_bnn(**{"asd.enabled": False})
    assert c.fp_macs - measure(plain, (3, 32, 32)).fp_macs == 3_552


def test_asd_fcs_get_the_backbones_kaiming_init():
    """Official CIFAR code: _weights_init (kaiming_normal_) runs after the SE layers exist; variant init=default."""
    torch.manual_seed(0)
    _, model, _ = _sd_bnn()
    fc1 = model.layer3[1].conv1.act_pre.fc1                     # 64 -> 4: kaiming std sqrt(2/64) = 0.177
    assert fc1.weight.std().item() == pytest.approx((2 / 64) ** 0.5, rel=0.2)
    torch.manual_seed(0)
    _, default, _ = _sd_bnn(**{"asd.init": "default"})         # nn.Linear default: U(+-1/sqrt(64)), std 0.072
    assert default.layer3[1].conv1.act_pre.fc1.weight.std().item() == pytest.approx(1 / 64 ** 0.5 / 3 ** 0.5,
                                                                                     rel=0.2)


def test_imagenet_stem_is_conv_bn_maxpool():
    """Official SD-BNN birealnet.py: conv1 -> bn1 -> maxpool, no PReLU in the stem (IR²Net's stem keeps it)."""
    _, model, _ = _sd_bnn(image_size=224, model_name="resnet18")
    assert isinstance(model.act1, torch.nn.Identity)
    assert any(isinstance(m, torch.nn.PReLU) for m in model.layer1.modules())


def test_mechanism_signals_in_metrics():
    """Row extra: sign flips since the start, per-epoch flips, beta spread across samples, alpha movement."""
    torch.manual_seed(0)
    method, model, ctx = _sd_bnn()
    method.on_stage_start(Stage("train"), model, ctx)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    for _ in range(2):
        out = model(x)
        loss = method.loss(model, x, out, y, torch.nn.functional.cross_entropy(out, y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    method.on_epoch_end(model, 0, ctx)
    m = method.metrics(model)
    assert 0 < m["sign_flip_total"] < 0.5
    assert m["sign_flip_per_epoch"] == [pytest.approx(m["sign_flip_total"], abs=1e-6)]
    assert m["asd_beta_std_samples"] > 0 and 0 < m["asd_beta_mean"] < 1
    assert m["wsd_alpha_abs_max"] > 0 and "OPs = FP MACs + BOPs/64" in m["ops_convention"]
    restored = build_method(method.cfg)
    restored.load_state_dict(method.state_dict())
    assert restored.metrics(model)["sign_flip_total"] == m["sign_flip_total"]
