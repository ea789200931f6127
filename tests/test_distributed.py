"""DDP under torchrun with 2 CPU processes (gloo) equals one process at the same global batch."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from engine import checkpoint

ARGS = ["data=synthetic", "data.train_size=256", "data.test_size=64", "data.in_channels=1", "data.image_size=28",
        "data.mean=[0.5]", "data.std=[0.25]", "model=lenet5", "trainer.batch_size=32", "trainer.epochs=2",
        "trainer.optimizer.weight_decay=0", "trainer.optimizer.lr=0.01", "logger=none", "trainer.progress=false", "trainer.device=cpu"]


def _run(tmp_path, tag, launcher):
    out = tmp_path / tag
    cmd = launcher + ["train.py"] + ARGS + [f"paths.output_dir={out}", f"paths.results_dir={out}/results"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, cwd=ROOT, check=True, env=env, capture_output=True, timeout=600)
    [final] = [os.path.join(d, "final.pt") for d, _, files in os.walk(out) if "final.pt" in files]
    return checkpoint.load(final)


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path):
    single = _run(tmp_path, "single", [sys.executable])
    ddp = _run(tmp_path, "ddp", [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                                "--master_port=29533"])
    # same samples per step, gradients averaged across ranks: equal up to float summation order
    for key, value in single["model"].items():
        diff = (value - ddp["model"][key]).abs().max().item()
        assert diff < 1e-4 * max(1.0, value.abs().max().item()), f"{key}: max |single - ddp| = {diff}"
    assert ddp["metrics"]["steps"] == single["metrics"]["steps"] == 16
    assert abs(ddp["metrics"]["top1"] - single["metrics"]["top1"]) < 1e-6
