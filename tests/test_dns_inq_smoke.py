"""DNS / INQ / DNS->INQ through the real engine on synthetic data (seconds), and every experiment file composes."""
import glob
import os

import pytest
import torch

from engine import checkpoint
from engine.results import read_rows
from engine.runner import run
from methods import build_method

pytestmark = pytest.mark.smoke
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["data=synthetic", "data.train_size=256", "data.test_size=128", "trainer.eval_batch_size=128"]


def final_state(metrics_dir):
    (path,) = glob.glob(os.path.join(metrics_dir, "**", "final.pt"), recursive=True)
    return checkpoint.load(path)


def test_dns_run_writes_masks_and_compression(compose, tmp_path):
    cfg = compose(["experiment=dns/mnist_lenet5", *SMALL, "trainer.max_steps=3", "trainer.epochs=1",
                   "method.per_layer.conv1.c_rate=0.0", "trainer.init_checkpoint=null"])   # the file's start is MNIST
    out = run(cfg)
    extra = out["extra"]
    assert extra["params_conv_fc"] == out["params"]
    assert extra["compression_ratio"] == pytest.approx(out["params"] / extra["nonzero_conv_fc"])
    assert out["nonzero_params"] == extra["nonzero_conv_fc"]      # folded: the counter sees the same zeros
    assert 0 < extra["remaining_pct_conv1"] < 100
    state = final_state(str(tmp_path / "outputs"))["model"]
    assert "conv1.weight_mask" in state and state["conv1.dns_stats"][2] > 0
    (row,) = read_rows(str(tmp_path / "results" / "dns.csv"))
    assert row["reference"] == "dns:lenet5_dns" and row["method"] == "dns"


def test_inq_run_ends_with_every_weight_in_the_set(compose):
    cfg = compose(["experiment=inq/mnist_lenet5_2bit", *SMALL, "method.stage_trainer.max_steps=2",
                   "trainer.init_checkpoint=null"])   # the file's float start is an MNIST model
    out = run(cfg)
    extra = out["extra"]
    assert extra["inq_all_in_set"] is True and extra["bits_per_weight"] == 2
    assert extra["inq_portions"] == [0.2, 0.4, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.975, 1.0]
    assert extra["fp_top1"] is not None
    assert all(v["levels_used"] <= 2 for v in extra["inq_layers"].values())   # ternary: {0, 2^n1} in |w|
    # complexity: every conv/fc weight at 2 bits, biases at 32
    assert out["size_bits"] == 2 * (out["params"] - (20 + 50 + 500 + 10)) + 32 * (20 + 50 + 500 + 10)
    assert out["steps"] == 9 * 2


def test_dns_inq_pipeline(compose):
    cfg = compose(["experiment=inq/mnist_lenet5_dns_inq", *SMALL, "trainer.max_steps=2", "trainer.init_checkpoint=null",
                   "method.stages.0.trainer.max_steps=3", "method.dns.per_layer.conv1.c_rate=0.0"])
    out = run(cfg)
    extra = out["extra"]
    assert extra["inq_all_in_set"] is True and extra["bits_per_weight"] == 5
    assert extra["compression_ratio"] > 1
    assert extra["sparse_storage_ratio"] > extra["compression_ratio"]
    assert out["steps"] == 3 + 3 * 2


def test_engine_resume_repeats_uninterrupted_dns(compose, tmp_path, monkeypatch):
    common = ["experiment=dns/mnist_lenet5", *SMALL, "trainer.epochs=2", "trainer.limit_batches=3",
              "trainer.max_steps=null", "method.gamma=0.2", "method.per_layer.conv1.c_rate=0.0",
              "trainer.init_checkpoint=null"]
    ref = run(compose(common + [f"paths.output_dir={tmp_path}/a"]))
    from methods.dns import DNS
    original = DNS.after_step

    def crash(self, model, step):
        original(self, model, step)
        if step == 4:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(DNS, "after_step", crash)
    with pytest.raises(KeyboardInterrupt):
        run(compose(common + [f"paths.output_dir={tmp_path}/b"]))
    monkeypatch.setattr(DNS, "after_step", original)
    resumed = run(compose(common + [f"paths.output_dir={tmp_path}/b"]))
    a, b = final_state(str(tmp_path / "a"))["model"], final_state(str(tmp_path / "b"))["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed["extra"]["dns"]["fc1"]["updates"] == ref["extra"]["dns"]["fc1"]["updates"]


EXPERIMENTS = sorted(glob.glob(os.path.join(ROOT, "conf/experiment/dns/*.yaml")) +
                     glob.glob(os.path.join(ROOT, "conf/experiment/inq/*.yaml")))


@pytest.mark.slow
def test_every_experiment_composes_and_builds(tmp_path):
    """Every dns/ and inq/ experiment composes, cites an existing reference key and builds its stages (~25 s: slow)."""
    import yaml
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    keys = {}
    for paper in ("dns", "inq"):
        with open(os.path.join(ROOT, "results/reference", f"{paper}.yaml")) as f:
            keys[paper] = {e["key"] for e in yaml.safe_load(f)["entries"]}
    cited = set()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=os.path.join(ROOT, "conf"), version_base="1.3"):
        for path in EXPERIMENTS:
            stem = os.path.relpath(path, os.path.join(ROOT, "conf/experiment"))[:-5]
            cfg = compose("config", overrides=[f"experiment={stem}", f"paths.output_dir={tmp_path}"])
            assert cfg.paper in ("dns", "inq") and cfg.fidelity in ("paper", "reduced"), stem
            assert cfg.name == os.path.basename(stem), stem
            if cfg.reference:
                paper, key = cfg.reference.split(":")
                assert key in keys[paper], f"{stem}: reference {cfg.reference} not in results/reference/{paper}.yaml"
                cited.add(cfg.reference)
            assert build_method(cfg.method).stages(), stem
    GlobalHydra.instance().clear()
    # every runnable-anywhere cell of our methods has a config, the released models' evaluations included
    # (compared methods excepted)
    with open(os.path.join(ROOT, "results/reference/inq.yaml")) as f:
        own = {f"inq:{e['key']}" for e in yaml.safe_load(f)["entries"] if e["method"] in ("inq", "dns_inq", "baseline")}
    with open(os.path.join(ROOT, "results/reference/dns.yaml")) as f:
        own |= {f"dns:{e['key']}" for e in yaml.safe_load(f)["entries"] if e["method"] in ("dns", "baseline")}
    assert own <= cited, sorted(own - cited)
