"""End-to-end: TT-ADMM, direct TT-SVD and CC through engine.runner.run on synthetic data, two steps per stage."""
import os

import pytest
from hydra import compose, initialize_config_dir

from engine.results import read_rows
from engine.runner import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = [pytest.mark.smoke, pytest.mark.slow]


@pytest.mark.parametrize("experiment,paper", [("tt_admm/cifar10_jpeg_resnet20_tt_admm_reduced", "tt_admm"),
                                              ("tt_admm/cifar10_jpeg_resnet20_tt_svd_reduced", "tt_admm"),
                                              ("cc/cifar10_jpeg_resnet20_joint_reduced", "cc")])
def test_reduced_cell_runs_on_synthetic_data(experiment, paper, tmp_path):
    with initialize_config_dir(config_dir=os.path.join(ROOT, "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            f"experiment={experiment}", "data=synthetic", "data.train_subset=null", "data.test_subset=null",
            "model.pretrained=false", "logger=none", "trainer.max_steps=2", "trainer.progress=false",
            "trainer.device=cpu", f"paths.output_dir={tmp_path}/out", f"paths.results_dir={tmp_path}/runs"])
    metrics = run(cfg)
    row = read_rows(str(tmp_path / "runs" / f"{paper}.csv"))[-1]
    extra = row["extra"]
    assert int(row["macs"]) == metrics["macs"]
    if paper == "tt_admm":
        assert extra["decomposed"] is True
        assert extra["macs_from_ranks"] == metrics["macs"]
        assert extra["compression_ratio"] >= 2.3
    else:
        assert extra["removed_macs"] >= 0.5 * extra["dense_macs"]
        assert metrics["macs"] == extra["dense_macs"] - extra["removed_macs"]
