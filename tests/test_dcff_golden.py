"""DCFF against the official code (tests/golden/dcff/, made by running lmbxmu/DCFF's own score/selection block
and FuseConv2d on fixed filters; the JSON header says how): score, NaN -> keep-previous-scores, selection,
temperature schedule, fusion and the fused forward."""
import pytest
import torch
import torch.nn as nn

from methods.dcff import FusedConv2d, importance_official, inter_similarity_official, temperature

from tests.golden import load

pytestmark = pytest.mark.golden


@pytest.fixture(scope="module")
def golden():
    header, data = load("dcff", "score_fusion")
    return header, data


def _layer(g, rule):
    like = nn.Conv2d(4, 8, 3, padding=1)
    return FusedConv2d(g["weights"][0], g["bias"], g["kept"], like, score_rule=rule)


def test_official_rule_matches_official_code_epoch_by_epoch(golden):
    _, g = golden
    conv = _layer(g, "official")
    for e, off in enumerate(g["official"]):
        t = temperature(e, g["epochs_total"])
        assert t == pytest.approx(off["T"], rel=1e-12)
        with torch.no_grad():
            conv.weight.copy_(g["weights"][e])
        raw = importance_official(inter_similarity_official(conv.weight, t))
        assert torch.isnan(raw).any() == torch.isnan(off["raw_score"]).any()
        if torch.isfinite(off["raw_score"]).all():
            torch.testing.assert_close(raw, off["raw_score"], atol=1e-6, rtol=0)
        conv.refresh(t)
        torch.testing.assert_close(conv.scores, off["score"], atol=1e-6, rtol=0)
        order = off["selected_order"]
        assert conv.selected.tolist() == sorted(order.tolist())
        perm = torch.argsort(order)                 # official channel order -> ascending index
        torch.testing.assert_close(conv.fusion, off["fusion"][perm], atol=1e-6, rtol=0)
        with torch.no_grad():
            y = conv(g["x"])
        torch.testing.assert_close(y, off["output"][:, perm], atol=1e-5, rtol=0)


def test_official_selection_is_the_epoch0_selection(golden):
    """The official score is NaN from epoch 1 (T ~ 4622): the selection never changes after epoch 0."""
    _, g = golden
    sels = [sorted(o["selected_order"].tolist()) for o in g["official"]]
    assert all(s == sels[0] for s in sels)
    assert all(torch.isnan(o["raw_score"]).all() for o in g["official"][1:])


def test_recompute_rule_differs_from_the_official_code(golden):
    """Our pre-issue-15 rule (float64, eps in both logs) is a variant: its scores tie from epoch 1 and the
    tie-break (lowest indices) picks another set than the official code keeps."""
    _, g = golden
    conv = _layer(g, "recompute")
    picked = []
    for e in range(len(g["official"])):
        with torch.no_grad():
            conv.weight.copy_(g["weights"][e])
        conv.refresh(temperature(e, g["epochs_total"]))
        picked.append(conv.selected.tolist())
    assert picked[0] == sorted(g["official"][0]["selected_order"].tolist())
    assert picked[1] == list(range(g["kept"])) != sorted(g["official"][1]["selected_order"].tolist())


def test_bad_rule_rejected():
    with pytest.raises(ValueError, match="score_rule"):
        FusedConv2d(torch.zeros(4, 1, 1, 1), None, 2, nn.Conv2d(1, 4, 1), score_rule="mean")
