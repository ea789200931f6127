"""XGrad-CAM, Grad-CAM, Grad-CAM++: golden values on a hand-built network, the axioms where they must
hold, agreement with pytorch-grad-cam, and the shared hooks (methods/common/cam.py)."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from methods.common.cam import (LayerTaps, auc, channel_mask, default_layer, deletion_insertion, downstream_bias_term,
                                get_module,
                                logits_with_each_channel_zeroed, reuse_upstream, scores_and_taps, upsample_maps)
from methods.xgradcam import (cam_map, cam_scores, cam_weights, channel_drops, conservation_error, gradcam_weights,
                              gradcampp_weights, linear_part, sensitivity_error, summarize, xgradcam_weights)
from models import build_model

# Hand-built network: the input IS the feature map A (2 channels, 2x2, non-negative); layer "feat"
# (a ReLU, identity on A) is the target; head = flatten -> linear without bias.
A0 = [[1.0, 2.0], [3.0, 4.0]]
A1 = [[0.0, 1.0], [1.0, 0.0]]
W_CLASS0 = [[[1.0, 0.0], [0.0, 2.0]], [[3.0, 1.0], [1.0, -1.0]]]    # class-0 weights per channel


def hand_net(bias: bool = False) -> nn.Module:
    net = nn.Sequential()
    net.add_module("feat", nn.ReLU())
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(8, 2, bias=bias))
    with torch.no_grad():
        net.fc.weight[0] = torch.tensor(W_CLASS0).flatten()
        net.fc.weight[1] = 0.5
        if bias:
            net.fc.bias.copy_(torch.tensor([0.7, 0.0]))
    return net.eval()


def hand_taps(bias: bool = False):
    net = hand_net(bias)
    x = torch.tensor([[A0, A1]])
    logits, cls, taps = scores_and_taps(net, x, ["feat"], target=torch.tensor([0]))
    return net, x, logits, cls, taps.acts["feat"], taps.grads["feat"]


@pytest.mark.golden
def test_weights_on_hand_built_network_equal_closed_form():
    _, _, logits, _, acts, grads = hand_taps()
    # dS/dA = W (bias-free linear head). sum(A0*W0) = 1 + 8 = 9, sum A0 = 10; sum(A1*W1) = 1 + 1 = 2, sum A1 = 2
    assert logits[0, 0].item() == pytest.approx(11.0, abs=1e-6)
    torch.testing.assert_close(grads[0], torch.tensor(W_CLASS0))
    torch.testing.assert_close(xgradcam_weights(acts, grads, eps=1e-6)[0],
                               torch.tensor([9 / (10 + 1e-6), 2 / (2 + 1e-6)]), rtol=0, atol=1e-7)
    torch.testing.assert_close(gradcam_weights(acts, grads)[0], torch.tensor([0.75, 1.0]))
    # Grad-CAM++: a = g^2 / (2 g^2 + sum(A) g^3 + 1e-6) where g != 0; alpha = sum relu(g) a.
    # ch0: g=1 -> 1/12, g=2 -> 4/88; alpha = 1/12 + 2*4/88. ch1: g=3 -> 9/72, g=1 -> 1/4 (twice), g=-1 -> relu 0
    torch.testing.assert_close(gradcampp_weights(acts, grads)[0],
                               torch.tensor([1 / 12 + 8 / 88, 3 * 9 / 72 + 0.25 + 0.25]), rtol=1e-5, atol=1e-6)


@pytest.mark.golden
def test_axioms_on_hand_built_network():
    net, x, logits, cls, acts, grads = hand_taps()
    score = logits[:, 0]
    drops = channel_drops(net, x, "feat", cls, 2)
    torch.testing.assert_close(drops[0], torch.tensor([9.0, 2.0]))      # S(A) - S(A without A_k)
    xg, gc = xgradcam_weights(acts, grads), gradcam_weights(acts, grads)
    # XGrad-CAM: sum M = 0.9*10 + 1*2 = 11 = S; each channel's share equals its drop
    assert conservation_error(score, cam_map(xg, acts)).item() < 1e-6
    assert sensitivity_error(score, xg, acts, drops).item() < 1e-6
    # Grad-CAM: sum M = 0.75*10 + 2 = 9.5 -> |11 - 9.5| / 11; sensitivity mean(|9 - 7.5|, 0) / 11
    assert conservation_error(score, cam_map(gc, acts)).item() == pytest.approx(1.5 / 11, rel=1e-6)
    assert sensitivity_error(score, gc, acts, drops).item() == pytest.approx(0.75 / 11, rel=1e-6)


@pytest.mark.golden
def test_bias_term_is_the_proof_verify_identity():
    """S_c = sum(dS/dA * A) + sum over downstream biases of dS/db * b (official Proof_verify.py)."""
    net, x, logits, _, acts, grads = hand_taps(bias=True)
    score = logits[:, 0]
    assert (score - linear_part(acts, grads)).item() == pytest.approx(0.7, abs=1e-6)
    xg = xgradcam_weights(acts, grads)
    assert conservation_error(score, cam_map(xg, acts)).item() == pytest.approx(0.7 / 11.7, rel=1e-5)
    assert conservation_error(score, cam_map(xg, acts), reference=linear_part(acts, grads)).item() < 1e-6


def _flatten_head(bias: bool) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(8 * 5 * 5, 16, bias=bias), nn.ReLU(),
                         nn.Linear(16, 4, bias=bias)).double().eval()


@pytest.mark.golden
def test_conservation_holds_for_xgradcam_on_bias_free_piecewise_linear_head():
    net = _flatten_head(bias=False)
    x = torch.rand(6, 8, 5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    logits, cls, taps = scores_and_taps(net, x, ["0"])
    score, acts, grads = logits.gather(1, cls[:, None])[:, 0], taps.acts["0"], taps.grads["0"]
    xg_err = conservation_error(score, cam_map(xgradcam_weights(acts, grads, eps=0.0), acts))
    gc_err = conservation_error(score, cam_map(gradcam_weights(acts, grads), acts))
    assert xg_err.max().item() < 1e-10        # float64: exact up to rounding
    assert gc_err.mean().item() > 1e-3          # Grad-CAM does not conserve the score here
    # with biases, XGrad-CAM conserves exactly the linear part (score minus the bias term)
    net_b = _flatten_head(bias=True)
    logits, cls, taps = scores_and_taps(net_b, x, ["0"])
    score, acts, grads = logits.gather(1, cls[:, None])[:, 0], taps.acts["0"], taps.grads["0"]
    err = conservation_error(score, cam_map(xgradcam_weights(acts, grads, eps=0.0), acts), linear_part(acts, grads))
    assert err.max().item() < 1e-10
    assert (score - linear_part(acts, grads)).abs().max().item() > 1e-3   # the bias term is really there


def _conv_head(nonlinearity: nn.Module) -> nn.Module:
    """layer "0" (ReLU on the input) -> conv with bias -> eval BN with non-trivial statistics -> ``nonlinearity``
    -> GAP -> linear with bias."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6), nonlinearity,
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)).double()
    with torch.no_grad():
        net[2].running_mean.uniform_(-0.5, 0.5)
        net[2].running_var.uniform_(0.5, 2.0)
        net[2].weight.uniform_(0.5, 1.5)
        net[2].bias.uniform_(-0.5, 0.5)
    return net.eval()


def _xgradcam_linear_conservation(net: nn.Module):
    x = torch.randn(6, 8, 5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    logits, cls, taps = scores_and_taps(net, x, ["0"])
    score, acts, grads = logits.gather(1, cls[:, None])[:, 0], taps.acts["0"], taps.grads["0"]
    bias_term = downstream_bias_term(net, x, "0", cls)
    cam = cam_map(xgradcam_weights(acts, grads, eps=0.0), acts)
    return bias_term, conservation_error(score, cam, reference=score - bias_term)


@pytest.mark.golden
def test_downstream_bias_term_is_measured_not_defined():
    """The bias term comes from the downstream biases and BN shifts: on a piecewise-linear head it equals
    S - Σ dS/dA·A (so XGrad-CAM conserves the linear part); with a smooth nonlinearity downstream it does not,
    and the conservation test fails, as it must."""
    bias_term, err = _xgradcam_linear_conservation(_conv_head(nn.ReLU()))
    assert bias_term.abs().min().item() > 1e-3          # a real, nonzero term
    assert err.max().item() < 1e-10
    _, err_smooth = _xgradcam_linear_conservation(_conv_head(nn.Softplus()))
    assert err_smooth.mean().item() > 1e-2


@pytest.mark.golden
def test_gap_linear_head_makes_xgradcam_equal_gradcam():
    torch.manual_seed(0)
    net = build_model("resnet20", num_classes=10).eval()
    x = torch.randn(3, 3, 32, 32)
    _, _, taps = scores_and_taps(net, x, ["layer3"])
    acts, grads = taps.acts["layer3"], taps.grads["layer3"]
    torch.testing.assert_close(xgradcam_weights(acts, grads, eps=0.0), gradcam_weights(acts, grads),
                               rtol=1e-4, atol=1e-7)


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 6 * 6, 20), nn.ReLU(), nn.Linear(20, 5)).eval()


@pytest.mark.parametrize("method", ["xgradcam", "gradcam", "gradcampp"])
@pytest.mark.parametrize("layer", ["4", "1"])
def test_maps_match_pytorch_grad_cam(method, layer):
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, XGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    lib_cls = {"xgradcam": XGradCAM, "gradcam": GradCAM, "gradcampp": GradCAMPlusPlus}[method]
    net = _small_cnn()
    x = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    _, cls, taps = scores_and_taps(net, x, [layer])
    acts, grads = taps.acts[layer], taps.grads[layer]
    ours = upsample_maps(cam_map(cam_weights(method, acts, grads, eps=1e-7), acts), (12, 12))
    with lib_cls(model=net, target_layers=[get_module(net, layer)]) as cam:
        lib = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in cls])
        lib_w = cam.get_cam_weights(x, None, None, acts.numpy(), grads.numpy())
        lib_raw = cam.get_cam_image(x, None, None, acts.numpy(), grads.numpy())
    ours_w = cam_weights(method, acts, grads, eps=1e-7)
    np.testing.assert_allclose(ours_w.numpy(), lib_w, rtol=1e-4, atol=1e-7)
    raw = cam_map(ours_w, acts).numpy()
    np.testing.assert_allclose(raw, lib_raw, rtol=1e-4, atol=1e-5 * np.abs(lib_raw).max())
    # displayed maps: same up to the library's two (max + 1e-7) divisions, relative to each map's peak
    for i in range(x.shape[0]):
        peak = max(np.maximum(raw[i], 0).max() - np.maximum(raw[i], 0).min(), 1e-12)
        np.testing.assert_allclose(ours[i].numpy(), lib[i], atol=1e-5 + 3e-7 / peak)


def test_layer_lookup_and_defaults():
    assert default_layer(build_model("resnet20", num_classes=10), torch.randn(1, 3, 32, 32)) == "layer3"
    lenet = build_model("lenet5", num_classes=10, in_channels=1, image_size=28)
    assert default_layer(lenet, torch.randn(1, 1, 28, 28)) == "pool2"
    with pytest.raises(KeyError, match="layer3"):
        get_module(build_model("resnet20", num_classes=10), "layer33")


def test_taps_record_output_and_gradient():
    net = _small_cnn()
    x = torch.randn(2, 3, 12, 12)
    with LayerTaps(net, ["3"]) as taps:
        out = net(x)
        out[:, 1].sum().backward()
    manual = net[3](net[2](net[1](net[0](x))))
    torch.testing.assert_close(taps.acts["3"], manual.detach())
    assert taps.grads["3"].shape == manual.shape and taps.grads["3"].abs().sum() > 0
    assert not net[3]._forward_hooks                      # hooks removed on exit


def test_channel_zeroing_matches_manual_and_restores_model():
    torch.manual_seed(0)
    net = build_model("resnet20", num_classes=10).eval()
    for m in net.modules():                               # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn(3, 3, 32, 32)
    for layer, k in (("layer3", 64), ("layer2", 32)):
        fast = logits_with_each_channel_zeroed(net, x, layer, k)
        for ch in (0, 5, k - 1):
            mask = torch.ones(k)
            mask[ch] = 0
            with channel_mask(net, layer, mask), torch.no_grad(), LayerTaps(net, [layer], grads=False) as taps:
                slow = net(x)
            assert taps.acts[layer][:, ch].abs().max() == 0              # the unit really is zero (BN net)
            torch.testing.assert_close(fast[:, ch], slow, rtol=1e-4, atol=1e-5)
    assert all("forward" not in m.__dict__ for m in net.modules())    # shortcuts removed
    with reuse_upstream(net, "layer3", x) as plain:
        torch.testing.assert_close(plain, net(x).detach())


def test_reuse_upstream_ablating_nothing_is_bit_identical():
    torch.manual_seed(0)
    net = build_model("resnet20", num_classes=10).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        plain = net(x)
        with reuse_upstream(net, "layer3", x), channel_mask(net, "layer3", torch.ones(64)):
            again = net(x)
    assert torch.equal(plain, again)


@pytest.mark.golden
def test_deletion_insertion_rank_the_decisive_pixel():
    class OnePixel(nn.Module):               # logit of class 0 = 10 * pixel (0, 0, 0); class 1 = 0
        def forward(self, x):
            v = 10 * x[:, 0, 0, 0]
            return torch.stack([v, torch.zeros_like(v)], 1)

    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 0] = 1.0                       # blurred canvas dims it, deletion sets it to 0
    good = torch.zeros(1, 4, 4)
    good[0, 0, 0] = 1.0
    bad = 1.0 - good
    cls = torch.tensor([0])
    g = deletion_insertion(OnePixel(), x, good, cls, steps=4)
    b = deletion_insertion(OnePixel(), x, bad, cls, steps=4)
    p1 = 1 / (1 + np.exp(-10.0))
    # good order deletes the pixel at the first step: curve p1, .5, .5, .5, .5
    expected = torch.tensor([p1, .5, .5, .5, .5], dtype=torch.float32)
    torch.testing.assert_close(g["deletion_curve"][0], expected, rtol=0, atol=1e-6)
    assert g["deletion_auc"].item() == pytest.approx((p1 + .5) / 8 + 3 * .5 / 4, abs=1e-6)
    assert g["deletion_auc"] < b["deletion_auc"] and g["insertion_auc"] > b["insertion_auc"]
    assert auc(torch.tensor([[0.0, 1.0]])).item() == pytest.approx(0.5)


@pytest.mark.golden
def test_cam_scores_on_hand_network_report_the_axioms():
    net = hand_net()
    x = torch.tensor([[A0, A1]]).repeat(2, 1, 1, 1)
    y = torch.tensor([0, 0])
    res = cam_scores(net, x, y, ["feat"], ["xgradcam", "gradcam"], target="label", sensitivity_images=2,
                     faithfulness_images=0, keep_maps=1)
    table = summarize(res["per_image"])
    assert table[("xgradcam", "feat")]["conservation_error"] < 1e-6
    assert table[("xgradcam", "feat")]["sensitivity_error"] < 1e-6
    assert table[("gradcam", "feat")]["conservation_error"] == pytest.approx(1.5 / 11, rel=1e-5)
    assert table[("gradcam", "feat")]["sensitivity_error_n"] == 2
    assert res["maps"][("xgradcam", "feat")].shape == (1, 2, 2)


def test_bad_method_and_target_fail_naming_the_key():
    net = hand_net()
    x = torch.tensor([[A0, A1]])
    with pytest.raises(ValueError, match="method.methods"):
        cam_scores(net, x, torch.tensor([0]), ["feat"], ["scorecam"])
    with pytest.raises(ValueError, match="method.target"):
        cam_scores(net, x, torch.tensor([0]), ["feat"], ["xgradcam"], target="gt")


def test_training_an_analysis_method_fails_with_a_pointer(compose):
    from engine.runner import run

    cfg = compose(["method=xgradcam", "model=resnet20", "data=synthetic", "trainer.max_steps=1"])
    with pytest.raises(ValueError, match="scripts/analyze.py"):
        run(cfg)
