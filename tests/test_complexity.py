import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from core.complexity import format_table, measure
from models import build_model


def test_lenet5_matches_hand_count():
    # conv1: 20 maps 24x24, 25 MACs each; conv2: 50 maps 8x8, 20*25 MACs each; fc1 800x500; fc2 500x10
    torch.manual_seed(0)   # (a float32 uniform init hits exactly 0.0 with p ~ 6e-8 per weight: fix the draw)
    c = measure(build_model("lenet5", num_classes=10, in_channels=1, image_size=28), (1, 28, 28))
    assert c.macs == 20 * 24 * 24 * 25 + 50 * 8 * 8 * 500 + 800 * 500 + 500 * 10 == 2_293_000
    assert c.params == 431_080 and c.flops == 2 * c.macs and c.bops == 0 and c.ops == c.macs
    assert c.size_bits == 431_080 * 32 and c.sparsity == 0.0


def resnet20_hand_macs() -> int:
    macs = 16 * 32 * 32 * 3 * 9                              # stem
    for c_in, c, side, n in ((16, 16, 32, 3), (16, 32, 16, 3), (32, 64, 8, 3)):
        macs += side * side * c * c_in * 9 + side * side * c * c * 9             # first block
        macs += (n - 1) * 2 * side * side * c * c * 9                             # the rest
    return macs + 64 * 10                                                         # classifier


def test_resnet20_matches_hand_count():
    c = measure(build_model("resnet20", num_classes=10), (3, 32, 32))
    assert c.macs == resnet20_hand_macs() == 40_551_040
    assert c.params == 269_722


@pytest.mark.parametrize("name,shape", [("lenet5", (1, 28, 28)), ("resnet20", (3, 32, 32)), ("vgg16", (3, 32, 32)),
                                        ("resnet18", (3, 32, 32)), ("lenet300_100", (1, 28, 28))])
def test_flops_agree_with_torch_flop_counter(name, shape):
    model = build_model(name, num_classes=10, in_channels=shape[0], image_size=shape[1]).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *shape))
    assert measure(model, shape).flops == counter.get_total_flops()


def test_declared_bits_turn_macs_into_bops_and_shrink_size():
    model = build_model("lenet5", num_classes=10, in_channels=1, image_size=28)
    model.conv2.weight_bits, model.conv2.act_bits = 1, 1
    model.fc1.weight_bits, model.fc1.act_bits = 4, 8
    c = measure(model, (1, 28, 28))
    assert c.bops == 1_600_000 + 400_000 * 32
    assert c.fp_macs == 288_000 + 5_000 and c.flops == 2 * 293_000
    assert c.ops == pytest.approx(293_000 + c.bops / 64)   # binary literature: FP MACs + BOPs/64
    assert c.size_bits == (431_080 - 25_000 - 400_000) * 32 + 25_000 * 1 + 400_000 * 4


def test_weight_mask_counts_as_sparsity():
    model = nn.Sequential(nn.Linear(10, 4, bias=False))
    mask = torch.zeros(4, 10)
    mask[:, :3] = 1
    model[0].register_buffer("weight_mask", mask)
    c = measure(model, (10,))
    assert c.sparsity == pytest.approx(0.7) and c.nonzero_params == 12


def test_per_layer_table_lists_every_counted_layer():
    c = measure(build_model("resnet20", num_classes=10), (3, 32, 32))
    table = format_table(c)
    assert len(c.layers) == 20 and "layer3.2.conv2" in table and "counter:" in table


def test_bias_mask_counts_in_nonzero_params():
    layer = nn.Linear(4, 3)
    layer.register_buffer("bias_mask", torch.tensor([1.0, 0.0, 0.0]))
    c = measure(nn.Sequential(layer), (4,))
    assert c.nonzero_params == 12 + 1
