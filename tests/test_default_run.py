"""The default composition (``python train.py``: LeNet-5 on MNIST) trains: finite, falling loss; and the trainer
defaults it replaces (lr 0.1) stop on a non-finite loss with the curve up to the stop logged."""
import csv
import glob
import math
import os

import pytest

from conftest import has_shared
from engine.runner import run
from engine.trainer import NonFiniteLossError

pytestmark = pytest.mark.skipif(not has_shared("MNIST"), reason="../shared/data/MNIST not present")


def logged_losses(output_dir: str) -> list[tuple[int, float]]:
    (path,) = glob.glob(os.path.join(output_dir, "**", "metrics.csv"), recursive=True)
    with open(path, newline="") as f:
        return [(int(r["step"]), float(r["value"])) for r in csv.DictReader(f) if r["key"] == "train/loss"]


def test_default_composition_trains_with_a_finite_falling_loss(compose):
    cfg = compose(["logger=csv", "trainer.max_steps=200", "trainer.log_every=25", "trainer.limit_eval_batches=1"])
    assert (cfg.data.name, cfg.model.name, cfg.method.name) == ("mnist", "lenet5", "baseline")
    assert (cfg.trainer.optimizer.lr, cfg.trainer.epochs) == (0.05, 4)     # conf/recipe/mnist_lenet5_baseline.yaml
    metrics = run(cfg)
    losses = [loss for _, loss in logged_losses(cfg.paths.output_dir)]
    assert len(losses) == 9 and all(math.isfinite(v) for v in losses)    # step 1, then every 25 steps to 200
    assert losses[0] > 2.0 and max(losses[-3:]) < 0.5
    assert metrics["top1"] > 90.0          # one 1000-image test batch after 200 steps


def test_trainer_default_lr_diverges_on_lenet5_and_the_curve_is_logged(compose):
    cfg = compose(["logger=csv", "trainer.optimizer.lr=0.1", "trainer.max_steps=100", "trainer.log_every=25"])
    with pytest.raises(NonFiniteLossError, match="Lower trainer.optimizer.lr"):
        run(cfg)
    logged = logged_losses(cfg.paths.output_dir)
    assert logged[0][0] == 1 and math.isfinite(logged[0][1])            # the first step
    assert not math.isfinite(logged[-1][1]) and 1 < logged[-1][0] < 25   # the value that stopped it
