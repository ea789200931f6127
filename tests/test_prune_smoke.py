"""DCFF, UCP and L1 pruning run end to end through the engine (2 steps, synthetic data) and rebuild
from their saved state the way evaluate.py does."""
import pytest
import torch

from engine.runner import run

TINY = ["data=synthetic", "trainer.max_steps=2", "trainer.batch_size=16", "trainer.eval_batch_size=64",
        "trainer.limit_eval_batches=1", "method.latency.repeats=1", "method.latency.warmup=0",
        "method.latency.batch_sizes=[1,2]"]


def _rebuild(compose, metrics, overrides, out_dir):
    """evaluate.py's path: fresh backbone -> method state -> transform -> load the final weights."""
    import glob

    from engine import checkpoint
    from engine.runner import build_backbone
    from methods import RunContext, build_method
    cfg = compose(overrides)
    final = glob.glob(f"{out_dir}/outputs/**/final.pt", recursive=True)
    assert len(final) == 1
    blob = checkpoint.load(final[0])
    model = build_backbone(cfg, 10, 3, 32)
    method = build_method(cfg.method)
    method.load_state_dict(blob["method"])
    model = method.transform(model, RunContext(num_classes=10, in_channels=3, image_size=32, device=torch.device("cpu")))
    model.load_state_dict(blob["model"])
    assert sum(p.numel() for p in model.parameters()) == metrics["params"]
    return model


@pytest.mark.smoke
def test_dcff_runs_and_exports_compact(compose, tmp_path):
    ov = ["model=resnet20", "method=dcff", "method.cprate='[0.5]*9+[0.3]*3'", "trainer.epochs=2", *TINY]
    m = run(compose(ov))
    extra = m["extra"]
    assert extra["channel_config"]["groups"]["layer1.0.conv1"] == 8
    assert extra["channel_config"]["groups"]["layer3"] == 44      # int(64 * 0.7)
    assert extra["compact_params"] == m["params"] < extra["dense_params"]
    assert 0 < extra["flops_reduction_pct"] < 100 and extra["speedup_b1"] > 0 and extra["latency_threads"] >= 1
    _rebuild(compose, m, ov, tmp_path)


@pytest.mark.smoke
def test_dcff_without_cprate_fails_naming_the_key(compose):
    with pytest.raises(ValueError, match="method.cprate"):
        run(compose(["model=resnet20", "method=dcff", *TINY]))


@pytest.mark.smoke
def test_ucp_runs_both_stages_and_rebuilds(compose, tmp_path):
    ov = ["model=resnet20", "method=ucp", "method.score_batches=2", *TINY]
    m = run(compose(ov))
    groups = m["extra"]["channel_config"]["groups"]
    for stage in ("layer1", "layer2", "layer3"):
        widths = {k for n, k in groups.items() if n.startswith(stage + ".") and n.endswith("conv1")}
        assert len(widths) == 1                              # uniform per stage
    assert groups["layer3"] == 64 and m["params"] == m["extra"]["compact_params"] < m["extra"]["dense_params"]
    _rebuild(compose, m, ov, tmp_path)


@pytest.mark.smoke
def test_l1_prune_matches_dcff_architecture_and_flops_target(compose, tmp_path):
    rates = "'[0.7]*2+[0.5]*3+[0.3]*2+[0.4]+[0.8]+[0.7]*2+[0.8]*4+[0.4]+[0.2]*2+[0.7]+[0.3]+[0.8]+[0.4]*2+[0.7]+[0.3]+[0.4]+[0.8]+[0.0]*3'"
    ov = ["model=resnet56", "method=l1_prune", f"method.rates={rates}", "method.latency.enabled=false", *TINY]
    m = run(compose(ov))
    assert m["extra"]["channel_config"]["groups"]["layer1.0.conv1"] == 4      # int(16 * 0.3)
    assert m["extra"]["channel_config"]["groups"]["layer3.8.conv1"] == 12
    _rebuild(compose, m, ov, tmp_path)
    m2 = run(compose(["model=resnet20", "method=l1_prune", "method.flops_reduction=0.3",
                      "method.latency.enabled=false", *TINY]))
    assert 30.0 <= m2["extra"]["flops_reduction_pct"] < 33.0


def _experiments():
    import glob
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return sorted(os.path.relpath(p, os.path.join(root, "conf", "experiment"))[:-5]
                  for d in ("dcff", "ucp") for p in glob.glob(os.path.join(root, "conf", "experiment", d, "*.yaml")))


@pytest.mark.parametrize("name", _experiments())
def test_experiment_files_compose_and_build_their_method(compose, name):
    from engine.config import validate
    from methods import build_method
    cfg = compose([f"experiment={name}"])
    validate(cfg)
    assert cfg.paper in ("dcff", "ucp") and cfg.fidelity in ("paper", "reduced")
    if cfg.method.name == "dcff" and cfg.method.cprate is None:
        with pytest.raises(ValueError, match="method.cprate"):
            build_method(cfg.method)
        return
    method = build_method(cfg.method)
    assert method.family == ("baseline" if cfg.method.name == "baseline" else "prune")


@pytest.mark.smoke
@pytest.mark.parametrize("experiment", ["dcff/cifar10_jpeg_resnet56_scratch", "dcff/cifar10_jpeg_resnet56_l1_scratch",
                                        "ucp/cifar10_jpeg_resnet56_select_random",
                                        "ucp/cifar10_jpeg_resnet56_scratch_uniform"])
def test_issue15_rerun_cells_run(compose, tmp_path, experiment):
    """The issue-15 rerun files run through the engine (synthetic data, 2 steps per stage, latency on: the row's
    latency_ms and latency_device are filled)."""
    from engine.results import read_rows
    paper = experiment.split("/")[0]
    metrics = run(compose([f"experiment={experiment}", *TINY, "trainer.limit_batches=2", "method.score_batches=1",
                           "trainer.latency=true"] if paper == "ucp" else
                          [f"experiment={experiment}", *TINY, "trainer.limit_batches=2", "trainer.latency=true"]))
    row = read_rows(str(tmp_path / "results" / f"{paper}.csv"))[-1]
    assert float(row["latency_ms"]) > 0 and "1 threads" in row["latency_device"]
    assert metrics["extra"]["flops_reduction_pct"] > 0
    if experiment == "dcff/cifar10_jpeg_resnet56_scratch":
        assert metrics["extra"]["score_rule"] == "official"
    if experiment.endswith("uniform"):
        assert metrics["extra"]["allocation"] == "uniform" and "uniform_flops_share" in metrics["extra"]
