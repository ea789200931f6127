import glob
import math
import os

import pytest
import torch
from omegaconf import OmegaConf

from engine import checkpoint
from engine.optim import lr_factor
from engine.results import read_rows
from engine.runner import run, run_dir
from engine.trainer import NonFiniteLossError
from methods.common.distill import kd_loss

TINY = ["data=synthetic", "data.train_size=256", "data.test_size=128", "model=resnet20", "trainer.batch_size=32",
        "trainer.eval_batch_size=128", "trainer.optimizer.lr=0.05", "trainer.epochs=2", "trainer.limit_batches=3"]


def test_smoke_run_trains_records_and_checkpoints(compose):
    cfg = compose(TINY)
    metrics = run(cfg)
    assert 0 <= metrics["top1"] <= 100 and metrics["steps"] == 6 and metrics["params"] == 269_722
    rows = read_rows(os.path.join(cfg.paths.results_dir, "synthetic_resnet20_baseline.csv"))
    assert len(rows) == 1 and rows[0]["fidelity"] == "adhoc" and rows[0]["model"] == "resnet20"
    assert float(rows[0]["top1"]) == pytest.approx(metrics["top1"])
    for col in ("git_sha", "config_hash", "torch_version", "device", "counter", "command"):
        assert rows[0][col], col
    final = checkpoint.load(os.path.join(run_dir(cfg), "final.pt"))
    assert final["config"]["model"]["name"] == "resnet20"


def test_a_finished_run_is_not_rerun_or_recorded_twice(compose):
    cfg = compose(TINY + ["trainer.epochs=1"])
    first = run(cfg)
    second = run(compose(TINY + ["trainer.epochs=1"]))
    assert second["top1"] == first["top1"]
    assert len(read_rows(os.path.join(cfg.paths.results_dir, "synthetic_resnet20_baseline.csv"))) == 1


def test_resume_after_a_kill_equals_an_uninterrupted_run(compose, monkeypatch):
    overrides = TINY + ["trainer.epochs=3", "seed=5"]
    reference = run(compose(overrides + ["paths.output_dir=${paths.results_dir}/../straight"]))

    from conftest import kill_at_evaluation
    restore = kill_at_evaluation(monkeypatch, 2)   # the run dies during epoch 2's evaluation (epoch 1 is checkpointed)
    with pytest.raises(KeyboardInterrupt):
        run(compose(overrides))
    restore()
    resumed = run(compose(overrides))
    assert resumed["top1"] == reference["top1"] and resumed["loss"] == pytest.approx(reference["loss"], abs=0, rel=0)
    assert resumed["steps"] == reference["steps"] == 9


def test_nonfinite_loss_stops_with_message_and_saved_state(compose):
    cfg = compose(TINY + ["trainer.optimizer.lr=1.0e30", "trainer.limit_batches=8", "model=lenet300_100",
                          "trainer.optimizer.momentum=0.0"])
    with pytest.raises(NonFiniteLossError, match=r"loss became (nan|inf).*state saved to .*nonfinite_state.pt"):
        run(cfg)
    assert os.path.exists(os.path.join(run_dir(cfg), "stage0-train", "nonfinite_state.pt"))


def test_max_steps_and_stages_from_method_config(compose):
    cfg = compose(TINY + ["trainer.max_steps=2"])
    OmegaConf.set_struct(cfg, False)
    cfg.method.stages = [{"name": "warm", "trainer": {"optimizer": {"lr": 0.01}}}, {"name": "main"}]
    metrics = run(cfg)
    assert metrics["steps"] == 4
    assert os.path.exists(os.path.join(run_dir(cfg), "stage1-main", "trained.pt"))


def test_distillation_from_a_teacher_runs(compose):
    metrics = run(compose(TINY + ["trainer.distill.teacher=resnet20", "trainer.distill.teacher_pretrained=false",
                                  "trainer.max_steps=2", "model=resnet20"]))
    assert metrics["steps"] == 2


def test_kd_loss_closed_form():
    s, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    p = torch.softmax(t / 2, 1)
    q = torch.softmax(s / 2, 1)
    expected = (p * (p.log() - q.log())).sum() * 4
    assert kd_loss(s, t, 2.0).item() == pytest.approx(expected.item(), rel=1e-6)
    assert kd_loss(s, s, 3.0).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("sched,step,expected", [
    ({"name": "cosine", "warmup_epochs": 0}, 50, 0.5),
    ({"name": "cosine", "warmup_epochs": 1}, 4, 0.5),                   # warmup: (4+1)/10
    ({"name": "step", "step_size": 3, "gamma": 0.1}, 35, 0.1),           # epoch 3.5 -> one decay
    ({"name": "step", "step_size": 3, "gamma": 0.1}, 65, 0.01),          # epoch 6.5 -> two
    ({"name": "multistep", "milestones": [2, 5], "gamma": 0.5}, 55, 0.25),
    ({"name": "linear"}, 25, 0.75),
    ({"name": "inv", "gamma": 1e-4, "power": 0.75}, 100, (1 + 1e-2) ** -0.75),
    ({"name": "constant"}, 99, 1.0),
])
def test_schedule_values(sched, step, expected):
    cfg = OmegaConf.merge({"warmup_epochs": 0, "gamma": 0.1, "power": 0.75, "step_size": 30, "milestones": [],
                           "min_lr_scale": 0.0}, sched)
    assert lr_factor(cfg, step, steps_per_epoch=10, total_steps=100) == pytest.approx(expected)


def test_onecycle_rises_then_falls():
    cfg = OmegaConf.create({"name": "onecycle", "warmup_epochs": 0, "min_lr_scale": 0.0})
    values = [lr_factor(cfg, s, 10, 100) for s in range(100)]
    peak = values.index(max(values))
    assert 25 <= peak <= 32 and values[0] < 0.1 and values[-1] < 0.01 and math.isclose(max(values), 1.0, rel_tol=0.02)


@pytest.mark.smoke
def test_default_composition_runs_on_real_mnist(compose):
    from conftest import has_shared
    if not has_shared("MNIST/raw"):
        pytest.skip("../shared/data/MNIST not present")
    cfg = compose(["trainer.max_steps=5", "trainer.limit_eval_batches=2"])
    assert (cfg.data.name, cfg.model.name, cfg.method.name) == ("mnist", "lenet5", "baseline")
    metrics = run(cfg)
    assert metrics["steps"] == 5 and metrics["macs"] == 2_293_000


def test_latency_is_measured_into_the_row_when_asked(compose):
    cfg = compose(TINY + ["trainer.max_steps=1", "trainer.latency=true", "model=lenet300_100", "data.in_channels=1",
                          "data.image_size=8", "data.mean=[0.5]", "data.std=[0.25]"])
    metrics = run(cfg)
    row = read_rows(os.path.join(cfg.paths.results_dir, "synthetic_lenet300_100_baseline.csv"))[0]
    assert float(row["latency_ms"]) > 0 and "threads" in row["latency_device"]
    lat = metrics["extra"]["latency"]
    assert lat["latency_ms_b64"] > 0 and lat["repeats"] >= 30
    assert 0 < lat["latency_ms_min"] <= lat["latency_ms"] and 0 < lat["latency_ms_min_b64"] <= lat["latency_ms_b64"]


def test_continuing_a_checkpoint_keeps_its_input_normalisation(compose, tmp_path):
    """A run started from a suite checkpoint (trainer.init_checkpoint) normalises inputs as that checkpoint was
    trained, also through scripts/export_sparse.py; a plain state dict leaves the data group's values alone."""
    import importlib.util
    first = compose(TINY + ["trainer.epochs=1", "data.mean=[0.2,0.3,0.4]", "data.std=[0.5,0.6,0.7]",
                            "model=lenet300_100", "name=first"])
    run(first)
    src = os.path.join(run_dir(first), "final.pt")
    spec = importlib.util.spec_from_file_location("export_sparse", os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "export_sparse.py"))
    export_sparse = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export_sparse)
    exported = str(tmp_path / "exported.pt")
    export_sparse.export(src, exported)
    plain = str(tmp_path / "plain.pt")
    torch.save(checkpoint.load(src)["model"], plain)
    for init, want in ((src, [0.2, 0.3, 0.4]), (exported, [0.2, 0.3, 0.4]), (plain, None)):
        cfg = compose(TINY + ["trainer.epochs=1", "model=lenet300_100", f"trainer.init_checkpoint={init}",
                              f"name=from_{os.path.basename(init)[:-3]}"])
        default_mean = list(cfg.data.mean)
        run(cfg)
        (final,) = glob.glob(   # the run's directory is named by the hash of the config it actually ran
            os.path.join(os.path.dirname(run_dir(cfg)), "*", "final.pt"))
        saved = checkpoint.load(final)["config"]["data"]
        assert list(saved["mean"]) == pytest.approx(want or default_mean), init
        if want:
            assert list(saved["std"]) == pytest.approx([0.5, 0.6, 0.7])


@pytest.mark.parametrize("failure", ["bad stage key", "transform"])
def test_a_run_that_fails_after_starting_its_logger_closes_it(compose, monkeypatch, failure):
    """A bad stage trainer key fails before the logger (and its W&B run) starts; a method whose transform raises
    fails after, and the logger is still finished."""
    from engine import runner
    from engine.loggers import NullLogger
    from methods.baseline import Baseline
    started, finished = [], []

    class Recorder(NullLogger):
        def __init__(self):
            started.append(True)

        def finish(self):
            finished.append(True)

    monkeypatch.setattr(runner, "build_logger", lambda *a, **k: Recorder())
    if failure == "transform":
        monkeypatch.setattr(Baseline, "transform", lambda self, model, ctx: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            run(compose(TINY))
        assert started == finished == [True]
    else:
        with pytest.raises(Exception, match="nosuchkey"):
            run(compose(TINY + ["+method.stages=[{name: train, trainer: {nosuchkey: 1}}]"]))
        assert started == finished == []
