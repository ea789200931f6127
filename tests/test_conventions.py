"""Conventions a Hydra user expects: ``debug=default``, the ``paths`` group, ``trainer.num_threads``."""
import glob
import os

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from conftest import CONF
from engine.config import validate
from engine.provenance import config_hash, is_computational
from engine.runner import run

TINY = ["data=synthetic", "data.train_size=512", "data.test_size=300", "data.in_channels=1", "data.image_size=8",
        "data.mean=[0.5]", "data.std=[0.25]", "model=lenet300_100", "trainer.batch_size=16", "trainer.device=cpu",
        "trainer.progress=false"]


def _compose(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_debug_runs_a_few_steps_without_logger_and_keeps_rows_out_of_results_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path / "tracked"))     # what the reproduce scripts set
    cfg = _compose(["debug=default", f"paths.output_dir={tmp_path}/out"] + TINY)
    validate(cfg)
    assert cfg.logger.name == "none" and cfg.fidelity == "smoke" and cfg.data.train_subset == 256
    assert cfg.paths.results_dir == f"{tmp_path}/out/results"
    metrics = run(cfg)
    assert metrics["steps"] == 5 and metrics["epochs"] == 1
    assert glob.glob(f"{tmp_path}/out/results/*.csv") and not os.path.exists(tmp_path / "tracked")
    GlobalHydra.instance().clear()


def test_debug_is_not_the_experiment_files_config():
    """An experiment run with debug=default has another config hash (its row is never judged)."""
    plain = config_hash(_compose(["experiment=backbones/mnist_lenet5"]))
    assert config_hash(_compose(["experiment=backbones/mnist_lenet5", "debug=default"])) != plain
    GlobalHydra.instance().clear()


def test_paths_group_is_not_hashed(tmp_path):
    a = _compose(["experiment=backbones/mnist_lenet5"])
    b = _compose(["experiment=backbones/mnist_lenet5", "paths=default", f"paths.output_dir={tmp_path}",
                  f"paths.data_root={tmp_path}/data"])
    assert config_hash(a) == config_hash(b)
    assert b.data.root == f"{tmp_path}/data"
    GlobalHydra.instance().clear()


def test_num_threads_is_set_at_run_start_and_not_hashed(tmp_path):
    before = torch.get_num_threads()
    short = TINY + ["trainer.max_steps=1", "trainer.epochs=1", "logger=none", "trainer.limit_eval_batches=1",
                    f"paths.output_dir={tmp_path}", f"paths.results_dir={tmp_path}/results"]
    cfg = _compose(short + ["trainer.num_threads=1"])
    try:
        torch.set_num_threads(2)
        run(cfg)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
        GlobalHydra.instance().clear()
    assert config_hash(cfg) == config_hash(_compose(short))
    GlobalHydra.instance().clear()


def test_latency_measurement_is_not_hashed_and_keeps_a_row_judged():
    """``trainer.latency`` measures the trained model after training: turning it on (as the reproduce grids do)
    leaves the config hash, and so the verdicts of rows made without it, unchanged."""
    plain = _compose(["experiment=binary/cifar10_jpeg_resnet20_pa"])
    measured = _compose(["experiment=binary/cifar10_jpeg_resnet20_pa", "trainer.latency=true"])
    assert measured.trainer.latency is True
    assert config_hash(measured) == config_hash(plain)
    assert not is_computational("trainer.latency")
    assert is_computational("trainer.epochs")
    GlobalHydra.instance().clear()
