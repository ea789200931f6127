"""UCP against the official code (tests/golden/ucp/: JingfeiChang/UCP's SELayer and the threshold / top-k blocks
of its prune scripts on fixed inputs; the JSON header says how), and the official gate placement."""
import pytest
import torch

from methods.ucp import SEGate, score_targets, threshold_count
from methods.common.channel_pruning import top_k
from models import build_model

from tests.golden import load

pytestmark = pytest.mark.golden


@pytest.fixture(scope="module")
def golden():
    header, data = load("ucp", "mseb_selection")
    return data


def _gate(rec, c):
    gate = SEGate(c, 16)
    st = rec["state"]
    with torch.no_grad():
        gate.fc1.weight.copy_(st["fc.0.weight"]); gate.fc2.weight.copy_(st["fc.2.weight"])
        if "fc.0.bias" in st:
            gate.fc1.bias.copy_(st["fc.0.bias"]); gate.fc2.bias.copy_(st["fc.2.bias"])
    assert (gate.fc1.bias is None) == ("fc.0.bias" not in st)
    return gate


@pytest.mark.parametrize("c", [32, 8])
def test_mseb_gate_matches_official_selayer(golden, c):
    rec = golden[f"c{c}"]
    gate = _gate(rec, c)
    with torch.no_grad():
        torch.testing.assert_close(gate.gates(rec["x"]), rec["gates"], atol=1e-6, rtol=0)
        torch.testing.assert_close(gate(rec["x"]), rec["out"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("i,c", [(0, 32), (1, 8)])
def test_threshold_rule_matches_official(golden, i, c):
    s = golden[f"c{c}"]["imscore"] / 6          # our score is the mean; the official sum has the same threshold rule
    assert threshold_count(s, 0.999) == int(golden["vgg_masks"][i].sum())
    assert sorted(top_k(s, threshold_count(s, 0.999)).tolist()) == \
        torch.nonzero(golden["vgg_masks"][i]).flatten().tolist()


def test_topk_matches_official(golden):
    s = golden["c32"]["imscore"]
    kept = top_k(s, golden["resnet_topk_width"]).tolist()
    assert kept == torch.nonzero(golden["resnet_topk_mask"]).flatten().tolist()


def test_official_placement_one_gate_per_block_conv1():
    model = build_model("resnet20", num_classes=10)
    official = score_targets(model, "official")
    assert len(official) == 9 and all(n.endswith(".conv1") and n.count(".") == 2 for n in official)
    assert len(score_targets(model, "every_conv")) == 19
