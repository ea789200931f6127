"""PA (methods/pa.py) and the ABC-Net-style multi-base baseline (methods/abc_net.py): hand goldens of the
segmentation, coefficients and staircase backward, the bitwise-parallel form against the float form, the
multi-base complexity count, and a train.py smoke run. No official code exists for either paper: every golden below
is worked out by hand (in the comments) from the equations in the module docstrings, which are themselves a
HYPOTHESIS for PA (../shared/papers/pa.md: only the abstract is verified)."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from methods.abc_net import abc_act_bases, abc_weight_fit, abc_weight_shifts
from methods.common.multibase import (MultiBaseConv2d, MultiBaseLinear, multibase_layers, stair, stair_bases,
                                      stair_ste)
from methods.pa import (PAWeightBases, pa_act_bases, pa_act_thresholds, pa_coefficients,
                        pa_levels, pa_piece_means, pa_weight_fit, pa_weight_thresholds)

F64 = torch.float64

# One filter of n = 7 values (shuffled). torch.quantile interpolates at position q (n - 1) = 6q of the sorted
# values s = [-0.9, -0.5, -0.2, 0.1, 0.3, 0.6, 1.0]; M = 2: q = 1/3, 2/3 -> positions 2 and 4 -> u = [-0.2, 0.3]
# (data points: sign(0) = +1 puts -0.2 in piece 1 and 0.3 in piece 2).
W7 = torch.tensor([[0.1, -0.9, 0.6, -0.2, 1.0, -0.5, 0.3]], dtype=F64)
U7 = [-0.2, 0.3]
# pieces: {-0.9, -0.5} mu_0 = -7/10; {-0.2, 0.1} mu_1 = -1/20; {0.3, 0.6, 1.0} mu_2 = 19/30
MU7 = [-7 / 10, -1 / 20, 19 / 30]
# alpha_m = (mu_m - mu_{m-1})/2: alpha_1 = (-1/20 + 7/10)/2 = 13/40, alpha_2 = (19/30 + 1/20)/2 = 41/120
ALPHA7 = [13 / 40, 41 / 120]
# levels L_k = mu_k - (mu_0 + mu_2)/2 = mu_k + 1/30: [-2/3, -1/60, 2/3]; check -a1 - a2 = -80/120 = -2/3,
# a1 - a2 = -1/120 * 2 = -1/60, a1 + a2 = 2/3
LEVELS7 = [-2 / 3, -1 / 60, 2 / 3]
# W^ entry by entry (piece of each value of W7): [L1, L0, L2, L1, L2, L0, L2]
WHAT7 = [-1 / 60, -2 / 3, 2 / 3, -1 / 60, 2 / 3, -2 / 3, 2 / 3]


@pytest.mark.golden
def test_pa_weight_segmentation_and_piece_coefficients_hand_golden():
    u = pa_weight_thresholds(W7, 2, "quantile")
    torch.testing.assert_close(u[:, 0], torch.tensor(U7, dtype=F64), rtol=0, atol=1e-15)
    mu = pa_piece_means(W7, u)
    torch.testing.assert_close(mu[:, 0], torch.tensor(MU7, dtype=F64), rtol=0, atol=1e-15)
    alpha = pa_coefficients(mu)
    torch.testing.assert_close(alpha[:, 0], torch.tensor(ALPHA7, dtype=F64), rtol=0, atol=1e-15)
    torch.testing.assert_close(pa_levels(mu)[:, 0], torch.tensor(LEVELS7, dtype=F64), rtol=0, atol=1e-15)
    u2, a2 = pa_weight_fit(W7, 2)
    torch.testing.assert_close(stair(W7, u2, a2), torch.tensor([WHAT7], dtype=F64), rtol=0, atol=1e-15)


@pytest.mark.golden
def test_pa_uniform_segments_and_empty_piece_hand_golden():
    # uniform, M = 3 on [min, max] = [-0.9, 1.0]: u = -0.9 + 1.9 m/4 = [-0.425, 0.05, 0.525]
    u = pa_weight_thresholds(W7, 3, "uniform")
    torch.testing.assert_close(u[:, 0], torch.tensor([-0.425, 0.05, 0.525], dtype=F64), rtol=0, atol=1e-15)
    # pieces: {-0.9, -0.5} -0.7; {-0.2} -0.2; {0.1, 0.3} 0.2; {0.6, 1.0} 0.8 -> alpha = [0.25, 0.2, 0.3]
    _, alpha = pa_weight_fit(W7, 3, "uniform")
    torch.testing.assert_close(alpha[:, 0], torch.tensor([0.25, 0.2, 0.3], dtype=F64), rtol=0, atol=1e-15)
    # a filter with fewer values than pieces: w = [-1, 1], M = 3, uniform: u = [-0.5, 0, 0.5]; piece 1 [-0.5, 0)
    # and piece 2 [0, 0.5) are empty -> their mid-points -0.25, 0.25; mu = [-1, -0.25, 0.25, 1]
    mu = pa_piece_means(torch.tensor([[-1.0, 1.0]], dtype=F64), torch.tensor([[-0.5], [0.0], [0.5]], dtype=F64))
    torch.testing.assert_close(mu[:, 0], torch.tensor([-1, -0.25, 0.25, 1], dtype=F64))


@pytest.mark.golden
def test_pa_lstsq_coefficients_match_numpy():
    g = np.random.default_rng(0)
    w = torch.from_numpy(g.normal(size=(4, 27)))
    u, alpha = pa_weight_fit(w, 3, coefficients="lstsq")
    for f in range(4):      # independent construction: numpy's lstsq on the +-1 design matrix
        design = np.stack([np.where(w[f].numpy() >= u[m, f].item(), 1.0, -1.0) for m in range(3)], 1)
        want = np.linalg.lstsq(design, w[f].numpy(), rcond=None)[0]
        np.testing.assert_allclose(alpha[:, f].numpy(), want, rtol=1e-10, atol=1e-12)
    # the least-squares refit is never worse than the piece means on the same thresholds
    _, pm = pa_weight_fit(w, 3)
    e_ls = (w - stair(w, u, alpha)).norm(dim=1)
    e_pm = (w - stair(w, u, pm)).norm(dim=1)
    assert bool((e_ls <= e_pm + 1e-12).all())


@pytest.mark.golden
def test_abc_weight_bases_hand_golden():
    # w = [-0.3, -0.1, 0.1, 0.3]: mean 0, std (Bessel) = 0.1 sqrt(20/3); M = 2: u = [-1, 1] -> t = [+std, -std]
    # B_1 = sign(w - std) = [-1, -1, -1, 1], B_2 = sign(w + std) = [-1, 1, 1, 1]; B1.B1 = B2.B2 = 4, B1.B2 = 0,
    # B1.w = B2.w = 0.6 -> alpha = [0.15, 0.15]; W^ = [-0.3, 0, 0, 0.3]
    w = torch.tensor([[-0.3, -0.1, 0.1, 0.3]], dtype=F64)
    assert abc_weight_shifts(3).tolist() == [-1.0, 0.0, 1.0] and abc_weight_shifts(1).tolist() == [0.0]
    t, alpha = abc_weight_fit(w, 2)
    std = 0.1 * (20 / 3) ** 0.5
    torch.testing.assert_close(t[:, 0], torch.tensor([std, -std], dtype=F64))
    torch.testing.assert_close(alpha[:, 0], torch.tensor([0.15, 0.15], dtype=F64))
    torch.testing.assert_close(stair(w, t, alpha), torch.tensor([[-0.3, 0, 0, 0.3]], dtype=F64), rtol=0, atol=1e-15)


@pytest.mark.golden
def test_weight_backward_rules():
    # PA: dW^/dW = 1 (identity); ABC-Net: dW^/dW = sum_m alpha_m (= 0.3 for the golden above), alpha detached
    w = torch.tensor([[-0.3, -0.1, 0.1, 0.3]], dtype=F64, requires_grad=True)
    g = torch.tensor([[1.0, 2.0, -1.0, 0.5]], dtype=F64)
    PAWeightBases(2)(w).backward(g)
    assert torch.equal(w.grad, g)
    from methods.abc_net import ABCWeightBases
    w.grad = None
    ABCWeightBases(2)(w).backward(g)
    torch.testing.assert_close(w.grad, 0.3 * g)


@pytest.mark.golden
def test_pa_activation_staircase_and_piece_backward_hand_golden():
    # N = 3, r = 1: width w = 2/4 = 0.5, v = [-0.5, 0, 0.5], beta = w/2 = 0.25
    v, width = pa_act_thresholds(3)
    assert v.tolist() == [-0.5, 0.0, 0.5] and width == 0.5
    acts = pa_act_bases(3).double()
    x = torch.tensor([-0.9, -0.3, 0.2, 0.7, -0.75], dtype=F64, requires_grad=True)
    out = acts(x)
    # levels: -0.9: (-,-,-) -0.75; -0.3: (+,-,-) -0.25; 0.2: (+,+,-) 0.25; 0.7: 0.75; -0.75: (-,-,-) -0.75
    assert out.tolist() == [-0.75, -0.25, 0.25, 0.75, -0.75]
    out.sum().backward()
    # backward: sum_n beta_n (2/w) 1[|x - v_n| <= w/2] = 1[some |x - v_n| <= 0.25]:
    # -0.9: distances 0.4, 0.9, 1.4 -> 0; -0.3: 0.2 -> 1; 0.2: 0.2 -> 1; 0.7: 0.2 -> 1; -0.75: 0.25 (edge) -> 1
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]
    # d/dbeta_n = sum sign(x - v_n): v=-0.5: (-,+,+,+,-) = 1; v=0: (-,-,+,+,-) = -1; v=0.5: (-,-,-,+,-) = -3
    assert acts.coeffs.grad.tolist() == [1.0, -1.0, -3.0]
    assert not isinstance(acts.thresholds, nn.Parameter)           # PA's pieces are fixed


@pytest.mark.golden
def test_abc_activation_shift_and_box_backward_hand_golden():
    # N = 1: t = 0, beta = 0.5, box 1[|x - t| <= 1/2] of height 1 (ABC-Net's 1[0 <= x + v <= 1], t = 0.5 - v)
    acts = abc_act_bases(1).double()
    x = torch.tensor([-0.7, -0.2, 0.4, 0.6], dtype=F64, requires_grad=True)
    out = acts(x)
    assert out.tolist() == [-0.5, -0.5, 0.5, 0.5]
    out.sum().backward()
    assert x.grad.tolist() == [0.0, 0.5, 0.5, 0.0]                  # beta * box
    assert acts.thresholds.grad.tolist() == [-1.0]                  # -sum beta * box
    assert acts.coeffs.grad.tolist() == [0.0]                       # sum sign(x - t)


@pytest.mark.golden
def test_per_channel_staircase_gradients_reduce_to_their_shape():
    x = torch.randn(3, 5, dtype=F64)
    t = torch.randn(2, 3, dtype=F64, requires_grad=True)
    c = torch.rand(2, 3, dtype=F64, requires_grad=True)
    g = torch.randn(3, 5, dtype=F64)
    stair_ste(x, t, c, "box", torch.full((2, 3), 0.7, dtype=F64), 1.0).backward(g)
    bases = stair_bases(x, t.detach())
    torch.testing.assert_close(c.grad, (bases * g).sum(-1))
    box = ((x[None] - t.detach()[:, :, None]).abs() <= 0.35).double()
    torch.testing.assert_close(t.grad, -(c.detach()[:, :, None] * box * g).sum(-1))


def _dyadic_pa_conv(packed_ok: bool):
    """A PA conv whose every number is dyadic: 2 x 2 x 2x2 filters (n = 8 distinct multiples of 1/16, so the
    interpolated quartiles sit between values, every piece holds 2 and the piece means, alpha and u are dyadic),
    beta = (1/4, 1/2, 1/8), inputs multiples of 1/8 (some exactly on the thresholds: the tie rule must agree)."""
    g = torch.Generator().manual_seed(3)
    conv = MultiBaseConv2d(2, 2, 2, stride=1, padding=1, weight_bases=PAWeightBases(3),
                           act_bases=pa_act_bases(3, act_coeffs="fixed")).double()
    with torch.no_grad():
        for o in range(2):
            conv.weight[o] = ((torch.randperm(16, generator=g)[:8] - 8).double() / 16).reshape(2, 2, 2)
        conv.act_bases.coeffs.copy_(torch.tensor([0.25, 0.5, 0.125]))   # distinct (dyadic) beta_n
    x = (torch.randint(-9, 10, (2, 2, 5, 5), generator=g).double() / 8)
    return conv, x


@pytest.mark.golden
def test_bitwise_parallel_form_equals_float_form_exactly():
    conv, x = _dyadic_pa_conv(False)
    float_form = conv(x)
    bitwise = conv.bitwise_forward(x)
    assert torch.equal(float_form, bitwise)                         # M*N = 9 +-1 convolutions, scaled and summed
    bases, alpha = conv.weight_decomposition()
    assert bases.shape == (3, 2, 2, 2, 2) and set(bases.unique().tolist()) == {-1.0, 1.0}


@pytest.mark.golden
def test_bitwise_form_of_abc_and_lstsq_layers_matches_to_rounding():
    from methods.abc_net import ABCWeightBases
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 6, 6, generator=g, dtype=F64)
    for wb, ab in ((ABCWeightBases(3), abc_act_bases(2)), (PAWeightBases(2, coefficients="lstsq"), pa_act_bases(4))):
        conv = MultiBaseConv2d(4, 3, 3, stride=2, padding=1, weight_bases=wb, act_bases=ab).double()
        with torch.no_grad():                                       # trained-looking, distinct beta_n and v_n
            conv.act_bases.coeffs.copy_(torch.rand(ab.n, generator=g, dtype=F64))
            conv.act_bases.thresholds.add_(0.1 * torch.randn(ab.n, generator=g, dtype=F64))
        torch.testing.assert_close(conv.bitwise_forward(x), conv(x), rtol=1e-12, atol=1e-12)


@pytest.mark.golden
def test_pa_approximation_error_falls_with_bases():
    w = torch.randn(32, 72, generator=torch.Generator().manual_seed(1), dtype=F64) * 0.05
    errs = []
    for m in range(1, 7):
        u, a = pa_weight_fit(w, m)
        errs.append(float((w - stair(w, u, a)).norm() / w.norm()))
    assert all(b < a for a, b in zip(errs, errs[1:])), errs
    # M = 1: one base, threshold the median, alpha = half the distance of the two halves' means
    u, a = pa_weight_fit(w, 1)
    torch.testing.assert_close(u[0], w.quantile(0.5, dim=1))


def _resnet(compose, method, *over, model="resnet20", size=32):
    from engine.runner import build_backbone
    from methods import RunContext, build_method
    cfg = compose([f"method={method}", f"model={model}", "data=synthetic", f"data.image_size={size}", *over])
    m = build_method(cfg.method)
    ctx = RunContext(num_classes=10, in_channels=3, image_size=size, device=torch.device("cpu"))
    torch.manual_seed(0)
    return m, m.transform(build_backbone(cfg, 10, 3, size), ctx)


def test_complexity_counts_m_times_n_binary_convs_per_layer(compose):
    from core.complexity import measure
    _, bnn = _resnet(compose, "bnn", "method.binary.fp_downsample=false")
    base = measure(bnn, (3, 32, 32))
    for method, m, n in (("pa", 3, 3), ("pa", 1, 1), ("pa", 4, 5), ("abc_net", 3, 3)):
        meth, model = _resnet(compose, method, f"method.M={m}", f"method.N={n}")
        c = measure(model, (3, 32, 32))
        assert c.bops == m * n * base.bops and c.fp_macs == base.fp_macs and c.macs == base.macs
        assert c.ops == c.fp_macs + c.bops / 64
        layers = multibase_layers(model)
        assert len(layers) == 18 and all((l.weight_bits, l.act_bits) == (m, n) for l in layers)
        binary_weights = sum(l.weight.numel() for l in layers)
        assert c.size_bits - base.size_bits == (m - 1) * binary_weights + 32 * sum(
            p.numel() for l in layers for p in l.act_bases.parameters())
        extra = meth.metrics(model)
        assert extra["binary_convs"] == 18 * m * n and (extra["w_bits"], extra["a_bits"]) == (m, n)
    # the same count by hand for one layer: layer1.0.conv1 is 16 -> 16, 3x3 at 32x32: MACs 16*9*16*1024 = 2,359,296
    pa_cost = {l.name: l for l in measure(model, (3, 32, 32)).layers}["layer1.0.conv1"]
    assert (pa_cost.macs, pa_cost.bops) == (2_359_296, 9 * 2_359_296)


def test_downsample_convs_are_binarised_multibase_layers(compose):
    """PA binarizes the 1x1 downsample convs (abstract): on the ResNet-18 family (1x1 conv shortcuts) they are
    multi-base layers, counted at M*N BOPs, while bnn keeps them FP."""
    from core.complexity import measure
    meth, model = _resnet(compose, "pa", model="resnet18", size=16)
    down = {n: l for n, l in model.named_modules() if isinstance(l, MultiBaseConv2d) and l.kernel_size == (1, 1)}
    assert len(down) == 3
    costs = {l.name: l for l in measure(model, (3, 16, 16)).layers}
    for name in down:
        assert costs[name].bops == 9 * costs[name].macs
    _, bnn = _resnet(compose, "bnn", model="resnet18", size=16)
    assert measure(bnn, (3, 16, 16)).fp_macs > measure(model, (3, 16, 16)).fp_macs


def test_pa_swaps_keep_the_backbone_init_and_linear_form(compose):
    _, bnn = _resnet(compose, "bnn")
    _, pa = _resnet(compose, "pa")
    w_bnn = {k: v for k, v in bnn.state_dict().items() if k.endswith("conv1.weight")}
    w_pa = {k: v for k, v in pa.state_dict().items() if k.endswith("conv1.weight")}
    assert w_bnn.keys() == w_pa.keys() and all(torch.equal(w_bnn[k], w_pa[k]) for k in w_bnn)  # paired by seed
    lin = MultiBaseLinear(6, 2, weight_bases=PAWeightBases(2), act_bases=pa_act_bases(2)).double()
    x = torch.randn(3, 6, dtype=F64)
    want = torch.nn.functional.linear(lin.act_bases(x), stair(lin.weight, *pa_weight_fit(lin.weight, 2)), lin.bias)
    torch.testing.assert_close(lin(x), want)


def test_bad_options_fail_naming_the_key(compose):
    from methods import build_method
    from omegaconf import OmegaConf
    base = OmegaConf.load("conf/method/pa.yaml")
    for key, value in (("segments", "median"), ("coefficients", "mean"), ("act_grad", "ste"), ("M", 0), ("N", 17)):
        cfg = base.copy()
        cfg[key] = value
        with pytest.raises(ValueError, match=f"method.{key}"):
            build_method(cfg)
    cfg = base.copy()
    cfg["segmnets"] = "quantile"
    with pytest.raises(ValueError, match="segmnets"):
        build_method(cfg)


@pytest.mark.smoke
def test_train_pa_experiment_smoke(compose):
    """python train.py experiment=binary/cifar10_jpeg_resnet20_pa on tiny synthetic data, 2 steps."""
    from engine.runner import run
    cfg = compose(["experiment=binary/cifar10_jpeg_resnet20_pa", "data=synthetic", "data.train_size=32",
                   "data.test_size=16", "data.train_subset=null", "data.test_subset=null", "trainer.batch_size=8",
                   "trainer.eval_batch_size=16", "trainer.epochs=1", "trainer.max_steps=2"])
    metrics = run(cfg)
    assert metrics["steps"] == 2
    extra = metrics["extra"]
    assert (extra["w_bits"], extra["a_bits"], extra["binary_convs"]) == (3, 3, 162)
    assert "sign_flip_total" in extra and 0 < extra["weight_rel_error"] < 1
    assert extra["act_coeff_std"] > 0                              # beta moved (learned per base)
    assert metrics["bops"] == 9 * 40_108_032


def test_multibase_skeletons_are_abstract():
    """WeightBases and MultiBaseMethod are skeletons: a subclass must give the approximators (pa, abc_net do)."""
    from methods.common.multibase import MultiBaseMethod, WeightBases
    with pytest.raises(TypeError, match="abstract"):
        WeightBases(2)
    with pytest.raises(TypeError, match="abstract"):
        MultiBaseMethod({"M": 1, "N": 1})


@pytest.mark.parametrize("arm", ["pa", "pa_m1n1", "pa_lstsq"])
def test_fixed_beta_arms_differ_from_their_learned_sibling_only_in_act_coeffs(compose, arm):
    """The phase-3 arms are the same experiment with the activation coefficients fixed: same data, recipe, seeds,
    bases; only the name and method.act_coeffs differ (the pairing the grid_fixed_beta_* claims rely on)."""
    from omegaconf import OmegaConf

    def resolved(exp):
        return OmegaConf.to_container(compose([f"experiment=binary/cifar10_jpeg_resnet20_{exp}"]), resolve=True)
    learned, fixed = resolved(arm), resolved(f"{arm}_fixed_beta")
    assert (learned["method"].pop("act_coeffs"), fixed["method"].pop("act_coeffs")) == ("learned", "fixed")
    assert fixed.pop("name") == learned.pop("name") + "_fixed_beta"
    assert learned == fixed


def test_fixed_beta_keeps_the_activation_levels_at_the_piece_midpoints():
    """act_coeffs: fixed -> beta is a buffer (no optimiser moves it); N = 3 on [-1, 1]: levels -0.75 ... 0.75."""
    act = pa_act_bases(3, act_coeffs="fixed")
    assert "coeffs" not in dict(act.named_parameters()) and torch.equal(act.coeffs, torch.full((3,), 0.25))
    out = act(torch.tensor([-0.9, -0.3, 0.3, 0.9]))
    assert torch.equal(out, torch.tensor([-0.75, -0.25, 0.25, 0.75]))
