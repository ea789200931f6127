"""The XNOR-popcount kernel (methods/common/packed_binary.py): exact against the float +-1 conv, and exported
binary networks give the float path's logits through it (docs/binary_inference.md)."""
import copy

import pytest
import torch
import torch.nn.functional as F

from methods.common import native, packed_binary, popcount_build
from methods.common.binary_export import export_binary, load_binary_export
from methods.common.packed_binary import PackedBinaryConv2d, PackedBinaryLinear, pack_model, pack_weight
from models import build_model
from models.binary_layers import BinaryLinear, BinarySpec, _sign, binary_layers
from tests.test_binary_smoke import _build

pytestmark = pytest.mark.skipif(not packed_binary.available(), reason=packed_binary.MISSING)

# (batch, in channels, out channels, height, width, kernel, stride, padding)
SHAPES = [
    (1, 3, 5, 7, 7, 3, 1, 1),        # fewer channels than one word, every border pixel padded
    (2, 65, 7, 9, 8, 3, 2, 1),       # one bit past a word, stride 2, odd width
    (3, 130, 64, 8, 8, 1, 2, 0),     # 1x1 stride-2 downsample, three words
    (2, 64, 33, 6, 6, 3, 1, 1),      # exactly one word, odd output channels
    (1, 200, 10, 5, 5, 3, 2, 1),     # odd sizes throughout
    (1, 17, 4, 6, 5, 3, 1, 2),       # padding 2: a pixel with 5 of 9 taps padded
    (1, 9, 3, 1, 1, 3, 1, 1),        # 1x1 input: only the centre tap is real
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "n{}c{}o{}h{}w{}k{}s{}p{}".format(*s))
def test_packed_conv_equals_float_pm1_conv(shape):
    n, c, o, h, w, k, s, p = shape
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(n, c, h, w, generator=g)
    x.view(-1)[:4] = torch.tensor([0.0, -0.0, 1e-30, -1e-30])          # sign's edge: 0 and -0 are +1
    weight = torch.randn(o, c, k, k, generator=g).sign()
    words, tap_pop = pack_weight(weight)
    out = packed_binary.packed_conv2d(x, words, tap_pop, (k, k), s, p)
    assert torch.equal(out, F.conv2d(_sign(x), weight, stride=s, padding=p))


def test_packed_linear_equals_float_layer():
    torch.manual_seed(0)
    layer = BinaryLinear(70, 9, bias=True, scaling="mean_abs").eval()
    layer.frozen, layer.frozen_scale = True, layer.weight.detach().abs().mean(dim=1)
    with torch.no_grad():
        layer.weight.copy_(_sign(layer.weight))
    packed = pack_model(copy.deepcopy(layer))
    assert isinstance(packed, PackedBinaryLinear)
    x = torch.randn(2, 3, 70)
    assert torch.equal(packed(x), layer(x))


def _trained_bn(model, shape):
    model.train()
    with torch.no_grad():
        model(torch.randn(8, *shape))                 # move BN statistics away from their init
    return model.eval()


@pytest.mark.parametrize("method_name", ["bnn", "xnor", "irnet", "sd_bnn", "ir2net", "bireal"])
def test_exported_resnet20_same_logits_packed_and_float(method_name, tmp_path, compose):
    """A whole exported binary ResNet-20: packed logits == float +-1 logits (Bi-Real: within float32 rounding,
    its scale being folded into the float weight)."""
    cfg = compose([f"method={method_name}", "model=resnet20", "data=cifar10"])
    torch.manual_seed(0)
    model = _trained_bn(_build(cfg)[1], (3, 32, 32))
    path = str(tmp_path / "m.crbin")
    export_binary(model, path)
    flt = load_binary_export(path, _build(cfg)[1], packed=False).eval()
    pkd = load_binary_export(path, _build(cfg)[1], packed=True).eval()
    assert sum(isinstance(m, PackedBinaryConv2d) for m in pkd.modules()) == 18
    assert not any(isinstance(m, PackedBinaryConv2d) for m in flt.modules())
    with torch.no_grad():
        for batch in (1, 4):
            x = torch.randn(batch, 3, 32, 32)
            if method_name == "bireal":
                torch.testing.assert_close(pkd(x), flt(x), rtol=1e-5, atol=1e-5)
            else:
                assert torch.equal(pkd(x), flt(x))


def test_binary_1x1_downsample_convs_run_packed(tmp_path):
    """CIFAR ResNet-18 with binary 1x1 stride-2 downsample convs: every binary conv packed, logits equal."""
    def make():
        return build_model("bireal_resnet18", num_classes=10, image_size=32, spec=BinarySpec(fp_downsample=False))
    torch.manual_seed(0)
    model = _trained_bn(make(), (3, 32, 32))
    path = str(tmp_path / "r18.crbin")
    export_binary(model, path)
    flt = load_binary_export(path, make(), packed=False).eval()
    pkd = load_binary_export(path, make(), packed=True).eval()
    packed = [m for m in pkd.modules() if isinstance(m, PackedBinaryConv2d)]
    assert len(packed) == len(binary_layers(pkd)) and any(m.kernel_size == (1, 1) for m in packed)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(pkd(x), flt(x))


def test_w1a32_layers_stay_on_the_float_path():
    model = build_model("bireal_resnet20", num_classes=10, image_size=32, spec=BinarySpec(binarize_acts=False))
    for m in binary_layers(model):
        m.frozen = True
    pack_model(model)
    assert not any(isinstance(m, PackedBinaryConv2d) for m in model.modules())


def test_missing_kernel_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "LIBRARY", tmp_path / "absent.so")
    monkeypatch.setattr(native, "_LIB", None)
    assert not packed_binary.available()
    with pytest.raises(RuntimeError, match="run `make install`"):
        pack_model(torch.nn.Sequential())


def test_build_failure_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))
    assert popcount_build.main() == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "build failed" in err and "not found" in err
    monkeypatch.setenv("CXX", "false")                       # a compiler that fails without a word
    assert popcount_build.main() == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exit status 1" in err


@pytest.mark.parametrize("method_name", ["sd_bnn", "ir2net"])
def test_binary_method_deploys_packed_copy_with_equal_logits(method_name, compose):
    """``Method.deployed``: the form latency is measured on is a packed copy (the trained model untouched) whose
    logits equal the float +-1 model's."""
    cfg = compose([f"method={method_name}", "model=resnet20", "data=cifar10"])
    torch.manual_seed(0)
    method, model = _build(cfg)
    model = _trained_bn(model, (3, 32, 32)).eval()
    served, form = method.deployed(model)
    assert form == "packed xnor-popcount" and served is not model
    assert sum(isinstance(m, PackedBinaryConv2d) for m in served.modules()) == 18
    assert not any(isinstance(m, PackedBinaryConv2d) for m in model.modules())
    with torch.no_grad():
        x = torch.randn(2, 3, 32, 32)
        assert torch.equal(served(x), model(x))


def test_binary_run_row_latency_is_the_packed_form(compose, tmp_path):
    from engine.runner import run
    from engine.results import read_rows
    cfg = compose(["method=bnn", "model=resnet20", "data=synthetic", "data.train_size=16", "data.test_size=8",
                   "trainer.batch_size=8", "trainer.eval_batch_size=8", "trainer.epochs=1", "trainer.max_steps=1",
                   "trainer.latency=true"])
    run(cfg)
    (row,) = read_rows(str(tmp_path / "results" / "synthetic_resnet20_bnn.csv"))
    assert float(row["latency_ms"]) > 0 and row["latency_device"].endswith("batch 1, packed xnor-popcount")
