"""GDFQ (method=gdfq): parity with the official xushoukai/GDFQ functions (tests/golden/gdfq/official.json), the
quantized model's levels, the engine's batch-source hook (no training image read) and a tiny train.py run."""
import os

import pytest
import torch
import torch.nn as nn

from engine.runner import run
from methods.gdfq import (ActQuant, BNStatHooks, GDFQGenerator, QuantConv2d, QuantLinear, bns_loss, build_generator,
                          generator_loss, quant_params, quantize_model, quantize_weight, student_loss,
                          uniform_quantize)
from models import build_model
from tests.golden import load

HEADER, G = load("gdfq", "official")
TOL = dict(rtol=HEADER["tolerance"]["rtol"], atol=HEADER["tolerance"]["atol"])
GEN_TOL = dict(rtol=HEADER["generator_tolerance"]["rtol"], atol=HEADER["generator_tolerance"]["atol"])
SMALL = ["data=synthetic", "data.train_size=64", "data.test_size=64", "trainer.eval_batch_size=64"]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---- goldens -----------------------------------------------------------------------------------------------------
@pytest.mark.golden
@pytest.mark.parametrize("bits", [2, 3, 4, 5])
def test_weight_quantizer_matches_official(bits):
    w = G["w_conv"].clone().requires_grad_(True)
    conv = QuantConv2d(3, 6, 3, padding=1, bias=True)
    conv.weight_bits = bits
    with torch.no_grad():
        conv.weight.copy_(w)
        conv.bias.fill_(0.1)
    torch.testing.assert_close(quantize_weight(w, bits).detach(), G[f"conv_wq_{bits}"], **TOL)
    out = conv(G["x_in"])
    out.sum().backward()
    torch.testing.assert_close(out.detach(), G[f"conv_out_{bits}"], **TOL)
    torch.testing.assert_close(conv.weight.grad, G[f"conv_wgrad_{bits}"], **TOL)   # straight-through
    wl = G["w_lin"]
    torch.testing.assert_close(quantize_weight(wl, bits), G[f"lin_wq_{bits}"], **TOL)
    scale, zero = quant_params(bits, wl.min(1).values, wl.max(1).values)
    torch.testing.assert_close(scale, G[f"lin_scale_{bits}"], **TOL)
    torch.testing.assert_close(zero, G[f"lin_zero_{bits}"], **TOL)
    clipped = uniform_quantize(G["clip_x"], bits, torch.tensor(-0.5), torch.tensor(0.7))   # the integer clamp binds
    torch.testing.assert_close(clipped, G[f"clip_q_{bits}"], **TOL)


@pytest.mark.golden
def test_activation_quantizer_ema_matches_official():
    aq = ActQuant(4)   # official: the corrected EMA fed back (overshoots ~4000x near step 20 on these inputs)
    aq.train()
    for i, a in enumerate(G["acts"]):
        out = aq(a)
        torch.testing.assert_close(out, G["act_outs"][i], **TOL)
        torch.testing.assert_close(aq.x_min, G["act_mins"][i:i + 1], **TOL)
        torch.testing.assert_close(aq.x_max, G["act_maxs"][i:i + 1], **TOL)
    aq.running = False
    torch.testing.assert_close(aq(G["acts"][-1] * 2), G["act_frozen"], **TOL)
    deb = ActQuant(4, mode="debiased").train()   # the named variant is a true EMA: constant input -> its value
    for _ in range(5):
        deb(torch.tensor([-1.0, 2.0]))
    torch.testing.assert_close(torch.cat(deb.range()), torch.tensor([-1.0, 2.0]))


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.c2, self.b2 = nn.Conv2d(4, 5, 3, padding=1), nn.BatchNorm2d(5)
        self.fc = nn.Linear(5, 10)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x)))
        return self.fc(x.mean((2, 3)))


@pytest.mark.golden
def test_bns_and_generator_loss_match_official():
    net = _Net()
    net.load_state_dict(G["bn_net"])
    net.eval()
    hooks = BNStatHooks(net)
    x = G["bn_images"].clone().requires_grad_(True)
    logits = net(x)
    assert len(hooks.means) == 2   # every BN of the teacher
    bns = bns_loss(hooks.means, hooks.vars, [b.running_mean for b in hooks.bns], [b.running_var for b in hooks.bns])
    torch.testing.assert_close(bns.reshape(1), G["bns_loss"], **TOL)
    loss = generator_loss(logits, G["bn_labels"], bns, 0.1)
    torch.testing.assert_close(loss.reshape(1), G["loss_g"], **TOL)
    loss.backward()
    torch.testing.assert_close(x.grad, G["loss_g_image_grad"], **TOL)


@pytest.mark.golden
def test_student_kd_loss_matches_official():
    s = G["s_logits"].clone().requires_grad_(True)
    loss = student_loss(s, G["t_logits"], G["bn_labels"], temperature=20, alpha=1, reduction="mean")
    torch.testing.assert_close(loss, G["kd_loss"], **TOL)
    loss.backward()
    torch.testing.assert_close(s.grad, G["kd_grad"], **TOL)
    other = student_loss(G["s_logits"], G["t_logits"], G["bn_labels"], reduction="batchmean")   # the variant differs
    assert not torch.allclose(other, G["kd_loss"])


def _formula_filled_cifar_generator():
    """The CIFAR generator with the golden's formula-filled parameters, in train mode."""
    gen = build_generator("gdfq_cifar", num_classes=10, latent_dim=100, image_size=8, channels=3)
    names = sorted(n for n, _ in gen.named_parameters())
    params = dict(gen.named_parameters())
    with torch.no_grad():
        for k, name in enumerate(names):
            p = params[name]
            p.copy_(torch.sin(torch.arange(p.numel(), dtype=torch.float32) * 0.37 + k).view_as(p) * 0.1
                    + (1.0 if name.endswith("weight") and p.dim() == 1 else 0.0))
    return gen.train()


@pytest.mark.golden
def test_generator_forward_matches_official():
    gen = _formula_filled_cifar_generator()
    assert isinstance(gen, GDFQGenerator)
    assert sorted(n for n, _ in gen.named_parameters()) == G["g_param_names"]
    torch.testing.assert_close(gen(G["g_z"], G["g_y"]), G["g_out"], **GEN_TOL)


@pytest.mark.golden
def test_generator_tolerance_separates_float32_noise_from_a_wrong_layer():
    """The generators' looser tolerance (header ``generator_tolerance``, which says why) still fails a real
    deviation: float64 arithmetic lands inside it, a wrong BN eps or LeakyReLU slope lands a thousand times outside."""
    exact = _formula_filled_cifar_generator().double()
    torch.testing.assert_close(exact(G["g_z"].double(), G["g_y"]), G["g_out"].double(), **GEN_TOL)
    for layer, attr, wrong in [(1, "eps", 1e-5), (2, "negative_slope", 0.01)]:
        gen = _formula_filled_cifar_generator()
        setattr(gen.conv_blocks1[layer], attr, wrong)
        assert float((gen(G["g_z"], G["g_y"]) - G["g_out"]).detach().abs().max()) > 1000 * GEN_TOL["atol"]


@pytest.mark.golden
def test_imagenet_generator_forward_matches_official():
    gen = build_generator("gdfq_imagenet", num_classes=1000, latent_dim=100, image_size=8, channels=3)
    ours = {"conv_blocks0_0": "bn0", "conv_blocks1_0": "conv1", "conv_blocks1_1": "bn1", "conv_blocks2_0": "conv2",
            "conv_blocks2_1": "bn2", "conv_blocks2_3": "conv3", "l1": "l1"}
    params = dict(gen.named_parameters())
    assert len(params) == len(G["gi_param_order"])
    with torch.no_grad():
        for k, name in enumerate(G["gi_param_order"]):
            head, rest = name.split(".", 1)
            p = params[f"{ours[head]}.{rest}"]
            p.copy_(torch.sin(torch.arange(p.numel(), dtype=torch.float32) * 0.29 + k).view_as(p) * 0.1
                    + (1.0 if "weights" in name else 0.0))
    gen.train()
    torch.testing.assert_close(gen(G["gi_z"], G["gi_y"]), G["gi_out"], **GEN_TOL)


# ---- properties --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [2, 4, 5])
def test_quantized_resnet20_takes_at_most_2_pow_b_levels(bits):
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10)
    aqs = quantize_model(model, bits, bits)
    assert len(aqs) == 2 * 9 + 1   # block input + inner ReLU per block, and the last block's output
    layers = [m for m in model.modules() if isinstance(m, (QuantConv2d, QuantLinear))]
    assert len(layers) == 20 and not any(type(m) in (nn.Conv2d, nn.Linear) for m in model.modules())
    for m in layers:
        wq = quantize_weight(m.weight, bits).detach().reshape(m.weight.shape[0], -1)
        assert all(len(torch.unique(row)) <= 2 ** bits for row in wq)
    model.train()
    x = torch.randn(8, 3, 32, 32)
    model(x)
    seen = []
    aqs[5].register_forward_hook(lambda mod, a, out: seen.append(out))
    model.eval()
    model(x)
    assert len(torch.unique(seen[0])) <= 2 ** bits


def test_quantizer_idempotent_and_range():
    x = torch.randn(1000)
    lo, hi = x.min(), x.max()
    q = uniform_quantize(x, 4, lo, hi)
    assert len(torch.unique(q)) <= 16
    torch.testing.assert_close(uniform_quantize(q, 4, lo, hi), q)
    assert (q - x).abs().max() <= (hi - lo) / 15 + 1e-6


# ---- engine hook and runs ----------------------------------------------------------------------------------------
def _forbid_training_loader(monkeypatch):
    """Any iteration of a training loader fails the test (the test loader is tagged and allowed)."""
    import data as data_pkg
    import engine.runner as runner_mod
    real_build = runner_mod.build_data

    class Forbidden:
        def __init__(self, inner):
            self.inner = inner

        def __len__(self):
            return len(self.inner)

        def set_epoch(self, epoch):
            raise AssertionError("the training loader's set_epoch was called")

        def __iter__(self):
            raise AssertionError("a training image was read")

        def __getattr__(self, name):
            return getattr(self.inner, name)

    def build(*args, **kwargs):
        bundle = real_build(*args, **kwargs)
        bundle.train = Forbidden(bundle.train)
        return bundle

    monkeypatch.setattr(runner_mod, "build_data", build)
    return data_pkg


@pytest.mark.smoke
def test_gdfq_run_reads_no_training_image(compose, monkeypatch):
    _forbid_training_loader(monkeypatch)
    cfg = compose(["method=gdfq", "model=resnet20", *SMALL, "trainer.epochs=1", "trainer.batch_size=8",
                   "method.iters_per_epoch=2", "method.warmup_epochs=1", "method.act_range_epochs=1",
                   "logger=none"])
    out = run(cfg)
    assert out["steps"] == 2 + 2 and out["epochs"] == 2
    extra = out["extra"]
    assert extra["data_source"] == "generator" and extra["generator"] == "gdfq_cifar"
    assert extra["bns"] > 0 and len(extra["act_ranges"]) == 19
    assert out["bops"] > 0 and out["size_bits"] < 32 * out["params"]


@pytest.mark.smoke
def test_warmup_stage_leaves_the_student_unchanged_and_trains_the_generator(compose, monkeypatch, tmp_path):
    import copy
    import glob
    from engine import checkpoint
    import engine.runner as runner_mod
    start = {}
    real = runner_mod.build_backbone

    def build(*args, **kwargs):
        model = real(*args, **kwargs)
        start.update(copy.deepcopy(model.state_dict()))
        return model

    monkeypatch.setattr(runner_mod, "build_backbone", build)
    cfg = compose(["method=gdfq", "model=resnet20", *SMALL, "trainer.epochs=0", "trainer.batch_size=8",
                   "method.iters_per_epoch=3", "method.warmup_epochs=1", "logger=none"])
    out = run(cfg)
    (warm,) = glob.glob(str(tmp_path / "outputs" / "**" / "stage0-warmup" / "last.pt"), recursive=True)
    state = checkpoint.load(warm)
    weights = [k for k in start if k.endswith("weight")]
    assert len(weights) > 20 and all(torch.equal(state["model"][k], start[k]) for k in weights)
    assert out["steps"] == 3 and "G" in state["method"]
    ranges = [k for k in state["model"] if k.endswith("x_max")]
    assert len(ranges) == 19 and all(float(state["model"][k]) != 0 for k in ranges)   # ranges moved


@pytest.mark.smoke
def test_the_guard_sees_a_training_loader_read(compose, monkeypatch):
    """The guard of the test above bites: the real-data upper bound (data_source=real) iterates the loader."""
    _forbid_training_loader(monkeypatch)
    cfg = compose(["method=gdfq", "model=resnet20", *SMALL, "trainer.epochs=1", "trainer.batch_size=8",
                   "trainer.max_steps=1", "method.data_source=real", "logger=none"])
    with pytest.raises(AssertionError, match="training loader|training image"):
        run(cfg)


def test_default_method_keeps_the_training_loader():
    from methods.base import Method
    assert Method({"seed": 0}).train_batches(None, None, None) is None


@pytest.mark.slow
def test_experiment_files_compose_and_run_one_step(compose):
    here = os.path.join(os.path.dirname(os.path.dirname(__file__)), "conf", "experiment", "gdfq")
    for f in sorted(os.listdir(here)):
        cfg = compose([f"experiment=gdfq/{f[:-5]}", *SMALL, "model.pretrained=false", "trainer.epochs=1",
                       "trainer.batch_size=8", "trainer.max_steps=1", "method.iters_per_epoch=1",
                       "method.warmup_epochs=0", "logger=none", "trainer.init_checkpoint=null"])
        run(cfg)
