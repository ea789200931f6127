"""Train any data x model x method composition: ``python train.py method=dns model=lenet5 data=mnist``.

Thin Hydra wrapper around ``engine.runner.run``; returns top-1 so sweepers can optimise it.
"""
import hydra
from omegaconf import DictConfig

from engine.runner import run


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    return float(run(cfg)["top1"])


if __name__ == "__main__":
    main()
