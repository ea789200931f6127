"""Configs of the low-rank papers compose, and the complexity of the official TT ranks is reproduced exactly
(values read from results/reference/tt_admm.yaml; nothing typed here)."""
import os

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from core.complexity import measure
from methods import RunContext, build_method
from methods.common.decomposition import TTConv2d
from models import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = sorted(f"{p}/{f[:-5]}" for p in ("tt_admm", "cc")
                     for f in os.listdir(os.path.join(ROOT, "conf", "experiment", p)) if f.endswith(".yaml"))


def cfg_for(experiment: str):
    with initialize_config_dir(config_dir=os.path.join(ROOT, "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=[f"experiment={experiment}", "logger=none"])


def reference(paper: str, key: str) -> dict:
    with open(os.path.join(ROOT, "results", "reference", f"{paper}.yaml")) as f:
        ref = yaml.safe_load(f)
    return next(e for e in ref["entries"] if e["key"] == key)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_names_an_existing_reference(experiment):
    cfg = cfg_for(experiment)
    paper, key = cfg.reference.split(":")
    assert paper == cfg.paper and reference(paper, key)["key"] == key
    assert cfg.fidelity in ("paper", "reduced", "smoke")
    build_method(cfg.method)          # validates keys and stages


@pytest.mark.parametrize("experiment,key,num_classes,size", [
    ("tt_admm/cifar10_resnet32_3x", "cifar10_resnet32_tt_ft_3x", 10, 32),
    ("tt_admm/imagenet_resnet18", "imagenet_resnet18_tt_special_ft", 1000, 224),
])
def test_official_ranks_reproduce_parameter_counts_exactly(experiment, key, num_classes, size):
    cfg = cfg_for(experiment)
    expect = reference("tt_admm", key)["metrics"]
    model = build_model(cfg.model.name, num_classes=num_classes, image_size=size)
    method = build_method(cfg.method)
    ctx = RunContext(num_classes=num_classes, in_channels=3, image_size=size, device=torch.device("cpu"))
    dense = measure(model, (3, size, size))
    model = method.tt_structure(method.transform(model, ctx))
    tt_params = sum(p.numel() for m in model.modules() if isinstance(m, TTConv2d) for p in m.parameters())
    assert tt_params == expect["tt_params"]["value"]
    counted = measure(model, (3, size, size))
    assert dense.params - counted.params == expect["decomposed_dense_params"]["value"] - expect["tt_params"]["value"]
    metrics = method.metrics(model)
    assert metrics["tt_params"] == expect["tt_params"]["value"]
    assert metrics["decomposed_dense_params"] == expect["decomposed_dense_params"]["value"]
    assert round(metrics["compression_ratio_decomposed"], 2) == expect["compression_ratio_decomposed"]["value"]
    assert metrics["macs_from_ranks"] == counted.macs          # MACs from the ranks = the engine's count


def test_auto_ranks_reach_the_abstract_ratio():
    cfg = cfg_for("tt_admm/cifar100_resnet20")
    want = reference("tt_admm", "cifar100_resnet20_tt_admm")["metrics"]["compression_ratio"]["value"]
    model = build_model("resnet20", num_classes=100)
    method = build_method(cfg.method)
    ctx = RunContext(num_classes=100, in_channels=3, image_size=32, device=torch.device("cpu"))
    dense = measure(model, (3, 32, 32)).params
    model = method.tt_structure(method.transform(model, ctx))
    ratio = dense / measure(model, (3, 32, 32)).params
    assert want <= ratio < want + 0.05
    assert method.metrics(model)["compression_ratio"] == pytest.approx(ratio, rel=1e-12)


def test_bad_method_config_names_the_key():
    cfg = cfg_for("tt_admm/cifar100_resnet20")
    cfg.method.layout = "diagonal"
    model = build_model("resnet20", num_classes=100)
    with pytest.raises(ValueError, match="method.layout"):
        build_method(cfg.method).transform(model, RunContext(100, 3, 32, torch.device("cpu")))
    cfg = cfg_for("cc/cifar10_resnet56")
    cfg.method.com_ops = ["pruning", "quantize"]
    with pytest.raises(ValueError, match="method.com_ops"):
        build_method(cfg.method)
