import csv
import glob
import os

from engine.runner import run, run_dir

TINY = ["data=synthetic", "data.train_size=128", "data.test_size=64", "model=lenet300_100", "data.in_channels=1",
        "data.image_size=8", "data.mean=[0.5]", "data.std=[0.25]", "trainer.batch_size=32", "trainer.epochs=2",
        "trainer.log_every=1"]


def test_offline_wandb_run_carries_tags_group_config_and_curves(compose, monkeypatch):
    """Read through wandb's public objects (``wandb.init``'s ``wandb.Run``: tags, group, config, summary; every
    ``Run.log`` call), not its private file format: the offline run folder only has to exist."""
    import wandb

    runs, history, summaries = [], [], []
    real_init, real_log, real_finish = wandb.init, wandb.Run.log, wandb.Run.finish

    def init(*args, **kwargs):
        runs.append(real_init(*args, **kwargs))
        return runs[-1]

    def log(self, data, *args, **kwargs):
        history.append(dict(data))
        return real_log(self, data, *args, **kwargs)

    def finish(self, *args, **kwargs):
        summaries.append(dict(self.summary))
        return real_finish(self, *args, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setattr(wandb.Run, "log", log)
    monkeypatch.setattr(wandb.Run, "finish", finish)
    # trainer.log_every left at its default (null): 2 epochs x 4 steps is short, so every step is logged
    cfg = compose([t for t in TINY if not t.startswith("trainer.log_every")] +
                  ["logger=wandb", "logger.mode=offline", "logger.dir=${paths.output_dir}", "logger.tags=[mine]",
                   "paper=backbones"])
    run(cfg)
    (wb,) = runs
    assert wb.offline and glob.glob(os.path.join(cfg.paths.output_dir, "wandb", "offline-run-*", "run-*.wandb"))
    assert set(wb.tags) == {"mine", "paper:backbones", "method:baseline", "model:lenet300_100", "data:synthetic",
                            "fidelity:adhoc"}
    assert wb.group == "backbones" and wb.config["model"]["name"] == "lenet300_100"   # the resolved config
    assert sum("train/loss" in h for h in history) == 8          # 2 epochs x 4 steps: a point per step
    assert sum("eval/top1" in h for h in history) == 2
    (summary,) = summaries
    assert "top1" in summary and summary["params"] > 0


def test_log_interval_adapts_to_the_stage_length():
    from engine.trainer import log_interval
    assert [log_interval(None, n) for n in (8, 199, 1000, 10_000, 1_000_000)] == [1, 1, 10, 50, 50]
    assert log_interval(25, 8) == 25


def test_csv_logger_writes_curves(compose):
    cfg = compose(TINY + ["logger=csv"])
    run(cfg)
    with open(os.path.join(run_dir(cfg), "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["value"] for r in rows if r["key"] == "eval/top1"].__len__() == 2
    assert any(r["key"] == "train/lr" for r in rows)
