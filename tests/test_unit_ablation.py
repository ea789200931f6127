"""Unit ablation: hand-checked attributes and drops, ablating nothing reproduces the baseline exactly,
the quick compressed copies, and both analysis entry points end to end on synthetic data."""
import csv
import os

import numpy as np
import pytest
import torch
import torch.nn as nn

from engine.results import read_rows
from methods.common.analysis import bootstrap_ci, pearson, quick_compress, spearman
from methods.unit_ablation import (ablated_predictions, accuracy_drops, class_correlation, class_selectivity,
                                   masked_accuracy, per_class_accuracy, unit_analysis, weight_l1)
from models import build_model


def _bn_resnet():
    torch.manual_seed(0)
    net = build_model("resnet20", num_classes=10).eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return net


@pytest.mark.golden
def test_ablating_nothing_reproduces_baseline_accuracy_exactly():
    net = _bn_resnet()
    x = torch.randn(40, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain_pred = net(x).argmax(1)
    y = plain_pred.clone()
    y[::3] = (y[::3] + 1) % 10                              # 14 of 40 labels wrong -> 26 correct
    assert int((plain_pred == y).sum()) == 26
    expected = 100.0 * 26 / 40
    assert masked_accuracy(net, x, y, "layer3", None, batch_size=16) == expected
    assert masked_accuracy(net, x, y, "layer3", torch.ones(64), batch_size=16) == expected
    base, abl = ablated_predictions(net, x, "layer3", 64, batch_size=16)
    assert torch.equal(base, plain_pred)
    zero_unit = torch.ones(64)
    zero_unit[7] = 0
    assert masked_accuracy(net, x, y, "layer3", zero_unit, batch_size=40) == 100.0 * int((abl[:, 7] == y).sum()) / 40


@pytest.mark.golden
def test_class_selectivity_and_correlation_hand_values():
    # unit 0: class means 3, 1, 1 -> CSI = (3 - 1) / (3 + 1) = 0.5; unit 1: equal means -> 0; unit 2: only class 2 -> 1
    acts = torch.tensor([[2.0, 1.0, 0.0], [4.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 5.0],
                         [1.0, 1.0, 3.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    csi, k = class_selectivity(acts, y, 3)
    torch.testing.assert_close(csi, torch.tensor([0.5, 0.0, 1.0], dtype=torch.float64))
    assert k.tolist()[0] == 0 and k.tolist()[2] == 2
    probs = torch.rand(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64).softmax(1)
    corr = class_correlation(acts, probs)
    for u in (0, 2):
        for c in range(3):
            assert corr[u, c].item() == pytest.approx(np.corrcoef(acts[:, u], probs[:, c])[0, 1], abs=1e-12)
    assert torch.isnan(corr[1]).all()                       # constant unit: undefined, not 0


@pytest.mark.golden
def test_per_class_drops_hand_values():
    y = torch.tensor([0, 0, 1, 1])
    base = torch.tensor([0, 0, 1, 0])                      # class 0: 100 %, class 1: 50 %, overall 75 %
    abl = torch.tensor([[0, 1], [1, 1], [1, 1], [0, 1]])  # unit 0 predicts 0,1,1,0; unit 1 predicts 1,1,1,1
    d = accuracy_drops(base, abl, y, 3)
    assert d["base_top1"] == 75.0
    torch.testing.assert_close(d["overall_drop"], torch.tensor([25.0, 25.0], dtype=torch.float64))
    torch.testing.assert_close(d["class_drop"][:, :2], torch.tensor([[50.0, 0.0], [100.0, -50.0]], dtype=torch.float64))
    assert torch.isnan(d["class_drop"][:, 2]).all()        # class 2 has no image
    torch.testing.assert_close(per_class_accuracy(base, y, 2), torch.tensor([100.0, 50.0], dtype=torch.float64))


def test_weight_l1_finds_incoming_and_outgoing_layers():
    net = build_model("lenet5", num_classes=10, in_channels=1, image_size=28)
    w = weight_l1(net, "pool2", 50, 16)
    assert (w["incoming_layer"], w["outgoing_layer"]) == ("conv2", "fc1")
    torch.testing.assert_close(w["weight_l1_in"], net.conv2.weight.detach().abs().sum((1, 2, 3)))
    torch.testing.assert_close(w["weight_l1_out"], net.fc1.weight.detach().abs().reshape(500, 50, 16).sum((0, 2)))
    r = build_model("resnet20", num_classes=10)
    w = weight_l1(r, "layer3", 64, 64)
    assert (w["incoming_layer"], w["outgoing_layer"]) == ("layer3.2.conv2", "fc")
    torch.testing.assert_close(w["weight_l1_out"], r.fc.weight.detach().abs().sum(0))


def test_correlation_helpers_match_scipy():
    from scipy import stats

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 6, 40).astype(float), rng.normal(size=40)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b)[0], abs=1e-12)
    assert pearson(a, b) == pytest.approx(stats.pearsonr(a, b)[0], abs=1e-12)
    lo, hi = bootstrap_ci(a, a + 0.1 * b, n=200)
    assert 0.8 < lo <= hi <= 1.0


def test_unit_analysis_on_a_bn_net():
    net = _bn_resnet()
    x = torch.randn(30, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = net(x).argmax(1)
    res = unit_analysis(net, x, y, "layer3", 10, batch_size=16, bootstrap=50)
    t = res["table"]
    assert res["base_top1"] == 100.0 and res["units"] == 64
    assert (t["max_class_drop"] >= t["overall_drop"] - 1e-9).all()   # some class loses at least the average
    csi = t["class_selectivity"][np.isfinite(t["class_selectivity"])]
    assert ((csi >= 0) & (csi <= 1)).all()                              # post-ReLU units: CSI in [0, 1]
    attrs = {(c["attribute"], c["target"]) for c in res["correlations"]}
    assert ("class_selectivity", "max_class_drop") in attrs and ("weight_l1_in", "overall_drop") in attrs


def test_quick_compress_copies():
    net = build_model("lenet5", num_classes=10, in_channels=1, image_size=28)
    before = net.conv1.weight.detach().clone()
    pruned, tag = quick_compress(net, {"kind": "prune", "amount": 0.5})
    assert tag == "prune50" and torch.equal(net.conv1.weight, before)        # the original is untouched
    for m in (pruned.conv1, pruned.conv2, pruned.fc1, pruned.fc2):
        assert int((m.weight == 0).sum()) == round(0.5 * m.weight.numel())
        assert torch.equal(m.weight_mask == 0, m.weight == 0)
    quant, tag = quick_compress(net, {"kind": "quant", "bits": 3})
    assert tag == "quant3" and quant.fc1.weight_bits == 3
    for row in quant.fc1.weight:
        assert len(torch.unique(row)) <= 7                                     # 2^(3-1)-1 = 3 levels each side + 0
    with pytest.raises(ValueError, match="method.compare.kind"):
        quick_compress(net, {"kind": "binarize"})


@pytest.mark.smoke
def test_unit_ablation_analyze_end_to_end(compose):
    from engine.analysis import run_analysis

    cfg = compose(["method=unit_ablation", "model=resnet20", "data=synthetic", "method.num_images=40",
                   "method.batch_size=20", "method.bootstrap=20", "method.compare={kind:prune,amount:0.5}"])
    out = run_analysis(cfg)
    rows = read_rows(out["results_csv"])
    assert [r["variant"] for r in rows] == ["layer3", "layer3|prune50"]
    assert rows[0]["method"] == "unit_ablation" and rows[0]["extra"]["units"] == 64
    assert float(rows[1]["sparsity"]) > 0.45                                   # the pruned copy is measured
    files = set(os.listdir(out["output_dir"]))
    assert {"unit_ablation.md", "units_fp.csv", "class_drops_prune50.csv", "unit_importance_shift.png"} <= files
    with open(os.path.join(out["output_dir"], "units_fp.csv")) as f:
        assert len(list(csv.DictReader(f))) == 64


@pytest.mark.smoke
def test_xgradcam_analyze_end_to_end(compose):
    from engine.analysis import run_analysis

    cfg = compose(["method=xgradcam", "model=resnet20", "data=synthetic", "method.num_images=6", "method.batch_size=3",
                   "method.sensitivity_images=2", "method.faithfulness_images=2", "method.steps=4",
                   "method.grid_images=2", "method.layers=[layer3,layer2]", "method.compare={kind:quant,bits:4}"])
    out = run_analysis(cfg)
    rows = read_rows(out["results_csv"])
    keys = {(r["method"], r["variant"]) for r in rows}
    assert ("xgradcam", "layer2") in keys and ("gradcampp", "layer3|quant4") in keys and ("random", "input") in keys
    assert len(rows) == 2 * (3 * 2 + 1)
    gap = next(r for r in rows if r["method"] == "xgradcam" and r["variant"] == "layer3")["extra"]
    assert gap["conservation_error_linear"] < 1e-4 and gap["sensitivity_error"] < 1e-4   # GAP + linear head
    assert {"xgradcam.md", "cam_scores.csv", "cam_grid_layer3.png", "cam_grid_layer2.png"} <= set(
        os.listdir(out["output_dir"]))


def test_bad_analysis_config_fails_naming_the_key(compose):
    from engine.analysis import run_analysis

    cfg = compose(["method=xgradcam", "model=resnet20", "data=synthetic", "method.methods=[xgradcam,scorecam]"])
    with pytest.raises(ValueError, match="method.methods"):
        run_analysis(cfg)


def test_even_subset_covers_a_class_sorted_split():
    from methods.common.cam import take_images

    y_all = torch.arange(10).repeat_interleave(10)                    # 100 labels sorted by class
    x_all = torch.arange(100.0)[:, None]
    batches = [(x_all[i:i + 7], y_all[i:i + 7]) for i in range(0, 100, 7)]
    x, y = take_images(batches, 10, total=100)
    assert y.tolist() == list(range(10)) and x[:, 0].tolist() == [10.0 * k for k in range(10)]
    x, y = take_images(batches, 10)                                   # no total: the first 10
    assert y.tolist() == [0] * 10


def test_seeds_pick_disjoint_image_sets():
    from methods.common.cam import take_images

    y_all = torch.arange(10).repeat_interleave(10)
    x_all = torch.arange(100.0)[:, None]
    batches = [(x_all[i:i + 7], y_all[i:i + 7]) for i in range(0, 100, 7)]
    picks = [set(take_images(batches, 20, total=100, offset=s)[0][:, 0].tolist()) for s in range(5)]
    assert picks[3] == {5.0 * k + 3 for k in range(20)}
    assert all(not (picks[a] & picks[b]) for a in range(5) for b in range(a + 1, 5))
    with pytest.raises(ValueError, match="seeds 0..4"):                # 20 of 100 leaves 5 disjoint sets
        take_images(batches, 20, total=100, offset=5)


def _saved_model(compose, tmp_path, name: str):
    """(lenet5 unit_ablation config on synthetic data, its data bundle, a ``name`` model, the file it is saved in)."""
    from data import build_data

    cfg = compose(["method=unit_ablation", "model=lenet5", "data=synthetic"])
    bundle = build_data(cfg.data, batch_size=8)
    model = build_model(name, num_classes=bundle.num_classes, in_channels=bundle.in_channels,
                        image_size=bundle.image_size)
    path = str(tmp_path / f"{name}.pt")
    torch.save({"model": model.state_dict()}, path)
    return cfg, bundle, model, path


def test_checkpoint_model_loads_a_bare_state_dict(compose, tmp_path):
    from engine.analysis import compressed_model, load_checkpoint_model

    cfg, bundle, src, path = _saved_model(compose, tmp_path, "lenet5")
    got = load_checkpoint_model(path, bundle, torch.device("cpu"), cfg)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), got.state_dict().values()))
    cfg.method.compare = {"kind": "checkpoint", "path": path, "tag": "mine"}
    model, tag = compressed_model(cfg, src, bundle, torch.device("cpu"))
    assert tag == "mine" and isinstance(model, type(src))
    cfg.method.compare = {"kind": "checkpoint"}
    with pytest.raises(ValueError, match="method.compare.path"):
        compressed_model(cfg, src, bundle, torch.device("cpu"))


def test_checkpoint_of_another_model_is_refused_naming_it(compose, tmp_path):
    from engine.checkpoint import CheckpointError
    from engine.analysis import load_checkpoint_model

    cfg, bundle, _, path = _saved_model(compose, tmp_path, "lenet300_100")
    with pytest.raises(CheckpointError, match=r"lenet300_100\.pt does not hold weights of model=lenet5"):
        load_checkpoint_model(path, bundle, torch.device("cpu"), cfg)
