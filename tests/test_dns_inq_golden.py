"""DNS and INQ against goldens computed by hand from the papers' equations (the official code is Caffe/C++;
tests/golden/{dns,inq}/caffe_math.json says how): thresholds, splicing, sigma(t); exponents, Eq. 4, partition."""
import pytest
import torch
import torch.nn as nn
from omegaconf import OmegaConf

from methods.dns import dns_mask, dns_thresholds, update_probability
from methods.inq import inq_exponents, inq_levels, inq_quantize, partition_counts
from tests.golden import load

pytestmark = pytest.mark.golden


@pytest.fixture(scope="module")
def dns():
    return load("dns", "caffe_math")[1]


@pytest.fixture(scope="module")
def inq():
    return load("inq", "caffe_math")[1]


def test_dns_thresholds(dns):
    w, b = torch.tensor(dns["weight"], dtype=torch.float64), torch.tensor(dns["bias"], dtype=torch.float64)
    for t in dns["thresholds"]:
        got = dns_thresholds(w, b, t["c_rate"])
        assert got == pytest.approx((t["mu"], t["std"], t["a"], t["b"]), rel=1e-12, abs=1e-15)


def test_dns_mask_rule_with_and_without_splicing(dns):
    r = dns["mask_rule"]
    w, prev = torch.tensor(dns["weight"]), torch.tensor(r["prev"], dtype=torch.float32)
    assert dns_mask(w, prev, r["a"], r["b"]).tolist() == r["mask"]
    assert dns_mask(w, prev, r["a"], r["b"], splice=False).tolist() == r["mask_nosplice"]


def test_dns_update_probability(dns):
    for s in dns["sigma"]:
        assert update_probability(s["t"], s["gamma"], s["power"]) == pytest.approx(s["sigma"], rel=1e-12)


def test_inq_exponents_and_levels(inq):
    for e in inq["exponents"]:
        n1, n2 = inq_exponents(e["max_abs"], e["bits"])
        assert (n1, n2) == (e["n1"], e["n2"])
        assert inq_levels(n1, n2).tolist() == e["levels"]


def test_inq_eq4(inq):
    q = inq["quantize"]
    got = inq_quantize(torch.tensor(q["w"], dtype=torch.float64), q["n1"], q["n2"])
    assert got.tolist() == q["q"]


def test_inq_partition_sizes_and_magnitude_order(inq):
    p = inq["partition"]
    assert partition_counts(len(p["w"]), p["portions"]) == p["counts"]
    from methods import RunContext, build_method
    layer = nn.Linear(10, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([p["w"]]))
    method = build_method(OmegaConf.create({"name": "inq", "bits": 5, "partition": "magnitude", "stages": [
        {"name": f"s{i}", "portion": x} for i, x in enumerate(p["portions"])]}))
    model = nn.Sequential(layer)
    method.transform(model, RunContext(num_classes=1, in_channels=10, image_size=1, device="cpu"))
    method._refresh_layers(model)
    for portion, want in zip(p["portions"], p["quantized_after_step"]):
        method.quantize_portion(portion)
        assert torch.nonzero(layer.quant_mask.flatten()).flatten().tolist() == want
