"""Train any data x model x method composition: ``python train.py method=dns model=lenet5 data=mnist``.

Thin Hydra wrapper around ``engine.runner.run``; returns top-1 (a detector: mAP@0.5) so sweepers can optimise it.
A bad input ends with one line ``error: <message>`` and exit code 2 (``HYDRA_FULL_ERROR=1`` shows the traceback).
"""
import hydra
from omegaconf import DictConfig

from engine.errors import exits_on_bad_input
from engine.evaluation import primary_metric
from engine.runner import run


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
@exits_on_bad_input
def main(cfg: DictConfig) -> float:
    metrics = run(cfg)
    return float(metrics[primary_metric(metrics)])


if __name__ == "__main__":
    main()
