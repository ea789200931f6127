"""Run loggers: W&B (offline by default), a local CSV of curves, or none. Only rank 0 logs."""
from __future__ import annotations

import csv
import io
import os

from omegaconf import OmegaConf


class NullLogger:
    def log(self, metrics: dict, step: int) -> None:
        pass

    def summary(self, metrics: dict) -> None:
        pass

    def rewind(self, step: int) -> None:
        """Training resumes from a checkpoint taken at ``step``: forget points logged after it (W&B does so
        itself: it drops steps it has already seen)."""

    def finish(self) -> None:
        pass


class CsvLogger(NullLogger):
    """Long-format ``metrics.csv`` (step, key, value) in the run directory; appends across resumes.

    A resumed run repeats what came after its last checkpoint: ``rewind(step)`` drops the points logged after
    that step, so re-run epochs are not in the file twice. A partial last line left by a kill and an earlier
    summary (written again at the end) are dropped when the file is opened."""

    HEADER = ["step", "key", "value"]

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, "metrics.csv")
        os.makedirs(run_dir, exist_ok=True)
        self._keep(lambda step: step >= 0)
        self.file = open(self.path, "a", newline="")
        self.writer = csv.writer(self.file)

    def _keep(self, wanted) -> None:
        """Rewrite the file with the complete rows whose step satisfies ``wanted``."""
        rows = []
        if os.path.exists(self.path):
            with open(self.path, newline="") as f:
                text = f.read()
            complete = text[:text.rfind("\n") + 1]
            rows = [r for r in list(csv.reader(io.StringIO(complete, newline="")))[1:]
                    if len(r) == 3 and wanted(int(r[0]))]
        tmp = f"{self.path}.tmp{os.getpid()}"
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([self.HEADER] + rows)
        os.replace(tmp, self.path)

    def rewind(self, step: int) -> None:
        self.file.close()
        self._keep(lambda s: 0 <= s <= step)
        self.file = open(self.path, "a", newline="")
        self.writer = csv.writer(self.file)

    def log(self, metrics: dict, step: int) -> None:
        for k, v in metrics.items():
            self.writer.writerow([step, k, v])
        self.file.flush()

    def summary(self, metrics: dict) -> None:
        self.log({f"summary/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}, step=-1)

    def finish(self) -> None:
        self.file.close()


class WandbLogger(NullLogger):
    """One W&B run: grouped by paper (or run name), tagged ``paper:``, ``method:``, ``model:``, ``data:`` and
    ``fidelity:`` (the recorded one) besides ``logger.tags``; the resolved config as its config."""

    def __init__(self, cfg, run_cfg, run_dir: str, run_id: str, group: str, name: str, tags: tuple[str, ...] = ()):
        import wandb

        os.makedirs(cfg.dir, exist_ok=True)
        self.run = wandb.init(project=cfg.project, entity=cfg.get("entity"), group=group, name=name,
                              id=run_id, resume="allow", dir=cfg.dir, mode=cfg.mode,
                              tags=list(cfg.get("tags") or []) + list(tags),
                              config=OmegaConf.to_container(run_cfg, resolve=True), reinit="finish_previous")
        self.run.define_metric("epoch")
        self.run.define_metric("eval/*", step_metric="epoch")

    def log(self, metrics: dict, step: int) -> None:
        self.run.log(metrics, step=step)

    def summary(self, metrics: dict) -> None:
        self.run.summary.update(metrics)

    def finish(self) -> None:
        self.run.finish()


LOGGERS = ("wandb", "csv", "none")


def run_tags(run_cfg, fidelity: str) -> tuple[str, ...]:
    """``paper:<p>`` (when set), ``method:``, ``model:``, ``data:`` and ``fidelity:`` tags of a run."""
    paper = (f"paper:{run_cfg.paper}",) if run_cfg.get("paper") else ()
    return paper + (f"method:{run_cfg.method.name}", f"model:{run_cfg.model.name}", f"data:{run_cfg.data.name}",
                    f"fidelity:{fidelity}")


def build_logger(cfg, run_cfg, run_dir: str, run_id: str, group: str, name: str, is_main: bool,
                 tags: tuple[str, ...] = ()):
    if not is_main or cfg.name == "none":
        return NullLogger()
    if cfg.name == "csv":
        return CsvLogger(run_dir)
    if cfg.name == "wandb":
        return WandbLogger(cfg, run_cfg, run_dir, run_id, group, name, tags)
    raise ValueError(f"logger={cfg.name!r} is not one of {', '.join(LOGGERS)}")
