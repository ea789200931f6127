"""Binary methods end to end through the engine (tiny synthetic data), every SD-BNN / IR²Net config, and export."""
import glob
import os

import pytest
import torch
from omegaconf import OmegaConf

from engine.binary_export import load_export, main as export_main
from engine.runner import build_backbone, run
from methods import RunContext, build_method
from methods.common.binary import binary_layers
from methods.common.multibase import multibase_layers
from methods.common.binary_export import export_binary, load_binary_export, read_export

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = sorted(os.path.relpath(p, os.path.join(ROOT, "conf", "experiment"))[:-5]
                     for pat in ("sd_bnn/*.yaml", "ir2net/*.yaml", "binary/*.yaml")
                     for p in glob.glob(os.path.join(ROOT, "conf", "experiment", pat)))
TINY = ["data=synthetic", "data.train_size=32", "data.test_size=16", "trainer.batch_size=8",
        "trainer.eval_batch_size=16", "trainer.epochs=1"]


def _build(cfg):
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    d = cfg.data
    ctx = RunContext(num_classes=d.num_classes, in_channels=d.in_channels, image_size=d.image_size,
                     device=torch.device("cpu"))
    method = build_method(cfg.method)
    return method, method.transform(build_backbone(cfg, d.num_classes, d.in_channels, d.image_size), ctx)


def _check_configs(compose, build_imagenet: bool):
    import yaml
    keys = set()
    for paper in ("sd_bnn", "ir2net"):
        with open(os.path.join(ROOT, "results", "reference", f"{paper}.yaml")) as f:
            keys |= {f"{paper}:{e['key']}" for e in yaml.safe_load(f)["entries"]}
    cited = set()
    for exp in EXPERIMENTS:
        cfg = compose([f"experiment={exp}"])
        assert cfg.paper in ("sd_bnn", "ir2net", "pa") and cfg.fidelity in ("paper", "reduced")
        if cfg.fidelity == "paper":
            assert cfg.reference.split(":")[0] == cfg.paper
            cited.add(cfg.reference)
        if cfg.data.name == "imagenet" and not build_imagenet:
            build_method(cfg.method)               # keys checked; the 11M-21M parameter model is built in the slow test
            continue
        method, model = _build(cfg)
        assert binary_layers(model) or multibase_layers(model) or cfg.method.name == "baseline", exp
    assert cited == keys          # one config per reference cell, each citing a real entry


def test_every_experiment_config_composes_and_builds(compose):
    _check_configs(compose, build_imagenet=False)


@pytest.mark.slow
def test_every_experiment_config_builds_imagenet_models_too(compose):
    _check_configs(compose, build_imagenet=True)


@pytest.mark.smoke
def test_headline_command_sd_bnn_resnet18(compose):
    """python train.py method=sd_bnn model=resnet18 (here on tiny synthetic data, 2 steps)."""
    cfg = compose(["method=sd_bnn", "model=resnet18", *TINY, "data.image_size=16", "trainer.max_steps=2"])
    metrics = run(cfg)
    assert metrics["steps"] == 2
    assert metrics["bops"] > 0 and metrics["extra"]["asd_modules"] == 16
    assert metrics["extra"]["w_bits"] == 1 and metrics["extra"]["a_bits"] == 1


@pytest.mark.smoke
def test_two_stage_w32a1_then_w1a1(compose, tmp_path, capsys):
    stages = ("method.stages=[{name: w32a1, binarize_weights: false, wsd: false},"
              "{name: w1a1, binarize_weights: true, wsd: true}]")
    cfg = compose(["method=sd_bnn", "model=resnet20", *TINY, "trainer.limit_batches=1", stages])
    metrics = run(cfg)
    assert metrics["steps"] == 2 and metrics["extra"]["w_bits"] == 1
    # each stage prints the table of what it trains: 32-bit weights / 1-bit activations, then 1/1
    out = capsys.readouterr().out
    w32a1 = out[out.index("[w32a1] complexity at stage start"):out.index("[w1a1] complexity at stage start")]
    w1a1 = out[out.index("[w1a1] complexity at stage start"):]
    conv = next(ln for ln in w32a1.splitlines() if ln.startswith("layer1.0.conv1 "))
    assert " 32/1 " in conv
    assert " 1/1 " in next(ln for ln in w1a1.splitlines() if ln.startswith("layer1.0.conv1 "))
    stage1 = glob.glob(str(tmp_path / "outputs" / "*" / "*" / "stage0-w32a1" / "trained.pt"))
    state = torch.load(stage1[0], weights_only=True)["model"]
    flags = [v for k, v in state.items() if k.endswith("binary_flags")]
    assert flags and all(f.tolist() == [False, True] for f in flags)      # stage 1: W32A1
    assert all(not v for k, v in state.items() if k.endswith("weight_pre.active"))


@pytest.mark.smoke
def test_irnet_ede_schedule_advances_per_epoch(compose):
    cfg = compose(["method=irnet", "model=resnet20", *TINY, "trainer.epochs=2", "trainer.limit_batches=1"])
    metrics = run(cfg)
    # after the last epoch the schedule has reached epoch 2 of 2: t = Tmax = 10, k = 1
    assert metrics["extra"]["ede_t"] == pytest.approx(10.0) and metrics["extra"]["ede_k"] == 1.0


@pytest.mark.smoke
def test_ir2net_runs_and_export_cli_roundtrip(compose, tmp_path):
    cfg = compose(["method=ir2net", "model=resnet20", *TINY, "trainer.max_steps=2"])
    metrics = run(cfg)
    assert 0 < metrics["extra"]["restriction_kept_fraction"] <= 1
    final = glob.glob(str(tmp_path / "outputs" / "*" / "*" / "final.pt"))[0]
    out = str(tmp_path / "model.crbin")
    assert export_main([final, out]) == 0
    header, _ = read_export(out)
    model = load_export(out).eval()                      # rebuilt from the run config in the header
    blob = torch.load(final, weights_only=True)
    _, ref = _build(OmegaConf.create(blob["config"]))
    ref.load_state_dict(blob["model"])
    ref.eval()
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(model(x), ref(x))
    assert os.path.getsize(out) < os.path.getsize(final)


@pytest.mark.parametrize("method_name", ["bnn", "xnor", "bireal", "irnet", "sd_bnn", "ir2net"])
def test_export_packs_bits_and_reloads_exactly(method_name, tmp_path, compose):
    from core.complexity import measure
    cfg = compose([f"method={method_name}", "model=resnet20", "data=fashion_mnist"])
    torch.manual_seed(0)
    _, model = _build(cfg)
    model.train()
    model(torch.randn(8, 1, 28, 28))                      # move BN statistics away from their init
    model.eval()
    x = torch.randn(4, 1, 28, 28)
    path = str(tmp_path / "m.crbin")
    acct = export_binary(model, path)
    size_bits = measure(model, (1, 28, 28)).size_bits
    # parameters on disk = the counted size, up to < 8 padding bits per packed layer
    assert 0 <= acct["param_bytes"] * 8 - size_bits < 8 * acct["binary_layers"]
    assert acct["binary_layers"] == 18 and acct["binary_weights"] == 267_264
    assert os.path.getsize(path) == acct["file_bytes"]
    assert os.path.getsize(path) == (acct["header_bytes"] + acct["param_bytes"] + acct["scale_bytes"]
                                     + acct["buffer_bytes"])
    torch.manual_seed(1)
    _, fresh = _build(cfg)
    reloaded = load_binary_export(path, fresh, packed=False).eval()   # the float +-1 path (packed: test_packed_binary)
    assert torch.equal(reloaded(x), model(x))
    assert all(m.frozen for m in binary_layers(reloaded))


def test_binary_backbones_selectable_as_models(compose):
    for name in ("bireal_resnet20", "bireal_resnet18", "binary_vgg_small"):
        cfg = compose([f"model={name}", "method=bnn", "data=synthetic"])
        _, model = _build(cfg)
        assert model.arch_name == name and len(binary_layers(model)) in (18, 16, 5)
        assert binary_layers(model)[0].act_estimator == "clipped"        # the method's spec, not the default


def test_binary_backbone_keeps_its_model_options(compose):
    cfg = compose(["model=bireal_resnet20", "model.downsample=B", "method=irnet", "data=synthetic"])
    _, model = _build(cfg)
    assert type(model.layer2[0].shortcut[0]) is torch.nn.Conv2d          # option B, kept FP (fp_downsample)


@pytest.mark.smoke
def test_ir2net_erased_pass_gets_the_teacher_through_the_trainer(compose, monkeypatch):
    """Official ImageNet recipe: KD to the teacher on both passes. The trainer hands its task loss (with the
    teacher's logits of the batch) to the method, so kd_loss runs twice per step."""
    import engine.tasks as tasks
    calls = []
    real = tasks.kd_loss
    monkeypatch.setattr(tasks, "kd_loss", lambda s, t, temp: calls.append(s.shape) or real(s, t, temp))
    cfg = compose(["method=ir2net", "model=resnet20", *TINY, "trainer.max_steps=1", "trainer.distill.teacher=resnet20",
                   "trainer.distill.teacher_pretrained=false"])
    metrics = run(cfg)
    assert metrics["steps"] == 1 and len(calls) == 2 and calls[0] == calls[1]
