"""End-to-end: TT-ADMM, direct TT-SVD and CC through engine.runner.run on synthetic data, two steps per stage."""
import pytest

from engine.results import read_rows
from engine.runner import run

pytestmark = [pytest.mark.smoke, pytest.mark.slow]


@pytest.mark.parametrize("experiment,paper", [("tt_admm/cifar10_jpeg_resnet20_tt_admm_reduced", "tt_admm"),
                                              ("tt_admm/cifar10_jpeg_resnet20_tt_svd_reduced", "tt_admm"),
                                              ("cc/cifar10_jpeg_resnet20_joint_reduced", "cc")])
def test_reduced_cell_runs_on_synthetic_data(experiment, paper, compose, tmp_path):
    cfg = compose([f"experiment={experiment}", "data=synthetic", "data.train_subset=null", "data.test_subset=null",
                   "model.pretrained=false", "trainer.max_steps=2"])
    metrics = run(cfg)
    row = read_rows(str(tmp_path / "results" / f"{paper}.csv"))[-1]
    extra = row["extra"]
    assert int(row["macs"]) == metrics["macs"]
    if paper == "tt_admm":
        assert extra["decomposed"] is True
        assert extra["macs_from_ranks"] == metrics["macs"]
        assert extra["compression_ratio"] >= 2.3
    else:
        assert extra["removed_macs"] >= 0.5 * extra["dense_macs"]
        assert metrics["macs"] == extra["dense_macs"] - extra["removed_macs"]
