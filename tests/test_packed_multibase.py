"""Multi-base layers (PA, ABC-Net) on the XNOR-popcount kernel (methods/common/packed_multibase.py): the packed
form equals the float form (exactly with dyadic numbers, to rounding otherwise), and ``deployed`` serves it."""
import pytest
import torch

from methods.abc_net import ABCWeightBases, abc_act_bases
from methods.common import packed_binary
from methods.common.multibase import MultiBaseConv2d, MultiBaseLinear, multibase_layers
from methods.common.packed_multibase import (PackedMultiBaseConv2d, PackedMultiBaseLinear, multibase_packable,
                                             pack_multibase_model)
from methods.pa import PAWeightBases, pa_act_bases
from tests.test_pa import F64, _dyadic_pa_conv, _resnet

pytestmark = pytest.mark.skipif(not packed_binary.available(), reason=packed_binary.MISSING)


def _packed(layer):
    return pack_multibase_model(torch.nn.Sequential(layer))[0]


@pytest.mark.golden
def test_packed_form_equals_float_form_exactly_on_dyadic_numbers():
    conv, x = _dyadic_pa_conv(True)
    float_form = conv(x)
    packed = _packed(conv)
    assert isinstance(packed, PackedMultiBaseConv2d)
    assert packed.packed_words.shape == (3 * 2, 2 * 2 * 1)    # M*O filters, 2x2 taps, one 64-bit word each
    assert torch.equal(packed(x), float_form)                 # M*N = 9 convolutions in one kernel call


@pytest.mark.parametrize("stride,padding,in_ch", [(1, 1, 4), (2, 1, 70), (2, 0, 5)])
def test_packed_abc_and_lstsq_layers_match_the_bitwise_form(stride, padding, in_ch):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, in_ch, 7, 6, generator=g, dtype=F64)
    for wb, ab in ((ABCWeightBases(3), abc_act_bases(2)), (PAWeightBases(2, coefficients="lstsq"), pa_act_bases(4))):
        conv = MultiBaseConv2d(in_ch, 5, 3, stride=stride, padding=padding, bias=True, weight_bases=wb,
                               act_bases=ab).double()
        with torch.no_grad():                                  # trained-looking, distinct beta_n and v_n
            conv.act_bases.coeffs.copy_(torch.rand(ab.n, generator=g, dtype=F64))
            conv.act_bases.thresholds.add_(0.1 * torch.randn(ab.n, generator=g, dtype=F64))
            conv.bias.normal_(generator=g)
        want = conv.bitwise_forward(x)
        torch.testing.assert_close(_packed(conv)(x), want, rtol=1e-12, atol=1e-12)


def test_packed_linear_equals_float_form():
    lin = MultiBaseLinear(70, 4, weight_bases=PAWeightBases(2), act_bases=pa_act_bases(3)).double()
    x = torch.randn(2, 5, 70, dtype=F64)                       # leading dims kept
    want = lin(x)
    packed = _packed(lin)
    assert isinstance(packed, PackedMultiBaseLinear)
    torch.testing.assert_close(packed(x), want, rtol=1e-12, atol=1e-12)


def test_grouped_convs_stay_on_the_float_path():
    conv = MultiBaseConv2d(4, 4, 3, groups=2, weight_bases=PAWeightBases(2), act_bases=pa_act_bases(2))
    assert not multibase_packable(conv)
    assert type(_packed(conv)) is MultiBaseConv2d


@pytest.mark.parametrize("method_name", ["pa", "abc_net"])
def test_multibase_method_deploys_packed_copy_with_equal_logits(method_name, compose):
    """The form a PA / ABC-Net run's latency is measured on: every multi-base layer packed, the trained model
    untouched, logits equal to the float form's to float32 rounding."""
    method, model = _resnet(compose, method_name, "method.M=3", "method.N=2")
    model.eval()
    served, form = method.deployed(model)
    assert form == "packed xnor-popcount, M=3 x N=2 bases" and served is not model
    assert sum(isinstance(m, PackedMultiBaseConv2d) for m in served.modules()) == 18
    assert not any(isinstance(m, PackedMultiBaseConv2d) for m in model.modules())
    assert len(multibase_layers(served)) == 18                 # still counted as multi-base layers
    with torch.no_grad():
        x = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(served(x), model(x), rtol=1e-4, atol=1e-4)
