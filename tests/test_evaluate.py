import os

import pytest

from conftest import has_shared
from engine.evaluator import evaluate_checkpoint
from engine.results import read_rows
from engine.runner import run, run_dir

TINY = ["data=synthetic", "data.train_size=128", "data.test_size=64", "model=resnet20", "trainer.batch_size=32",
        "trainer.epochs=1"]


def test_checkpoint_re_evaluates_to_the_same_accuracy_and_complexity(compose):
    cfg = compose(TINY)
    trained = run(cfg)
    ckpt = os.path.join(run_dir(cfg), "final.pt")
    ecfg = compose([f"checkpoint={ckpt}", "model=lenet5"], config_name="evaluate")   # model comes from the checkpoint
    metrics = evaluate_checkpoint(ecfg)
    assert metrics["top1"] == trained["top1"] and metrics["macs"] == trained["macs"] == 40_551_040
    rows = read_rows(os.path.join(cfg.paths.results_dir, "synthetic_resnet20_baseline.csv"))
    assert len(rows) == 2 and rows[1]["steps"] == "0" and rows[1]["extra"]["evaluated"] == ckpt


def test_re_evaluation_measures_latency_into_its_row_when_asked(compose):
    small = ["model=lenet300_100", "data.in_channels=1", "data.image_size=8", "data.mean=[0.5]", "data.std=[0.25]"]
    cfg = compose(TINY + small)
    run(cfg)
    ecfg = compose([f"checkpoint={os.path.join(run_dir(cfg), 'final.pt')}", "trainer.latency=true"],
                   config_name="evaluate")
    metrics = evaluate_checkpoint(ecfg)
    trained_row, evaluated_row = read_rows(os.path.join(cfg.paths.results_dir, "synthetic_lenet300_100_baseline.csv"))
    assert trained_row["latency_ms"] == ""                              # the run did not ask for it
    assert float(evaluated_row["latency_ms"]) == metrics["extra"]["latency"]["latency_ms"] > 0
    assert "threads, batch 1" in evaluated_row["latency_device"]


def test_missing_checkpoint_is_named(compose):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        evaluate_checkpoint(compose(["checkpoint=nowhere.pt"], config_name="evaluate"))


@pytest.mark.skipif(not has_shared("cifar10-jpeg"), reason="../shared/data/cifar10-jpeg not present")
def test_pretrained_resnet20_on_jpeg_test_subset(compose):
    cfg = compose(["data=cifar10_jpeg", "model=resnet20", "model.pretrained=true", "data.test_subset=500",
                   "data.train_subset=10"], config_name="evaluate")
    metrics = evaluate_checkpoint(cfg)
    # published 91.73 % on real CIFAR-10; the JPEG mirror costs about 10 points (81.0 % on the full split)
    assert 74.0 < metrics["top1"] < 88.0


def test_evaluate_dispatches_analysis_methods(compose):
    import evaluate
    cfg = compose(["method=xgradcam", "data=synthetic", "data.test_size=32", "model=resnet20", "method.num_images=8",
                   "method.batch_size=8", "method.sensitivity_images=2", "method.faithfulness_images=2",
                   "method.steps=2", "method.grid_images=2", "method.methods=[xgradcam]"], config_name="evaluate")
    top1 = evaluate.analyse(cfg)
    assert 0.0 <= top1 <= 100.0
    csvs = [f for f in os.listdir(cfg.paths.results_dir) if f.endswith(".csv")]
    rows = [r for f in csvs for r in read_rows(os.path.join(cfg.paths.results_dir, f))]
    assert rows and all(r["experiment"] == "synthetic_resnet20_xgradcam" and r["fidelity"] for r in rows)


def test_a_rebuilt_model_gets_the_engines_evaluation_in_its_context(compose, monkeypatch):
    """evaluate.py, the analysis pipeline and the binary export rebuild through transformed_model: a transform that
    evaluates (ACP's detection fitness) gets the same RunContext.evaluate as in a run, on the given device."""
    import torch

    from data import build_data
    from engine.runner import transformed_model
    from methods.base import Method
    seen = {}

    def transform(self, model, ctx):
        seen["ctx"] = ctx
        return model
    monkeypatch.setattr(Method, "transform", transform)
    cfg = compose(TINY + ["method=baseline"])
    data = build_data(cfg.data, batch_size=32, device=torch.device("cpu"))
    model, _ = transformed_model(cfg, data.num_classes, data.in_channels, data.image_size, torch.device("cpu"))
    result = seen["ctx"].evaluate(model, data.test, limit_batches=1)
    assert result["samples"] == 32 and 0.0 <= result["top1"] <= 100.0
